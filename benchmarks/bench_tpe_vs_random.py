"""TPE against random search at equal trial budgets: hypervolume of accuracy vs MACs on digits.

Each (sampler, seed) pair is a real `nas search` run (same budget, trials, proxy and seed; the
seed also fixes the data subset), objectives acc,macs, ASHA on. The hypervolume is computed over
the fully trained ("complete") trials in the minimisation space

    f1 = 1 - proxy accuracy,    f2 = MACs / budget        (both in [0, 1] for feasible trials)

with the reference point (1, 1): zero accuracy at exactly the budget. It is the area of that unit
box dominated by the run's Pareto front, so 1.0 would be a perfect classifier at zero MACs;
pruned trials (low-fidelity accuracy) and infeasible ones are excluded, as on the front itself.

    python benchmarks/bench_tpe_vs_random.py [--seeds 0,1,2] [--trials 16] [--budget 4G]

Prints per-seed and median hypervolumes and the TPE / random ratio.
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

from nas.units import parse_macs
from results.pareto import hypervolume


def run_search(sampler: str, seed: int, args: argparse.Namespace, root: Path) -> tuple[float, int, float]:
    out = root / f"{sampler}-{seed}"
    cmd = [sys.executable, "-m", "nas.cli", "search", "--budget", args.budget, "--objectives", "acc,macs",
           "--sampler", sampler, "--seed", str(seed), "--trials", str(args.trials), "--epochs", str(args.epochs),
           "--proxy-width", str(args.proxy_width), "--data-fraction", str(args.data_fraction), "--out", str(out)]  # fmt: skip
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    study = optuna.load_study(study_name="search", storage=JournalStorage(JournalFileBackend(str(out / "study.journal"))))
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
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--trials", type=int, default=16)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--budget", default="4G")
    ap.add_argument("--proxy-width", type=float, default=0.25)
    ap.add_argument("--data-fraction", type=float, default=0.25)
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    print(f"TPE vs random: {args.trials} trained trials each, budget {args.budget} MACs, {args.epochs} epochs, "
          f"width x{args.proxy_width:g}, data fraction {args.data_fraction:g}, seeds {seeds}; "
          f"HV reference point (error 1, MACs = budget); load average {os.getloadavg()[0]:.2f}")  # fmt: skip
    hv: dict[str, list[float]] = {"tpe": [], "random": []}
    with tempfile.TemporaryDirectory(prefix="bench-tpe-") as tmp:
        for seed in seeds:
            for sampler in ("tpe", "random"):
                value, infeasible, wall = run_search(sampler, seed, args, Path(tmp))
                hv[sampler].append(value)
                print(f"seed {seed} {sampler:>6}: hypervolume {value:.4f}  ({infeasible} infeasible never trained, {wall:.0f}s)",
                      flush=True)  # fmt: skip
    med = {k: statistics.median(v) for k, v in hv.items()}
    wins = sum(t > r for t, r in zip(hv["tpe"], hv["random"]))
    print(f"median hypervolume: tpe {med['tpe']:.4f}, random {med['random']:.4f}, ratio {med['tpe'] / med['random']:.3f}; "
          f"TPE ahead on {wins}/{len(seeds)} seeds")  # fmt: skip


if __name__ == "__main__":
    main()
