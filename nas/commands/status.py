"""`nas status`: counts of complete, pruned, failed, running, infeasible trials and the best trials."""

from __future__ import annotations

import argparse
from pathlib import Path

from search_space.text import printable

from ..cli_utils import positive_int, print_json
from search_space.units import format_count, format_macs


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("status", help="progress and best trials of a search run directory")
    p.add_argument("run_dir", metavar="RUN_DIR", type=Path, help="a directory written by nas search")
    p.add_argument("--top", type=positive_int, default=5, help="best trials to list (default 5)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..search.status import status_report

    report = status_report(args.run_dir, args.top)
    if args.json:
        print_json(report)
        return 0
    budget = format_macs(report["budget_macs"]) if report.get("budget_macs") else "-"
    # the run directory, the study and its storage are the user's names: printed escaped
    print(printable(f"{report['run_dir']}: {report['status']}  (budget {budget} MACs, sampler {report['sampler']}, "
                    f"objectives {','.join(report['objectives'] or [])})"))  # fmt: skip
    print(f"trained {report['trained']}/{report['trials_requested']}: complete {report['complete']}, "
          f"pruned {report['pruned']}, failed {report['failed']}"
          + (f" ({report['interrupted']} interrupted by a killed search, re-queued)" if report["interrupted"] else "")
          + f", running {report['running']}; "
          f"infeasible {report['infeasible']} (never trained), duplicate {report['duplicate']}; "
          f"total {report['total']}")  # fmt: skip
    if report["best"]:
        # accuracies are compared within a rung: a higher rung's trials are listed first
        print(f"{'trial':>6} {'proxy acc':>9} {'fidelity':<32} {'MACs':>10} {'params':>10}  blocks")
        for b in report["best"]:
            print(f"{b['number']:>6} {b['val_acc']:>9.4f} {b['fidelity']:<32} {format_macs(b['macs']):>10} "
                  f"{format_count(b['params']):>10}  {','.join(b['blocks'])}")  # fmt: skip
    if report.get("storage"):
        print(printable(f"study {report['study_name']} in {report['storage']}"))
    if report["pareto"]:
        print(f"pareto front: trials {', '.join(map(str, report['pareto']))}")
    return 0
