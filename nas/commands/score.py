"""`nas score`: a zero-cost score (synflow, NASWOT, grad-norm) of an untrained model."""

from __future__ import annotations

import argparse
import sys
import time

from search_space.text import printable
from search_space import resolve_config

from train_proxy.zero_cost import PROXIES

from train_proxy import proxy_defaults as D

from ..cli_utils import DATA_HELP, old_spellings, positive_int, print_json, resolution_arg


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "score",
        help="zero-cost score of an untrained model",
        description="Zero-cost score of a zoo model or model config at initialisation, a cheap pre-filter "
        "(larger is predicted better): synflow (data-free, all-ones input, |weights|), naswot "
        "(log-determinant of the activation-pattern kernel of one batch), gradnorm (sum of gradient "
        "norms after one cross-entropy backward pass). Deterministic for a seed.",
    )
    p.add_argument("model", metavar="NAME_OR_YAML", help="zoo name (e.g. cmt_s) or path to a model config YAML")
    p.add_argument("--proxy", required=True, choices=PROXIES, help="which score")
    p.add_argument("--proxy-resolution", type=resolution_arg, default=D.RESOLUTION,
                   help=f"input side (default: {D.RESOLUTION}, the proxy's)")  # fmt: skip
    p.add_argument("--score-batch-size", type=positive_int, default=D.SCORE_BATCH_SIZE,
                   help=f"images in the one batch the score sees (not a training batch; default: {D.SCORE_BATCH_SIZE})")  # fmt: skip
    p.add_argument("--data", help=DATA_HELP)
    p.add_argument("--seed", type=int, default=D.SEED,
                   help=f"draws the initial weights and the batch (default: {D.SEED})")  # fmt: skip
    p.add_argument(
        "--threads",
        type=positive_int,
        default=1,
        help="torch CPU threads (default: 1; more threads than free cores slow torch down badly)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    old_spellings(p, {"--resolution": "--proxy-resolution", "--batch-size": "--score-batch-size"})
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import math

    from train_proxy.zero_cost import zero_cost_score

    from train_proxy.data import resolve_data_arg

    cfg = resolve_config(args.model)
    data, notice = resolve_data_arg(args.data)
    if notice:
        print(notice, file=sys.stderr)
    start = time.perf_counter()
    score = zero_cost_score(
        cfg,
        args.proxy,
        data=data,
        resolution=args.proxy_resolution,
        batch_size=args.score_batch_size,
        seed=args.seed,
        threads=args.threads,
    )
    seconds = time.perf_counter() - start
    out = {
        "name": cfg.name,
        "proxy": args.proxy,
        "score": score if math.isfinite(score) else None,  # JSON has no infinities
        "finite": math.isfinite(score),
        "resolution": args.proxy_resolution,
        "batch_size": args.score_batch_size,
        "data": data,
        "seed": args.seed,
        "seconds": seconds,
    }
    if args.json:
        print_json(out)
        return 0
    print(f"{printable(cfg.name)}: {args.proxy} = {score:.6g}  (resolution {args.proxy_resolution}, batch {args.score_batch_size}, "
          f"data {printable(args.data)}, seed {args.seed}, {seconds:.1f} s)")  # fmt: skip
    return 0
