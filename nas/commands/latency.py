"""`nas latency`: measured (and optionally predicted) inference latency of a model."""

from __future__ import annotations

import argparse
import sys
import time

from search_space.text import printable
from search_space import analytic_cost, resolve_config

from train_proxy.latency import DEFAULT_BATCH_SIZE, DEFAULT_DEVICE, DEFAULT_REPEATS, DEFAULT_WARMUP

from ..cli_utils import non_negative_int, old_spellings, positive_int, print_json, resolution_arg
from search_space.units import format_macs


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "latency",
        help="measure (and predict) inference latency",
        description="Inference latency of a zoo model or model config: eval mode, no autograd, a fixed "
        "thread count, warm-up runs, then the median (and 90th percentile) of timed runs; CUDA is "
        "synchronised around every run. --predict adds the lookup-table prediction (per-block timings "
        "measured once per device and cached on disk).",
    )
    p.add_argument("model", metavar="NAME_OR_YAML", help="zoo name (e.g. cmt_s) or path to a model config YAML")
    p.add_argument("--latency-device", default=DEFAULT_DEVICE,
                   help=f"the device to time the model on: cpu, cuda or cuda:N (default: {DEFAULT_DEVICE})")  # fmt: skip
    p.add_argument("--runtime", default="torch",
                   help="torch (eager, default), torchscript (traced and frozen) or onnxruntime (the ONNX export "
                        "in an InferenceSession with all graph optimisations)")  # fmt: skip
    p.add_argument("--latency-batch-size", type=positive_int, default=DEFAULT_BATCH_SIZE,
                   help=f"images per forward pass (default: {DEFAULT_BATCH_SIZE})")  # fmt: skip
    p.add_argument("--threads", type=positive_int, default=1, help="torch intra-op CPU threads (default: 1)")
    p.add_argument("--resolution", type=resolution_arg,
                   help="the model's (deploy) input side (default: the config's own)")  # fmt: skip
    p.add_argument("--repeats", type=positive_int, default=DEFAULT_REPEATS,
                   help=f"timed runs (default: {DEFAULT_REPEATS})")  # fmt: skip
    p.add_argument("--warmup", type=non_negative_int, default=DEFAULT_WARMUP,
                   help=f"untimed warm-up runs (default: {DEFAULT_WARMUP})")  # fmt: skip
    p.add_argument("--channels-last", action="store_true", help="channels_last memory format")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast (CUDA only)")
    p.add_argument("--predict", action="store_true", help="also predict with the per-block lookup table")
    p.add_argument(
        "--cache-dir", help="latency table cache (default: $HYBRID_NAS_CACHE/latency or ~/.cache/hybrid-nas/latency)"
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    old_spellings(p, {"--device": "--latency-device", "--batch-size": "--latency-batch-size"})
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from train_proxy.latency import measure_latency, resolve_device
    from train_proxy.latency_table import LatencyPredictor

    from train_proxy.runtimes import check_runtime

    cfg = resolve_config(args.model)
    resolve_device(args.latency_device)  # fail fast, before any work, if the device is missing
    check_runtime(args.runtime, args.latency_device)
    resolution = args.resolution or cfg.resolution
    out: dict = {"name": cfg.name}

    if args.predict:
        predictor = LatencyPredictor.for_device(
            args.latency_device, args.threads, args.latency_batch_size, args.cache_dir,
            channels_last=args.channels_last, bf16=args.bf16, progress=sys.stderr.isatty(), runtime=args.runtime,
        )  # fmt: skip
        start = time.perf_counter()
        predicted = predictor.predict(cfg, resolution)
        predict_seconds = time.perf_counter() - start

    with tqdm(total=args.warmup + args.repeats, desc=f"timing {cfg.name}", unit="run", leave=False,
              file=sys.stderr, disable=None) as bar:  # fmt: skip
        result = measure_latency(
            cfg, device=args.latency_device, batch_size=args.latency_batch_size, threads=args.threads,
            resolution=resolution, warmup=args.warmup, repeats=args.repeats, channels_last=args.channels_last,
            bf16=args.bf16, progress=bar.update, runtime=args.runtime,
        )  # fmt: skip
    out.update(
        latency_ms=result.median_ms,
        p90_ms=result.p90_ms,
        mean_ms=result.mean_ms,
        min_ms=result.min_ms,
        repeats=result.repeats,
        warmup=result.warmup,
        batch_size=result.batch_size,
        threads=result.threads,
        device=result.device,
        device_name=result.device_name,
        resolution=result.resolution,
        channels_last=result.channels_last,
        bf16=result.bf16,
        runtime=result.runtime,
        macs=analytic_cost(cfg, resolution).macs,
    )
    if args.predict:
        out.update(
            predicted_ms=predicted,
            predicted_error=(predicted - result.median_ms) / result.median_ms,
            entries_measured=predictor.measurements,
            table_entries=len(predictor),
            predict_seconds=predict_seconds,
            table=str(predictor.path),
        )
    if args.json:
        print_json(out)
        return 0
    print(f"{printable(cfg.name)} at {resolution}x{resolution}, batch {result.batch_size}, {result.threads} thread(s), "
          f"{result.device} ({result.device_name}), {result.runtime}, {format_macs(out['macs'])} MACs")  # fmt: skip
    print(f"latency  median {result.median_ms:.2f} ms   p90 {result.p90_ms:.2f} ms   "
          f"min {result.min_ms:.2f} ms   ({result.repeats} runs after {result.warmup} warm-up)")  # fmt: skip
    if args.predict:
        print(f"predicted {predicted:.2f} ms ({out['predicted_error']:+.1%} vs measured median; "
              f"{predictor.measurements} new table entries, table {printable(predictor.path)})")  # fmt: skip
    return 0
