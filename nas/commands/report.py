"""`nas report RUN_DIR`: a self-contained HTML report of a search run, plus its figures as PNG."""

from __future__ import annotations

import argparse

from results.report import build_report
from search_space.text import printable


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report",
        help="HTML report of a search run",
        description="Write a self-contained HTML page (figures embedded, no network needed) and the same "
        "figures as PNG files: the Pareto front of proxy accuracy vs MACs (FLOPs = multiply-accumulates) and "
        "vs measured latency, the zoo models on the same axes, the optimisation history, parameter "
        "importances, block types along the front and a table of the front. Works on a run still in progress.",
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run directory written by nas search")
    p.add_argument("--out", metavar="DIR", help="output directory (default: RUN_DIR/report)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    report = build_report(args.run_dir, args.out)
    print(f"report: {printable(report.html_path)}")
    for path in report.pngs.values():
        print(f"figure: {printable(path)}")
    for note in report.notes:
        print(f"note: {printable(note)}")
    return 0
