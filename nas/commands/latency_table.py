"""`nas latency-table build|check`: portable per-block latency tables for a target device and runtime."""

from __future__ import annotations

import argparse
import sys

from search_space.text import printable

from train_proxy.latency import DEFAULT_BATCH_SIZE, DEFAULT_DEVICE, DEFAULT_REPEATS, DEFAULT_WARMUP

from ..cli_utils import non_negative_int, old_spellings, positive_int, print_json

CALIBRATION_SEED = 10_000  # random architectures of the space, apart from those a benchmark evaluates


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "latency-table",
        help="build or check a portable latency table (run it on the target device)",
        description="A latency lookup table is one timing per block configuration (and stem, patch "
        "embedding, norm and head) of a search space at its deploy resolution, on one device, runtime, "
        "thread count and batch size. Build it on the machine the model will run on (it needs only this "
        "package and the runtime), copy the file back, and give it to nas search --latency-table: the "
        "search then predicts the target's latency, not its own machine's.",
    )
    verbs = p.add_subparsers(dest="verb", metavar="VERB")
    verbs.required = True
    b = verbs.add_parser("build", help="time every part the space can produce, into --out (resumable)")
    b.add_argument("--out", required=True, metavar="TABLE.json", help="the table file (an existing one is "
                   "continued when it was measured with the same settings)")  # fmt: skip
    b.add_argument("--runtime", default="torch", help="torch (default), torchscript or onnxruntime")
    b.add_argument("--space", default="default", help="default or a search space YAML (default: default)")
    b.add_argument("--latency-device", default=DEFAULT_DEVICE,
                   help=f"the device to time on: cpu, cuda or cuda:N (default {DEFAULT_DEVICE})")  # fmt: skip
    b.add_argument("--threads", type=positive_int, default=1, help="intra-op threads (default 1)")
    b.add_argument("--latency-batch-size", type=positive_int, default=DEFAULT_BATCH_SIZE,
                   help=f"images per forward pass (default {DEFAULT_BATCH_SIZE})")  # fmt: skip
    b.add_argument("--warmup", type=non_negative_int, default=DEFAULT_WARMUP,
                   help=f"untimed runs per entry (default {DEFAULT_WARMUP})")  # fmt: skip
    b.add_argument("--repeats", type=positive_int, default=DEFAULT_REPEATS,
                   help=f"timed runs per entry, median kept (default {DEFAULT_REPEATS})")  # fmt: skip
    b.add_argument("--calibrate", type=non_negative_int, default=12, metavar="N",
                   help="whole networks (random ones of the space) measured to fit the table's correction of "
                        "the sum of parts, per block family (default 12; 0: none)")  # fmt: skip
    b.add_argument("--json", action="store_true", help="print one JSON object")
    old_spellings(b, {"--device": "--latency-device", "--batch-size": "--latency-batch-size"})
    b.set_defaults(func=run_build)
    c = verbs.add_parser("check", help="does a table cover a search space? (exit 2 naming what is missing)")
    c.add_argument("table", metavar="TABLE.json")
    c.add_argument("--space", default="default", help="default or a search space YAML (default: default)")
    c.add_argument("--json", action="store_true", help="print one JSON object")
    c.set_defaults(func=run_check)


def run_build(args: argparse.Namespace) -> int:
    from pathlib import Path

    from train_proxy.latency_warmup import covering_networks
    from nas.search.settings import load_space
    from search_space.errors import UserError
    from train_proxy.latency_table import LatencyPredictor
    from train_proxy.runtimes import check_runtime

    check_runtime(args.runtime, args.latency_device)
    space = load_space(args.space)
    out = Path(args.out)
    from results.run_dir import refuse_run_records

    refuse_run_records(out, "--out")
    if out.is_symlink() or (out.exists() and not out.is_file()):
        raise UserError(f"--out {out}: not a regular file")
    if not out.parent.is_dir():
        raise UserError(f"--out {out}: directory {out.parent} does not exist")
    predictor = LatencyPredictor.for_table_file(
        out, device=args.latency_device, threads=args.threads, batch_size=args.latency_batch_size, runtime=args.runtime,
        warmup=args.warmup, repeats=args.repeats, resolution=space.resolution,
    )  # fmt: skip
    networks = list(covering_networks(space))
    from tqdm import tqdm

    todo = len({key for cfg in networks for key in predictor.missing(cfg)})
    print(f"latency table {printable(out)}: {printable(predictor.describe())}; {len(predictor)} entries already measured, at least "
          f"{todo} to go for space '{space.name}' at {space.resolution} px", file=sys.stderr)  # fmt: skip
    with tqdm(total=todo, desc="latency table", unit="entry", file=sys.stderr, disable=None) as bar:

        def tick(n: int) -> None:
            bar.total = max(bar.total, n)
            bar.update(n - bar.n)

        measured = predictor.prefill(networks, on_measure=tick)
    predictor.require_cover(space)
    if args.calibrate and not predictor.calibration:  # a continued build keeps its calibration
        sample = [space.sample(CALIBRATION_SEED + i) for i in range(args.calibrate)]
        with tqdm(total=len(sample), desc="calibration networks", unit="net", file=sys.stderr, disable=None) as bar:
            predictor.calibrate(sample, on_network=lambda n: bar.update(n - bar.n))
    summary = {"table": str(out), "entries": len(predictor), "measured_now": measured, "space": space.name,
               "resolution": space.resolution, "correction": predictor.correction, **predictor.table_info()}  # fmt: skip
    if args.json:
        print_json(summary)
    else:
        print(f"{printable(out)}: {len(predictor)} entries ({measured} measured now) covering space '{printable(space.name)}' at "
              f"{space.resolution} px; {predictor.describe()}")  # fmt: skip
    return 0


def run_check(args: argparse.Namespace) -> int:
    from nas.search.settings import load_space
    from train_proxy.latency_table import LatencyPredictor

    predictor = LatencyPredictor.from_table(args.table)
    space = load_space(args.space)
    predictor.require_cover(space)
    if args.json:
        print_json({"table": args.table, "entries": len(predictor), "covers": space.name, **predictor.table_info()})
    else:
        print(f"{printable(args.table)}: {len(predictor)} entries cover space '{printable(space.name)}' at {space.resolution} px; "
              f"{predictor.describe()}")  # fmt: skip
    return 0
