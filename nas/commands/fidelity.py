"""`nas fidelity`: rank correlation of every cheap signal against a longer reference training."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from search_space.text import printable

from ..cli_utils import DATA_HELP, positive_int, print_json, resolution_arg
from ..search import settings as S


def _number_in(high: float):
    """An argparse type: a float in (0, high]."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"'{text}' is not a number") from None
        if not 0.0 < value <= high:
            raise argparse.ArgumentTypeError(f"must be in (0, {high:g}], got {value}")
        return value

    return parse


_fraction, _width = _number_in(1.0), _number_in(4.0)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "fidelity",
        help="how faithfully cheap signals rank architectures",
        description="Draw N random architectures (seeded) from the search space; for each, compute the cheap "
        "signals (a short proxy training, by default exactly the one `nas search` ranks by; the zero-cost scores "
        "synflow, naswot and gradnorm; MACs and params) and a reference training at full width on all the "
        "training data; report Kendall tau, Spearman rho and top-k overlap of each signal against the "
        "reference, each with a bootstrap 90% interval. On Fashion-MNIST one reference epoch costs 5-15 CPU-minutes "
        "per architecture of the default space on a 2-core machine, so the defaults (6 architectures, one "
        "reference epoch) take about half an hour there; docs/fidelity.md is the full study.",
    )
    p.add_argument("--n", type=positive_int, default=6, help="architectures (default: 6)")
    p.add_argument("--seed", type=int, default=0, help="draws the architectures; also the training seed (default: 0)")
    p.add_argument("--epochs-proxy", type=positive_int, default=S.DEFAULT_EPOCHS,
                   help=f"proxy training epochs (default: the search's, {S.DEFAULT_EPOCHS})")  # fmt: skip
    p.add_argument("--epochs-ref", type=positive_int, default=1, help="reference training epochs (default: 1)")
    p.add_argument("--proxy-resolution", type=resolution_arg, default=S.DEFAULT_PROXY_RESOLUTION,
                   help=f"proxy and score resolution (default: {S.DEFAULT_PROXY_RESOLUTION})")  # fmt: skip
    p.add_argument("--ref-resolution", type=resolution_arg, default=32, help="reference resolution (default: 32)")
    p.add_argument("--proxy-fraction", type=_fraction, default=S.DEFAULT_DATA_FRACTION,
                   help=f"share of the training data the proxy sees (default: the search's, {S.DEFAULT_DATA_FRACTION:g})")  # fmt: skip
    p.add_argument("--proxy-width", type=_width, default=S.DEFAULT_PROXY_WIDTH,
                   help=f"width multiplier of the proxy model (default: the search's, {S.DEFAULT_PROXY_WIDTH:g})")  # fmt: skip
    p.add_argument("--top-k", type=positive_int, help="k of the top-k overlap (default: n // 3)")
    p.add_argument("--data", help=DATA_HELP)
    p.add_argument("--space", help="search space YAML (default: the packaged default space)")
    p.add_argument("--batch-size", type=positive_int, default=64, help="training batch size (default: 64)")
    p.add_argument("--workers", type=positive_int, default=min(2, os.cpu_count() or 1),
                   help="architectures evaluated in parallel processes (default: min(2, cores))")  # fmt: skip
    p.add_argument("--threads", type=positive_int, default=1, help="torch threads per worker (default: 1)")
    p.add_argument("--out", help="also write the JSON report to this file")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from train_proxy.data import load_data, resolve_data_arg
    from train_proxy.fidelity import FidelitySettings, format_table, run_fidelity

    data, notice = resolve_data_arg(args.data)
    settings = FidelitySettings(
        n=args.n, seed=args.seed, epochs_proxy=args.epochs_proxy, epochs_ref=args.epochs_ref,
        proxy_resolution=args.proxy_resolution, ref_resolution=args.ref_resolution,
        proxy_fraction=args.proxy_fraction, proxy_width=args.proxy_width, top_k=args.top_k, data=data, batch_size=args.batch_size,
        threads=args.threads, workers=args.workers, space=args.space,
    )  # fmt: skip
    out_path = Path(args.out) if args.out else None
    if out_path is not None:
        from results.run_dir import refuse_run_records

        refuse_run_records(out_path, "--out")
    if out_path is not None and not out_path.parent.is_dir():
        from search_space.errors import UserError

        raise UserError(f"--out {out_path}: directory {out_path.parent} does not exist")
    load_data(settings.data, settings.proxy_resolution)  # a bad --data fails here, before any worker starts
    if settings.space:
        from search_space import SearchSpace

        SearchSpace.load(settings.space)  # a bad space too: nothing but its error line is printed
    if notice:
        print(notice, file=sys.stderr)

    with tqdm(total=settings.n, desc="fidelity", unit="arch", file=sys.stderr, disable=None) as bar:
        report = run_fidelity(settings, progress=lambda row: bar.update(1))
    payload = report.to_dict()
    if out_path is not None:
        from search_space.files import write_json_atomic

        write_json_atomic(out_path, payload, indent=1)
    if args.json:
        print_json(payload)
    else:
        print(format_table(report))
        if out_path is not None:
            print(f"report written to {printable(out_path)}")
    return 0
