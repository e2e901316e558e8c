"""`nas sample`: write N random valid model configs from a search space (seeded)."""

from __future__ import annotations

import argparse
import random
from pathlib import Path

from search_space.text import printable
from search_space import SearchSpace, analytic_cost
from search_space.files import make_output_dir

from results.run_dir import refuse_run_records

from ..cli_utils import old_spellings, positive_int
from search_space.units import format_count, format_macs


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sample", help="write random valid configs from the search space")
    p.add_argument("--trials", type=positive_int, default=8, help="number of configs (default 8)")
    p.add_argument("--seed", type=int, default=0, help="random seed; same seed, same files")
    p.add_argument("--out", required=True, type=Path, help="directory to write sample_NNN.yaml into")
    p.add_argument("--space", type=Path, help="search space YAML (default: the packaged space)")
    old_spellings(p, {"--n": "--trials"})
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    space = SearchSpace.load(args.space) if args.space else SearchSpace.default()
    refuse_run_records(args.out, "--out")
    make_output_dir(args.out, flag="--out")
    rng = random.Random(args.seed)
    for i in range(args.trials):
        cfg = space.sample(rng).replace(name=f"sample_{i:03d}")
        path = args.out / f"{cfg.name}.yaml"
        cfg.save(path)
        cost = analytic_cost(cfg)
        blocks = ",".join(s.block for s in cfg.stages)
        print(f"{printable(path)}  {blocks:<24} params {format_count(cost.params):>10}  MACs {format_macs(cost.macs):>10}")
    return 0
