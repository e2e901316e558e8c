"""Search engine throughput: 2 concurrent trials vs 1 on the same work, and per-trial overhead.

The same N architectures (sampled once, seeded, under the MAC budget) are trained three ways, one
CPU thread per training:

* **bare**: `train_proxy` called directly in this process, one after another;
* **engine, concurrency 1** and **engine, concurrency 2**: the real search engine (Optuna study ->
  `NasSearcher` -> Ray Tune with reused actors -> `search_trial` -> `train_proxy`, with journal
  writes and per-trial files), on a local Ray started once for both runs. The architectures are
  enqueued in the study, so both engine runs train exactly the bare run's work; ASHA is off so
  every trial trains all epochs.

Printed: the median per-trial time of each, the throughput ratio (concurrency 2 vs 1; goal >= 1.8
on 2 cores), and the engine's per-trial overhead against bare training (median of engine trial
time minus the same architecture's bare time at concurrency 1; the first trial of each run also
pays for starting its Ray worker, reported separately).

    python benchmarks/bench_search_throughput.py [--trials 24] [--epochs 1] [--budget 2G] [--wait-idle 30]

Wall-clock figures are only meaningful on an otherwise idle machine: the load average is printed,
and ``--wait-idle MIN`` waits up to MIN minutes for the CPUs to be >= 90% idle before starting.
Ray's trial workers run at nice 0 here (Ray's default is 15) so that bare and engine trainings
compete equally with anything else that does run.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from results.run_dir import RunDir
from nas.search.runner import Resources, run_tune, start_ray
from nas.search.searcher import NasSearcher, make_sampler, trial_seed
from nas.search.settings import SearchSettings
from search_space.units import format_macs, parse_macs
from search_space import SearchSpace, analytic_cost
from search_space.space import RandomChooser
from train_proxy import ProxySpec, load_data, train_proxy


def sample_work(space: SearchSpace, n: int, budget: int, seed: int) -> list[dict]:
    """Optuna parameter dicts of ``n`` distinct feasible architectures."""
    rng = random.Random(seed)
    params, seen = [], set()
    while len(params) < n:
        chooser = RandomChooser(rng)
        cfg = space.suggest(chooser)
        key = cfg.replace(name="x").to_yaml()
        if analytic_cost(cfg).macs <= budget and key not in seen:
            seen.add(key)
            params.append(dict(chooser.params))
    return params


def bare_times(space: SearchSpace, work: list[dict], s: SearchSettings) -> list[float]:
    data = load_data(s.data, s.proxy_resolution, fraction=s.data_fraction, seed=s.seed)
    times = []
    for number, p in enumerate(work):
        cfg = space.suggest(_Fixed(p))
        spec = ProxySpec(resolution=s.proxy_resolution, epochs=s.epochs, batch_size=s.batch_size,
                         data_fraction=s.data_fraction, width_multiplier=s.proxy_width,
                         seed=trial_seed(s.seed, number), threads=1)  # fmt: skip
        start = time.perf_counter()
        train_proxy(cfg, spec, data)
        times.append(time.perf_counter() - start)
    return times


_POOL_STATE: dict = {}


def _pool_init(space: SearchSpace, s: SearchSettings) -> None:
    torch.set_num_threads(1)
    _POOL_STATE["space"] = space
    _POOL_STATE["settings"] = s
    _POOL_STATE["data"] = load_data(s.data, s.proxy_resolution, fraction=s.data_fraction, seed=s.seed)


def _pool_train(item: tuple[int, dict]) -> float:
    number, p = item
    s = _POOL_STATE["settings"]
    cfg = _POOL_STATE["space"].suggest(_Fixed(p))
    spec = ProxySpec(resolution=s.proxy_resolution, epochs=s.epochs, batch_size=s.batch_size,
                     data_fraction=s.data_fraction, width_multiplier=s.proxy_width,
                     seed=trial_seed(s.seed, number), threads=1)  # fmt: skip
    start = time.perf_counter()
    train_proxy(cfg, spec, _POOL_STATE["data"])
    return time.perf_counter() - start


def bare_pair_wall(space: SearchSpace, work: list[dict], s: SearchSettings) -> tuple[float, list[float]]:
    """The machine's own ceiling: the same work in two plain processes (no Ray, no Optuna), each
    taking the next architecture when it is free. Returns (wall seconds, per-training seconds)."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    with ctx.Pool(2, initializer=_pool_init, initargs=(space, s)) as pool:
        pool.map(_pool_train, [(0, work[0])] * 2)  # warm both processes (imports, data) off the clock
        start = time.perf_counter()
        times = list(pool.imap_unordered(_pool_train, list(enumerate(work))))
        return time.perf_counter() - start, times


class _Fixed:
    """A chooser replaying recorded choices (what an enqueued Optuna trial does)."""

    def __init__(self, params: dict) -> None:
        self.params = params

    def suggest_categorical(self, name, choices):  # type: ignore[no-untyped-def]
        return self.params[name]

    def suggest_int(self, name, low, high, step=1):  # type: ignore[no-untyped-def]
        return self.params[name]


def engine_times(
    space: SearchSpace, work: list[dict], s: SearchSettings, concurrency: int, root: Path
) -> tuple[float, dict[int, float], dict[int, float]]:
    import optuna

    rd = RunDir(root / f"c{concurrency}")
    settings = s.with_overrides(concurrency=concurrency, trials=len(work))
    rd.create(settings.to_json(), "")
    storage = rd.storage().open_for_search()
    study = optuna.create_study(storage=storage, study_name="search", directions=settings.directions)
    for p in work:
        study.enqueue_trial(p)
    started: dict[int, float] = {}
    per_trial: dict[int, float] = {}
    inside: dict[int, float] = {}  # seconds train_proxy itself reported (its last epoch's "seconds")

    def listener(event: str, info: dict) -> None:
        if event == "start":
            started[info["number"]] = time.perf_counter()
        elif event == "epoch":
            inside[info["number"]] = float(info.get("seconds", 0.0))
        elif event in ("complete", "pruned", "failed") and info["number"] in started:
            per_trial[info["number"]] = time.perf_counter() - started[info["number"]]

    searcher = NasSearcher(space=space, settings=settings, run_dir=rd, storage=storage,
                           sampler=make_sampler(settings, 0), threads_per_trial=1, listener=listener)  # fmt: skip
    res = Resources(concurrency=concurrency, threads=1, gpus_per_trial=0.0, cluster_cpus=os.cpu_count() or 1,
                    cluster_gpus=0.0, nodes=1)  # fmt: skip
    t0 = time.perf_counter()
    run_tune(searcher, settings, res, rd, 0, len(work), early_stopping=False)
    wall = time.perf_counter() - t0
    failed = [t.number for t in study.trials if t.user_attrs.get("status") != "complete"]
    if failed:
        sys.exit(f"trials did not complete: {failed}")
    return wall, per_trial, inside


def cpu_idle_fraction(seconds: float = 5.0) -> float:
    def snapshot() -> tuple[int, int]:
        with open("/proc/stat") as fh:
            values = [int(v) for v in fh.readline().split()[1:]]
        return values[3] + values[4], sum(values)  # idle + iowait, total

    idle0, total0 = snapshot()
    time.sleep(seconds)
    idle1, total1 = snapshot()
    return (idle1 - idle0) / max(1, total1 - total0)


def wait_idle(minutes: float) -> float:
    deadline = time.monotonic() + minutes * 60
    idle = cpu_idle_fraction()
    while idle < 0.9 and time.monotonic() < deadline:
        idle = cpu_idle_fraction()
    return idle


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=24, help="architectures (default 24: enough that the last trial's tail matters little)")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--budget", default="2G", help="MAC budget the architectures are sampled under")
    ap.add_argument("--proxy-width", type=float, default=0.5)
    ap.add_argument("--data-fraction", type=float, default=0.25)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--wait-idle", type=float, default=0.0, metavar="MIN", help="wait for an idle machine (minutes)")
    args = ap.parse_args()
    os.environ.setdefault("RAY_worker_niceness", "0")
    idle = wait_idle(args.wait_idle) if args.wait_idle > 0 else cpu_idle_fraction(1.0)
    torch.set_num_threads(1)
    import warnings

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    space = SearchSpace.default()
    s = SearchSettings(budget_macs=parse_macs(args.budget), epochs=args.epochs, proxy_width=args.proxy_width,
                       data_fraction=args.data_fraction, seed=args.seed, max_failures=0)  # fmt: skip
    work = sample_work(space, args.trials, s.budget_macs, args.seed)
    macs = [analytic_cost(space.suggest(_Fixed(p))).macs for p in work]
    print(f"work: {args.trials} architectures ({', '.join(format_macs(m).replace(' ', '') for m in macs)} MACs at 224 px), "
          f"{args.epochs} epoch(s) at {s.proxy_resolution} px, width x{s.proxy_width:g}, data fraction {s.data_fraction:g}, "
          f"1 thread per training; {os.cpu_count()} CPUs, {idle:.0%} idle at start, load average {os.getloadavg()[0]:.2f}")  # fmt: skip

    bare = bare_times(space, work, s)
    print(f"bare train_proxy: total {sum(bare):.1f}s, median per trial {statistics.median(bare):.2f}s")
    pair_wall, pair_times = bare_pair_wall(space, work, s)
    print(f"bare, 2 plain processes side by side: total {pair_wall:.1f}s, median per trial "
          f"{statistics.median(pair_times):.2f}s; the machine's own ceiling {sum(bare) / pair_wall:.2f}x, "
          f"per-trial time side by side vs alone {statistics.median(pair_times) / statistics.median(bare):.3f}x")  # fmt: skip

    t0 = time.perf_counter()
    start_ray(None)
    print(f"ray start: {time.perf_counter() - t0:.1f}s (once per search)")
    try:
        with tempfile.TemporaryDirectory(prefix="bench-search-") as tmp:
            wall1, per1, inside1 = engine_times(space, work, s, 1, Path(tmp))
            wall2, per2, _ = engine_times(space, work, s, 2, Path(tmp))
    finally:
        import ray

        ray.shutdown()
    numbers = sorted(per1)
    overhead = [per1[n] - bare[n] for n in numbers]
    print(f"engine, concurrency 1: total {wall1:.1f}s, median per trial {statistics.median(per1.values()):.2f}s, "
          f"throughput {len(work) / wall1 * 60:.2f} trials/min")  # fmt: skip
    print(f"engine, concurrency 2: total {wall2:.1f}s, median per trial {statistics.median(per2.values()):.2f}s, "
          f"throughput {len(work) / wall2 * 60:.2f} trials/min")  # fmt: skip
    print(f"throughput ratio, 2 concurrent vs 1: {wall1 / wall2:.2f}x (goal >= 1.8x on 2 cores); "
          f"per-trial time side by side vs alone: {statistics.median(per2.values()) / statistics.median(per1.values()):.3f}x; "
          f"load average at the end {os.getloadavg()[0]:.2f}")  # fmt: skip
    print(f"engine's share of the machine's ceiling: {(wall1 / wall2) / (sum(bare) / pair_wall):.3f} "
          f"(engine ratio {wall1 / wall2:.2f}x / plain-process ratio {sum(bare) / pair_wall:.2f}x)")  # fmt: skip
    print(f"per-trial engine overhead vs bare (concurrency 1): median {statistics.median(overhead[1:]):.2f}s "
          f"({statistics.median(per1[n] / bare[n] for n in numbers[1:]):.3f}x bare), first trial (worker start) "
          f"{overhead[0]:.2f}s; whole run {wall1 / sum(bare):.3f}x bare")  # fmt: skip
    outside = [per1[n] - inside1[n] for n in numbers[1:]]
    print(f"engine time outside train_proxy per trial (scheduling, actor reuse, data cache, Optuna ask/tell, "
          f"journal and trial files): median {statistics.median(outside):.2f}s")  # fmt: skip


if __name__ == "__main__":
    main()
