"""`nas fidelity`: rank correlation of every cheap signal against a longer reference training."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from search_space.text import printable

from ..cli_utils import (DATA_HELP, batch_size_arg, fraction_arg, old_spellings, positive_int, print_json,
                         resolution_arg, width_arg)  # fmt: skip


def _defaults() -> dict:
    """`FidelitySettings`' defaults: the command's (one home for them, `train_proxy.proxy_defaults`)."""
    from dataclasses import fields

    from train_proxy.fidelity import FidelitySettings

    return {f.name: f.default for f in fields(FidelitySettings)}


def register(sub: argparse._SubParsersAction) -> None:
    d = _defaults()
    p = sub.add_parser(
        "fidelity",
        help="how faithfully cheap signals rank architectures",
        description="Draw --trials random architectures (seeded) from the search space; for each, compute the cheap "
        "signals (a short proxy training, by default exactly the one `nas search` ranks by; the zero-cost scores "
        "synflow, naswot and gradnorm; MACs and params) and a reference training at full width on all the "
        "training data; report Kendall tau, Spearman rho and top-k overlap of each signal against the "
        "reference, each with a bootstrap 90% interval. On Fashion-MNIST one reference epoch costs 5-15 CPU-minutes "
        f"per architecture of the default space on a 2-core machine, so the defaults ({d['n']} architectures, "
        f"{d['epochs_ref']} reference epoch(s)) take about half an hour there; docs/fidelity.md is the full study.",
    )
    p.add_argument("--trials", type=positive_int, default=d["n"], help=f"architectures (default: {d['n']})")
    p.add_argument("--seed", type=int, default=d["seed"],
                   help=f"draws the architectures; also the training seed (default: {d['seed']})")  # fmt: skip
    p.add_argument("--epochs", type=positive_int, default=d["epochs_proxy"],
                   help=f"proxy training epochs (default: the search's, {d['epochs_proxy']})")  # fmt: skip
    p.add_argument("--ref-epochs", type=positive_int, default=d["epochs_ref"],
                   help=f"reference training epochs (default: {d['epochs_ref']})")  # fmt: skip
    p.add_argument("--proxy-resolution", type=resolution_arg, default=d["proxy_resolution"],
                   help=f"proxy and score resolution (default: {d['proxy_resolution']})")  # fmt: skip
    p.add_argument("--ref-resolution", type=resolution_arg, default=d["ref_resolution"],
                   help=f"reference resolution (default: {d['ref_resolution']})")  # fmt: skip
    p.add_argument("--data-fraction", type=fraction_arg, default=d["proxy_fraction"],
                   help=f"share of the training data the proxy sees (default: the search's, {d['proxy_fraction']:g}; "
                        "the reference sees all of it)")  # fmt: skip
    p.add_argument("--proxy-width", type=width_arg, default=d["proxy_width"],
                   help=f"width multiplier of the proxy model (default: the search's, {d['proxy_width']:g}; the "
                        "reference trains at full width)")  # fmt: skip
    p.add_argument("--top", type=positive_int, help="k of the top-k overlap (default: --trials // 3)")
    p.add_argument("--data", help=DATA_HELP)
    p.add_argument("--space", help="search space YAML (default: the packaged default space)")
    p.add_argument("--batch-size", type=batch_size_arg, default=d["batch_size"],
                   help=f"training batch size (default: {d['batch_size']})")  # fmt: skip
    p.add_argument("--workers", type=positive_int, default=min(d["workers"], os.cpu_count() or 1),
                   help=f"architectures evaluated in parallel processes (default: min({d['workers']}, cores))")  # fmt: skip
    p.add_argument("--threads", type=positive_int, default=d["threads"],
                   help=f"torch threads per worker (default: {d['threads']})")  # fmt: skip
    p.add_argument("--out", help="also write the JSON report to this file")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    old_spellings(p, {"--n": "--trials", "--epochs-proxy": "--epochs", "--epochs-ref": "--ref-epochs",
                      "--proxy-fraction": "--data-fraction", "--top-k": "--top"})  # fmt: skip
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from train_proxy.data import load_data, resolve_data_arg
    from train_proxy.fidelity import FidelitySettings, format_table, run_fidelity

    data, notice = resolve_data_arg(args.data)
    settings = FidelitySettings(
        n=args.trials, seed=args.seed, epochs_proxy=args.epochs, epochs_ref=args.ref_epochs,
        proxy_resolution=args.proxy_resolution, ref_resolution=args.ref_resolution,
        proxy_fraction=args.data_fraction, proxy_width=args.proxy_width, top_k=args.top, data=data,
        batch_size=args.batch_size, threads=args.threads, workers=args.workers, space=args.space,
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
