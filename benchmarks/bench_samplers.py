"""TPE, NSGA-II and random search at equal CPU time: hypervolume of the front at the deciding rung.

Each (sampler, seed) pair is a real `nas search` run with the search's default ladder and proxy
(multi-fidelity rungs, ASHA), objectives acc,macs, budget 4 G, Fashion-MNIST; the seed fixes the
sampler and the data subset, so every sampler of a seed sees the same images.

**Equal CPU time.** Samplers that propose larger networks spend more CPU on the same number of
trials, so a table at equal trial counts favours the cheap ones. Every trial records the CPU time
of its training (`train_cpu_seconds`, all rungs, every thread of its worker). The benchmark takes
each run's trained trials in the order they finished and keeps them while their summed CPU time
stays within one budget common to all runs: by default the smallest total over all runs of the
table (`--cpu-budget` sets it), so every sampler is scored on what the same CPU bought it.

**Hypervolume at the deciding rung.** Only trials measured at the top rung (the rung that decides
the front) count; lower-rung accuracies are a different fidelity. In the minimisation space

    f1 = 1 - top-rung accuracy,    f2 = MACs / budget      (both in [0, 1] for feasible trials)

with the reference point (1, 1): zero accuracy at exactly the budget.

    PYTHONPATH=$PWD python3 benchmarks/bench_samplers.py [--seeds 0,1,2,3,4] [--trials 24] \
        [--keep DIR] [--cpu-budget S]

--keep DIR keeps every run directory there and reuses the runs already finished in it (a table
spread over several sessions). Prints per-run lines, then per-seed and median hypervolumes at the
equal CPU budget, each sampler's ratio to random and its wins over random.
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
from typing import Any

from results.pareto import hypervolume
from search_space.files import read_json, write_json_atomic
from search_space.units import parse_macs

SUMMARY = "bench-samplers.json"  # one run's trained trials, written when the run has finished


def run_search(sampler: str, seed: int, args: argparse.Namespace, root: Path) -> dict[str, Any]:
    """One search (or the summary of a finished one in --keep): its trained trials."""
    out = root / f"{sampler}-{seed}"
    summary = out / SUMMARY
    kept = read_json(summary, "result", missing_ok=True)  # a finished run of an earlier call
    if kept is not None:
        return kept
    cmd = [sys.executable, "-m", "nas.cli", "search", "--budget", args.budget, "--objectives", "acc,macs",
           "--sampler", sampler, "--seed", str(seed), "--trials", str(args.trials), "--data", args.data,
           "--out", str(out)]  # fmt: skip
    if out.exists():  # interrupted earlier: continue it to the same --trials
        cmd += ["--resume"]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    from results.run_dir import RunDir, counts_as_trained, frozen_status
    from results.settings import SearchSettings

    run = RunDir(out)
    top = SearchSettings.from_json(run.read_run_json()["settings"]).top_rung
    study = run.storage().load_study()
    trials = [
        {"number": t.number, "finished": t.datetime_complete.timestamp(), "rung": t.user_attrs.get("rung"),
         "val_acc": t.user_attrs.get("val_acc"), "macs": t.user_attrs.get("macs"),
         "cpu_seconds": float(t.user_attrs.get("train_cpu_seconds") or 0.0), "status": frozen_status(t)}
        for t in study.trials
        if counts_as_trained(frozen_status(t), t.user_attrs) and t.datetime_complete is not None
    ]  # fmt: skip
    if any(t["cpu_seconds"] <= 0 for t in trials):
        sys.exit(f"{out}: a trained trial has no train_cpu_seconds (a search from before they were recorded)")
    result = {"sampler": sampler, "seed": seed, "top_rung": top, "wall_seconds": wall, "trials": trials,
              "infeasible": sum(frozen_status(t) == "infeasible" for t in study.trials),
              "load_average": os.getloadavg()[0]}  # fmt: skip
    write_json_atomic(summary, result, indent=1)
    return result


def within_cpu_budget(trials: list[dict[str, Any]], cpu_budget: float) -> list[dict[str, Any]]:
    """The trials a run had finished while its summed training CPU time stayed within the budget."""
    kept, spent = [], 0.0
    for t in sorted(trials, key=lambda t: t["finished"]):
        if spent + t["cpu_seconds"] > cpu_budget:
            break
        spent += t["cpu_seconds"]
        kept.append(t)
    return kept


def deciding_rung_hypervolume(trials: list[dict[str, Any]], top: int, budget: float) -> tuple[float, int]:
    points = [(1.0 - float(t["val_acc"]), float(t["macs"]) / budget)
              for t in trials if t["rung"] == top and t["val_acc"] is not None]  # fmt: skip
    return hypervolume(points, (1.0, 1.0), ("minimize", "minimize")), len(points)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="0,1,2,3,4")
    ap.add_argument("--samplers", default="tpe,nsga2,random")
    ap.add_argument("--trials", type=int, default=24, help="trained trials per run (default 24, the search's)")
    ap.add_argument("--budget", default="4G")
    ap.add_argument("--data", default="fashion-mnist")
    ap.add_argument("--cpu-budget", type=float, help="training CPU-seconds per run (default: the smallest run total)")
    ap.add_argument("--keep", help="keep the run directories here and reuse the finished ones")
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    samplers = args.samplers.split(",")
    budget = parse_macs(args.budget)
    print(f"{' / '.join(samplers)}: {args.trials} trained trials per run, the search's default rungs and proxy, "
          f"budget {args.budget} MACs, data {args.data}, seeds {seeds}; HV at the deciding rung, reference point "
          f"(error 1, MACs = budget); load average {os.getloadavg()[0]:.2f}", flush=True)  # fmt: skip
    runs: dict[tuple[str, int], dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-samplers-") as tmp:
        root = Path(args.keep) if args.keep else Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        for seed in seeds:
            for sampler in samplers:
                run = runs[sampler, seed] = run_search(sampler, seed, args, root)
                total = sum(t["cpu_seconds"] for t in run["trials"])
                hv, n_top = deciding_rung_hypervolume(run["trials"], run["top_rung"], budget)
                print(f"seed {seed} {sampler:>6}: {len(run['trials'])} trained, {n_top} at the top rung, training "
                      f"CPU {total:.0f} s, wall {run['wall_seconds']:.0f} s, load {run['load_average']:.2f}; "
                      f"hypervolume of the whole run {hv:.4f}", flush=True)  # fmt: skip
    cpu_budget = args.cpu_budget or min(sum(t["cpu_seconds"] for t in r["trials"]) for r in runs.values())
    print(f"\nequal CPU budget: {cpu_budget:.0f} training CPU-seconds per run")
    hv: dict[str, list[float]] = {s: [] for s in samplers}
    kept: dict[str, list[int]] = {s: [] for s in samplers}
    for seed in seeds:
        for sampler in samplers:
            run = runs[sampler, seed]
            trials = within_cpu_budget(run["trials"], cpu_budget)
            value, n_top = deciding_rung_hypervolume(trials, run["top_rung"], budget)
            hv[sampler].append(value)
            kept[sampler].append(len(trials))
            print(f"seed {seed} {sampler:>6}: {len(trials)} trials within the budget, {n_top} at the top rung, "
                  f"hypervolume {value:.4f}")  # fmt: skip
    med = {k: statistics.median(v) for k, v in hv.items()}
    print("\n| sampler | " + " | ".join(f"seed {s}" for s in seeds) + " | median | vs random | ahead of random | trials |")
    print("|---" * (len(seeds) + 5) + "|")
    for sampler in samplers:
        ratio = med[sampler] / med["random"] if "random" in med and med["random"] else float("nan")
        wins = sum(a > b for a, b in zip(hv[sampler], hv.get("random", []))) if sampler != "random" else None
        print(f"| {sampler} | " + " | ".join(f"{v:.4f}" for v in hv[sampler]) + f" | {med[sampler]:.4f} | {ratio:.3f} | "
              + ("-" if wins is None else f"{wins}/{len(seeds)}")
              + f" | {min(kept[sampler])}-{max(kept[sampler])} |")  # fmt: skip


if __name__ == "__main__":
    main()
