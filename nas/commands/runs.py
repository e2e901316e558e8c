"""`nas runs [DIR]`: the search runs under a directory, with status, progress, best accuracy, budget."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from results.run import Run, is_run_dir, load_run
from search_space.errors import UserError
from search_space.text import printable

from ..cli_utils import print_json
from search_space.units import format_count, format_macs


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "runs",
        help="list search runs",
        description="List the search runs (directories written by nas search) under DIR: status, trials "
        "trained/requested (as nas status counts them: complete + pruned + failed, less trials interrupted by a "
        "killed search and architectures that never reached training), best proxy accuracy among "
        "complete feasible trials, and the MAC budget (FLOPs = multiply-accumulates). Other "
        "subdirectories are skipped.",
    )
    p.add_argument("dir", nargs="?", default="runs", metavar="DIR", help="directory holding runs (default: runs/)")
    p.add_argument("--json", action="store_true", help="print one JSON list")
    p.set_defaults(func=run)


def summarize(run: Run) -> dict[str, Any]:
    counts = run.trial_counts()  # the counts of `nas status` (one rule: results.run_dir.count_trials)
    best = run.best()
    s = run.settings
    return {
        "run": run.name,
        "path": str(run.path),
        "status": run.display_status,
        "trials": s.trials,
        **counts,
        "best_acc": best.val_acc if best else None,
        "best_fidelity": best.fidelity.describe() if best else None,  # which rung that accuracy is from
        "best_trial": best.number if best else None,
        "best_macs": best.macs if best else None,
        "budget_macs": s.budget_macs,
        "max_params": s.max_params,
        "latency_ms": s.latency_ms,
        "objectives": list(s.objectives),
        "sampler": s.sampler,
        "updated": run.updated,
    }


def find_runs(folder: Path) -> list[dict[str, Any]]:
    if not folder.exists():
        raise UserError(f"{folder}: no such directory")
    if not folder.is_dir():
        raise UserError(f"{folder}: not a directory")
    candidates = [folder] if is_run_dir(folder) else sorted(p for p in folder.iterdir() if is_run_dir(p))
    rows = []
    for path in candidates:
        try:
            rows.append(summarize(load_run(path)))
        except UserError as exc:  # a damaged run is listed, not fatal to the listing
            rows.append({"run": path.name, "path": str(path), "status": "unreadable", "error": str(exc)})
    return rows


def run(args: argparse.Namespace) -> int:
    rows = find_runs(Path(args.dir))
    if args.json:
        print_json(rows)
        return 0
    if not rows:
        print(printable(f"no runs under {args.dir}"))
        return 0
    header = (
        f"{'run':<28} {'status':<12} {'trials':>9} {'best acc':>9} {'(trial)':>7} {'at rung':>7} {'budget':>11} {'limits':<18} "
        "objectives"
    )
    print(header)
    for r in rows:
        name = printable(r["run"])  # a directory name may hold a newline (a forged row) or terminal escapes
        if r["status"] == "unreadable":
            print(printable(f"{name:<28} {'unreadable':<12} {r['error']}"))
            continue
        total = r["trials"] if r["trials"] is not None else "?"
        best = f"{r['best_acc']:.4f}" if r["best_acc"] is not None else "-"
        trial = str(r["best_trial"]) if r["best_trial"] is not None else ""
        rung = (r.get("best_fidelity") or "-").split(" (")[0].removeprefix("rung ")
        budget = format_macs(r["budget_macs"]) if r["budget_macs"] else "-"
        limits = []
        if r["max_params"]:
            limits.append(f"params<={format_count(r['max_params']).replace(' ', '')}")
        if r["latency_ms"]:
            limits.append(f"lat<={r['latency_ms']:g}ms")
        print(printable(
            f"{name[:28]:<28} {r['status']:<12} {str(r['trained']) + '/' + str(total):>9} {best:>9} {trial:>7} {rung:>7} "
            f"{budget:>11} {' '.join(limits) or '-':<18} {','.join(r['objectives'])}"
        ))  # fmt: skip
    return 0
