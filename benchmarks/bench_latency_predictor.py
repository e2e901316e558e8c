"""Latency predictor vs measurement over random architectures of the default search space.

For N seeded random architectures (``SearchSpace.default()``), on this machine's CPU:

* predicted latency from the per-block lookup table (built in this run, in a fresh cache
  directory unless ``--cache-dir`` is given; entries are measured lazily, just before the
  architecture that first needs them is measured, so both see similar machine load);
* measured whole-network latency (`train_proxy.latency.measure_latency`, same timing method);

and prints one row per architecture, the median (and mean, max) relative error, the time one
prediction takes on a warm table against the time one measurement takes, and their ratio.

    python benchmarks/bench_latency_predictor.py                      # 20 archs, 224 px, 1 thread, batch 1
    python benchmarks/bench_latency_predictor.py --clock cpu          # thread CPU time: immune to other load
    python benchmarks/bench_latency_predictor.py --runtime onnxruntime --clock cpu   # the ONNX Runtime table

Goal: median relative error <= 10 %. On a shared machine, wall-clock timings include preemption
by other processes; the load average is printed so the figures can be judged, and ``--clock cpu``
(single-thread only) times the same work in CPU time, which other processes do not inflate.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from search_space import SearchSpace, analytic_cost  # noqa: E402
from train_proxy.latency import cpu_model_name, measure_latency  # noqa: E402
from nas.commands.latency_table import CALIBRATION_SEED  # noqa: E402
from train_proxy.latency_table import LatencyPredictor  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=20, help="random architectures (default 20)")
    ap.add_argument("--runtime", default="torch", help="torch (default), torchscript or onnxruntime")
    ap.add_argument("--seed", type=int, default=0, help="first sampling seed (archs use seed, seed+1, ...)")
    ap.add_argument("--resolution", type=int, default=224, help="input side (default 224, the deploy resolution)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=1)
    ap.add_argument("--warmup", type=int, default=3, help="warm-up runs per whole-network measurement")
    ap.add_argument("--repeats", type=int, default=10, help="timed runs per whole-network measurement")
    ap.add_argument("--table-warmup", type=int, default=5, help="warm-up runs per table entry")
    ap.add_argument("--table-repeats", type=int, default=20, help="timed runs per table entry")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall")
    ap.add_argument("--cache-dir", help="reuse a table cache (default: a fresh temporary one)")
    ap.add_argument("--fixed-table-timing", action="store_true",
                    help="time every table entry with all its warm-up and timed runs (default: adaptive, stopping "
                         "once the median is known; train_proxy.latency.median_known)")  # fmt: skip
    ap.add_argument("--calibrate", type=int, default=12,
                    help="whole networks (other seeds than the evaluated ones) measured first to fit the "
                         "per-family correction; both raw and corrected errors are reported (default 12)")  # fmt: skip
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    tmp = None if args.cache_dir else tempfile.TemporaryDirectory(prefix="latency-bench-")
    cache_dir = args.cache_dir or tmp.name  # type: ignore[union-attr]
    predictor = LatencyPredictor.for_device(
        "cpu", args.threads, args.batch_size, cache_dir,
        warmup=args.table_warmup, repeats=args.table_repeats, clock=args.clock, runtime=args.runtime,
        adaptive=not args.fixed_table_timing,
    )  # fmt: skip
    space = SearchSpace.default()
    load_start = os.getloadavg()
    print(f"CPU: {cpu_model_name()}, {os.cpu_count()} cores; torch {torch.__version__}; runtime {args.runtime}; threads {args.threads}, "
          f"batch {args.batch_size}, {args.resolution} px, clock {args.clock}")  # fmt: skip
    print(f"whole network: {args.warmup} warm-up + {args.repeats} timed runs, median; table entries: "
          f"{args.table_warmup} + {args.table_repeats}{' at most (adaptive)' if predictor.adaptive else ''}, median; "
          f"load average at start {load_start[0]:.1f}")  # fmt: skip
    print()
    correction = None
    if args.calibrate:
        # the CLI's calibration seeds (nas latency-table build), apart from the evaluated ones
        start = time.perf_counter()
        calibration = [space.sample(CALIBRATION_SEED + i) for i in range(args.calibrate)]
        correction = predictor.calibrate(calibration, warmup=args.warmup, repeats=args.repeats)
        print(f"calibration: {args.calibrate} whole networks (seeds {CALIBRATION_SEED}..), factors "
              + ", ".join(f"{g} x{c:.3f}" for g, c in correction.items())
              + f" ({time.perf_counter() - start:.0f} s)")  # fmt: skip
        print()
    header = (f"{'arch':>4} {'blocks (depths)':<42} {'MACs':>7} {'measured':>9} {'p90':>8} {'sum':>9} {'error':>7} "
              f"{'corrected':>9} {'error':>7} {'new':>4}")  # fmt: skip
    print(header)
    print("-" * len(header))

    errors, corrected_errors, measure_seconds, table_seconds = [], [], [], 0.0
    cfgs = []
    for i in range(args.n):
        cfg = space.sample(args.seed + i)
        cfgs.append(cfg)
        before = predictor.measurements
        start = time.perf_counter()
        predicted = predictor.predict_raw(cfg, args.resolution)
        table_seconds += time.perf_counter() - start
        corrected = predictor.predict(cfg, args.resolution) if correction else predicted
        start = time.perf_counter()
        measured = measure_latency(
            cfg, batch_size=args.batch_size, threads=args.threads, resolution=args.resolution,
            warmup=args.warmup, repeats=args.repeats, clock=args.clock, runtime=args.runtime,
        )  # fmt: skip
        measure_seconds.append(time.perf_counter() - start)
        error = (predicted - measured.median_ms) / measured.median_ms
        errors.append(error)
        corrected_error = (corrected - measured.median_ms) / measured.median_ms
        corrected_errors.append(corrected_error)
        blocks = " ".join(f"{s.block}({s.depth})" for s in cfg.stages)
        macs = analytic_cost(cfg, args.resolution).macs
        print(f"{args.seed + i:>4} {blocks:<42} {macs / 1e9:>6.2f}G {measured.median_ms:>7.1f}ms "
              f"{measured.p90_ms:>6.1f}ms {predicted:>7.1f}ms {error:>+7.1%} {corrected:>7.1f}ms "
              f"{corrected_error:>+7.1%} {predictor.measurements - before:>4}", flush=True)  # fmt: skip

    # one prediction on a warm table: every entry is cached now, so this is pure lookup + sum
    predict_times = []
    for cfg in cfgs:
        reps = 200
        start = time.perf_counter()
        for _ in range(reps):
            predictor.predict(cfg, args.resolution)
        predict_times.append((time.perf_counter() - start) / reps)
    predict_s = statistics.median(predict_times)
    measure_s = statistics.median(measure_seconds)
    abs_errors = [abs(e) for e in errors]
    load_end = os.getloadavg()

    print()
    print(f"median |relative error|   {statistics.median(abs_errors):.1%}   (goal <= 10%)   worst {max(abs_errors):.1%}"
          "   (sum of parts)")  # fmt: skip
    if correction:
        abs_corr = [abs(e) for e in corrected_errors]
        print(f"median |relative error|   {statistics.median(abs_corr):.1%}   (goal <= 10%)   worst {max(abs_corr):.1%}"
              f"   (corrected; median signed {statistics.median(corrected_errors):+.1%})")  # fmt: skip
    print(f"mean |relative error|     {statistics.fmean(abs_errors):.1%}   max {max(abs_errors):.1%}   "
          f"median signed {statistics.median(errors):+.1%}")  # fmt: skip
    print(f"one prediction (warm)     {predict_s * 1e6:.0f} us")
    print(f"one measurement           {measure_s:.2f} s  ({args.warmup} warm-up + {args.repeats} timed runs)")
    print(f"measurement / prediction  {measure_s / predict_s:,.0f}x")
    print(f"table: {len(predictor)} entries measured once in {table_seconds:.1f} s in all "
          f"(per-network overhead constant {predictor.overhead_ms:+.3f} ms); load average at end {load_end[0]:.1f}")  # fmt: skip
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
