"""`nas compare RUN_A RUN_B`: two Pareto fronts side by side and their hypervolume ratio."""

from __future__ import annotations

import argparse
import itertools

from results.compare import Comparison, compare_runs
from results.pareto import normalized_hypervolume
from results.run import LABELS, TrialRecord
from search_space.errors import UserError
from search_space.text import printable

from ..cli_utils import print_json
from search_space.units import format_macs

REFERENCE_RULE = (
    "common to both runs: accuracy 0, the larger MAC budget; for params/latency the larger limit, or 1.1 x the "
    "largest value seen in either run"
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compare",
        help="compare the Pareto fronts of two runs",
        description="Compare two search runs: their Pareto fronts (complete, feasible trials) side by side, the "
        "hypervolume of each against one reference point derived from both runs (accuracy 0, the larger MAC "
        "budget; for params/latency the larger limit or 1.1 x the largest value seen), the ratio HV(A)/HV(B), "
        "and set coverage (the share of one front that the other dominates or equals). Runs whose proxies differ "
        "(data, epochs, resolution, width, data fraction, batch, rungs) are compared with one line saying so.",
    )
    p.add_argument("run_a", metavar="RUN_A")
    p.add_argument("run_b", metavar="RUN_B")
    p.add_argument(
        "--objectives",
        default="acc,macs",
        help="comma-separated: acc plus any of macs, params, latency, latency_measured, latency_predicted "
        "(default acc,macs)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def parse_objectives(text: str) -> tuple[str, ...]:
    parts = tuple(p.strip() for p in text.split(",") if p.strip())
    for p in parts:
        if p not in LABELS:
            raise UserError(f"unknown objective '{p}' in --objectives (choose from {', '.join(LABELS)})")
    if len(parts) < 2 or len(set(parts)) != len(parts):
        raise UserError(f"--objectives '{text}' needs at least two distinct objectives, e.g. acc,macs")
    return parts


def _fmt(objective: str, value: float | None) -> str:
    if value is None:
        return "-"
    if objective == "acc":
        return f"{value:.4f}"
    if objective == "macs":
        return format_macs(value)
    if objective == "params":
        return f"{value / 1e6:.2f} M"
    return f"{value:.2f} ms"


def _row(t: TrialRecord | None, objectives: tuple[str, ...]) -> str:
    if t is None:
        return " " * (7 + 12 * len(objectives))
    return f"{t.number:>6} " + "".join(f"{_fmt(o, t.metric(o)):>12}" for o in objectives)


def print_comparison(c: Comparison) -> None:
    objs = c.objectives
    if c.notice:  # the runs' proxies differ: one line, before the numbers it qualifies
        print(printable(c.notice))
    width = 7 + 12 * len(objs)
    # the run paths are the user's names: printed escaped (a newline or terminal escape in a directory name)
    print(printable(f"A: {c.run_a.path}  ({c.run_a.display_status}, {len(c.front_a)} on the front)"))
    print(printable(f"B: {c.run_b.path}  ({c.run_b.display_status}, {len(c.front_b)} on the front)"))
    head = f"{'trial':>6} " + "".join(f"{o:>12}" for o in objs)
    print(f"{'A':<{width}} | B")
    print(f"{head:<{width}} | {head}")
    for a, b in itertools.zip_longest(c.front_a, c.front_b):
        print(f"{_row(a, objs):<{width}} | {_row(b, objs)}")
    ref = ", ".join(f"{o} {_fmt(o, v)}" for o, v in zip(objs, c.reference))
    print(f"reference point: {ref}  ({REFERENCE_RULE})")
    na = normalized_hypervolume(c.hv_a, c.reference, objs)
    nb = normalized_hypervolume(c.hv_b, c.reference, objs)
    print(f"hypervolume (normalised to the reference box): A {na:.4f}   B {nb:.4f}")
    ratio = f"{c.ratio:.4f}" if c.ratio is not None else "undefined (B's front is empty)"
    print(f"hypervolume ratio A/B: {ratio}")
    cov = lambda v: f"{100 * v:.0f}%" if v is not None else "-"  # noqa: E731
    print(f"coverage: A's front dominates or equals {cov(c.coverage_a_over_b)} of B's; "
          f"B's front {cov(c.coverage_b_over_a)} of A's")  # fmt: skip


def run(args: argparse.Namespace) -> int:
    comparison = compare_runs(args.run_a, args.run_b, parse_objectives(args.objectives))
    if args.json:
        print_json(comparison.to_dict())
    else:
        print_comparison(comparison)
    return 0
