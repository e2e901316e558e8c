"""`nas train`: proxy-train a zoo model or model config and report validation accuracy."""

from __future__ import annotations

import argparse
import math
import sys

from search_space import ArchConfig, UserError, resolve_config

from ..cli_utils import DATA_HELP, positive_int, print_json, resolution_arg
from ..units import format_count, format_macs


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="proxy-train a model on a small dataset",
        description="Train a zoo model or model config as a proxy (low resolution, few epochs, AdamW with "
        "warm-up and cosine decay, label smoothing, light augmentation) and report validation accuracy. "
        "The class count comes from the data. Stochastic depth: a proxy run (below the config's resolution, "
        "on a fraction of the data or at another width) trains without it; a full run (the config's width at "
        "its resolution or above, all the data) uses the config's drop_path_rate; --drop-path overrides both. "
        "Exit status 1 when the training fails (non-finite loss).",
    )
    p.add_argument("model", metavar="NAME_OR_YAML", help="zoo name (e.g. van_b0) or path to a model config YAML")
    p.add_argument("--data", help=DATA_HELP)
    p.add_argument("--epochs", type=positive_int, default=3, help="epochs (default 3)")
    p.add_argument(
        "--resolution", type=resolution_arg, default=32, help="proxy input side, a multiple of 32 (default 32)"
    )
    p.add_argument("--batch-size", type=_batch_size, default=64, help="batch size (default 64)")
    p.add_argument("--seed", type=int, default=0, help="seed; same seed and device give the same result (default 0)")
    p.add_argument(
        "--fraction", type=_fraction, default=1.0, help="share of the train split used, in (0, 1] (default 1)"
    )
    p.add_argument("--width-mult", type=_positive_float, default=1.0, help="width multiplier for the proxy (default 1)")
    p.add_argument("--threads", type=positive_int, help="CPU threads for torch (default: torch's own choice)")
    p.add_argument("--lr", type=_positive_float, default=2e-3, help="peak learning rate of AdamW (default 2e-3)")
    p.add_argument(
        "--drop-path",
        type=_rate,
        metavar="RATE",
        help="stochastic depth maximum in [0, 1), spread linearly over the blocks (default: 0 for a proxy run, "
        "the config's drop_path_rate for a full run)",
    )
    p.add_argument("--device", default="auto", help="auto (default), cpu or cuda[:N]")
    p.add_argument("--test", action="store_true",
                   help="also report test_acc on the data's official test split (fashion-mnist, mnist:DIR; "
                        "kept apart from training and validation, never used by searches)")  # fmt: skip
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from train_proxy import ProxySpec, load_data, train_proxy
    from train_proxy.data import resolve_data_arg
    from train_proxy.trainer import resolve_device

    cfg = resolve_config(args.model)
    spec = ProxySpec(
        resolution=args.resolution,
        epochs=args.epochs,
        batch_size=args.batch_size,
        data_fraction=args.fraction,
        width_multiplier=args.width_mult,
        seed=args.seed,
        lr=args.lr,
        threads=args.threads,
        device=args.device,
        drop_path_rate=args.drop_path if args.drop_path is not None else default_drop_path(cfg, args),
    )
    resolve_device(spec.device)  # an unusable device is refused before the data is read
    data, notice = resolve_data_arg(args.data)
    bundle = load_data(data, spec.resolution, fraction=spec.data_fraction)
    if args.test and bundle.test is None:
        raise UserError(f"--test: {bundle.name} has no official test split (fashion-mnist and mnist:DIR have one)")
    if notice:
        print(notice, file=sys.stderr)

    def report_epoch(record: dict) -> None:
        if not args.json:
            _write(
                f"epoch {record['epoch']:>3}/{spec.epochs}  loss {record['train_loss']:.4f}  "
                f"val_acc {record['val_acc']:.4f}  {record['seconds']:.1f} s"
            )

    if not args.json:
        print(f"training {cfg.name} on {bundle.summary()}")
    result = train_proxy(cfg, spec, bundle, on_epoch=report_epoch, progress=not args.no_progress,
                         evaluate_test=args.test)  # fmt: skip
    out = {
        "name": cfg.name,
        "data": bundle.name,
        "status": result.status,
        "failure_reason": result.failure_reason,
        "val_acc": result.val_acc,
        "best_val_acc": result.best_val_acc,
        "test_acc": result.test_acc,
        "epochs": result.epochs,
        "epochs_requested": spec.epochs,
        "train_seconds": result.train_seconds,
        "images_per_second": result.images_per_second,
        "params": result.params,
        "macs": result.macs,
        "resolution": spec.resolution,
        "batch_size": spec.batch_size,
        "seed": spec.seed,
        "data_fraction": spec.data_fraction,
        "width_multiplier": spec.width_multiplier,
        "lr": spec.lr,
        "drop_path_rate": result.drop_path_rate,
        "device": result.device,
        "threads": spec.threads,
        "n_train": result.n_train,
        "n_val": result.n_val,
        "num_classes": bundle.num_classes,
        "history": result.history,
    }
    if args.json:
        print_json(out)
    else:
        print(
            f"{cfg.name} at {spec.resolution} px ({format_count(result.params)} params, "
            f"{format_macs(result.macs)} MACs): val_acc {result.val_acc:.4f} (best {result.best_val_acc:.4f}) "
            + (f"test_acc {result.test_acc:.4f} " if result.test_acc is not None else "")
            + f"after {result.epochs} epochs, {result.train_seconds:.1f} s, {result.images_per_second:.0f} images/s "
            f"on {result.device}, drop path {result.drop_path_rate:g}"
        )
    if result.status == "failed":
        print(f"error: training failed: {result.failure_reason}", file=sys.stderr)
        return 1
    return 0


def default_drop_path(cfg: ArchConfig, args: argparse.Namespace) -> float | None:
    """None (the config's own rate) for a full run, 0 for a proxy run."""
    full = args.resolution >= cfg.resolution and args.fraction == 1.0 and args.width_mult == 1.0
    return None if full else 0.0


def _write(line: str) -> None:
    """A line that does not tear the progress bar (tqdm.write), on stdout."""
    from tqdm.auto import tqdm

    tqdm.write(line, file=sys.stdout)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def _rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number") from None
    if not 0.0 <= value < 1.0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text}")
    return value


def _fraction(text: str) -> float:
    value = _positive_float(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text}")
    return value


def _batch_size(text: str) -> int:
    value = positive_int(text)
    if value < 2:
        raise argparse.ArgumentTypeError("must be >= 2 (batch norm needs two samples)")
    return value
