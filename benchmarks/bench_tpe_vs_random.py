"""TPE and NSGA-II against random search at equal trial budgets: hypervolume of accuracy vs MACs.

Each (sampler, seed) pair is a real `nas search` run (same budget, trials, proxy, data and seed;
the seed also fixes the data subset), objectives acc,macs, ASHA on. The proxy is the search's
default unless --epochs / --proxy-width / --data-fraction are given; the data is Fashion-MNIST
unless --data says otherwise. The hypervolume is computed over
the fully trained ("complete") trials in the minimisation space

    f1 = 1 - proxy accuracy,    f2 = MACs / budget        (both in [0, 1] for feasible trials)

with the reference point (1, 1): zero accuracy at exactly the budget. It is the area of that unit
box dominated by the run's Pareto front, so 1.0 would be a perfect classifier at zero MACs;
pruned trials (low-fidelity accuracy) and infeasible ones are excluded, as on the front itself.

    PYTHONPATH=$PWD python3 benchmarks/bench_tpe_vs_random.py [--seeds 0,1,2,3,4] [--trials 12] [--budget 4G]

Prints per-seed and median hypervolumes, each sampler's ratio to random and its wins over random.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from search_space.units import parse_macs
from results.pareto import hypervolume


def run_search(sampler: str, seed: int, args: argparse.Namespace, root: Path) -> tuple[float, int, float]:
    out = root / f"{sampler}-{seed}"
    cmd = [sys.executable, "-m", "nas.cli", "search", "--budget", args.budget, "--objectives", "acc,macs",
           "--sampler", sampler, "--seed", str(seed), "--trials", str(args.trials), "--data", args.data,
           "--out", str(out)]  # fmt: skip
    for flag in ("epochs", "proxy_width", "data_fraction"):
        if getattr(args, flag) is not None:
            cmd += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    from results.run_dir import RunDir

    study = RunDir(out).storage().load_study()
    budget = parse_macs(args.budget)
    points = [
        (1.0 - float(t.user_attrs["val_acc"]), float(t.user_attrs["macs"]) / budget)
        for t in study.trials
        if t.user_attrs.get("status") == "complete"
    ]
    infeasible = sum(t.user_attrs.get("status") == "infeasible" for t in study.trials)
    return hypervolume(points, (1.0, 1.0), ("minimize", "minimize")), infeasible, wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="0,1,2,3,4")
    ap.add_argument("--samplers", default="tpe,nsga2,random")
    ap.add_argument("--trials", type=int, default=12)
    ap.add_argument("--budget", default="4G")
    ap.add_argument("--data", default="fashion-mnist")
    ap.add_argument("--epochs", type=int, help="proxy epochs (default: the search's)")
    ap.add_argument("--proxy-width", type=float, help="proxy width multiplier (default: the search's)")
    ap.add_argument("--data-fraction", type=float, help="proxy data fraction (default: the search's)")
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    samplers = args.samplers.split(",")
    proxy = ", ".join(f"{k} {getattr(args, k)}" for k in ("epochs", "proxy_width", "data_fraction")
                      if getattr(args, k) is not None) or "the search's default proxy"  # fmt: skip
    print(f"{' / '.join(samplers)}: {args.trials} trained trials each, budget {args.budget} MACs, data {args.data}, "
          f"{proxy}, seeds {seeds}; HV reference point (error 1, MACs = budget); "
          f"load average {os.getloadavg()[0]:.2f}", flush=True)  # fmt: skip
    hv: dict[str, list[float]] = {s: [] for s in samplers}
    with tempfile.TemporaryDirectory(prefix="bench-tpe-") as tmp:
        for seed in seeds:
            for sampler in samplers:
                value, infeasible, wall = run_search(sampler, seed, args, Path(tmp))
                hv[sampler].append(value)
                print(f"seed {seed} {sampler:>6}: hypervolume {value:.4f}  ({infeasible} infeasible never trained, {wall:.0f}s)",
                      flush=True)  # fmt: skip
    med = {k: statistics.median(v) for k, v in hv.items()}
    print("| sampler | " + " | ".join(f"seed {s}" for s in seeds) + " | median | vs random | ahead of random |")
    print("|---" * (len(seeds) + 4) + "|")
    for sampler in samplers:
        ratio = med[sampler] / med["random"] if "random" in med and med["random"] else float("nan")
        wins = sum(a > b for a, b in zip(hv[sampler], hv.get("random", []))) if sampler != "random" else None
        print(f"| {sampler} | " + " | ".join(f"{v:.4f}" for v in hv[sampler]) + f" | {med[sampler]:.4f} | {ratio:.3f} | "
              + ("-" if wins is None else f"{wins}/{len(seeds)}") + " |")  # fmt: skip


if __name__ == "__main__":
    main()
