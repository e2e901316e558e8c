"""`nas train`: proxy-train a zoo model or model config and report validation accuracy."""

from __future__ import annotations

import argparse
import math
import shlex
import signal
import sys
import threading
from dataclasses import dataclass
from typing import Any

from search_space import ArchConfig, UserError, resolve_config
from search_space.text import printable

from train_proxy import proxy_defaults as D

from ..cli_utils import (DATA_HELP, batch_size_arg, fraction_arg, old_spellings, old_value_form, positive_int,
                         print_json, resolution_arg, width_arg)  # fmt: skip
from search_space.units import format_count, format_macs


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a model: a proxy, or the real network (kept and resumable with --save)",
        description="Train a zoo model or model config (AdamW with warm-up and cosine decay, label smoothing, "
        "light augmentation) and report validation accuracy. By default it trains the real network: its own "
        f"widths (--proxy-width {D.FULL_WIDTH:g}) on all the training data (--data-fraction {D.FULL_DATA_FRACTION:g}) "
        f"for {D.FULL_EPOCHS} epochs at {D.RESOLUTION} px; --proxy-width and --data-fraction train a proxy of it. "
        "The class count comes from the data. Stochastic depth: a proxy run (below the config's resolution, "
        "on a fraction of the data or at another width) trains without it; a full run (the config's width at "
        "its resolution or above, all the data) uses the config's drop_path_rate; --drop-path overrides both. "
        "With --save DIR the training is kept; --save DIR --resume continues it. "
        "Exit status 1 when the training fails (non-finite loss).",
    )
    p.add_argument("model", metavar="NAME_OR_YAML", nargs="?",
                   help="zoo name (e.g. van_b0) or path to a model config YAML (not with --resume)")  # fmt: skip
    p.add_argument("--save", metavar="DIR",
                   help="keep the training in DIR (a new or empty directory): weights (model.safetensors), "
                        "config.yaml and the training state after every epoch, history.json and curves.png; "
                        "at the end the test-split accuracy, result.json and card.md")  # fmt: skip
    p.add_argument("--resume", action="store_true",
                   help="continue the training kept in --save DIR (after a crash or kill) with its saved settings; "
                        "on the same device and threads it ends with the weights of an uninterrupted run")  # fmt: skip
    p.add_argument("--data", help=DATA_HELP)
    p.add_argument("--epochs", type=positive_int, default=D.FULL_EPOCHS, help=f"epochs (default {D.FULL_EPOCHS})")
    p.add_argument("--proxy-resolution", type=resolution_arg, default=D.RESOLUTION,
                   help=f"training input side, a multiple of 32 (default {D.RESOLUTION})")  # fmt: skip
    p.add_argument("--batch-size", type=batch_size_arg, default=D.BATCH_SIZE, help=f"batch size (default {D.BATCH_SIZE})")
    p.add_argument("--seed", type=int, default=D.SEED,
                   help=f"seed; same seed and device give the same result (default {D.SEED})")  # fmt: skip
    p.add_argument("--data-fraction", type=fraction_arg, default=D.FULL_DATA_FRACTION,
                   help=f"share of the train split used, in (0, 1] (default {D.FULL_DATA_FRACTION:g}: all of it)")  # fmt: skip
    p.add_argument("--proxy-width", type=width_arg, default=D.FULL_WIDTH,
                   help=f"width multiplier, in (0, {D.MAX_WIDTH:g}] (default {D.FULL_WIDTH:g}: the network's own widths)")  # fmt: skip
    p.add_argument("--threads", type=positive_int, help="CPU threads for torch (default: torch's own choice)")
    p.add_argument("--lr", type=_positive_float, default=D.LR, help=f"peak learning rate of AdamW (default {D.LR:g})")
    p.add_argument(
        "--drop-path",
        type=_rate,
        metavar="RATE",
        help="stochastic depth maximum in [0, 1), spread linearly over the blocks (default: 0 for a proxy run, "
        "the config's drop_path_rate for a full run)",
    )
    p.add_argument("--device", default=D.DEVICE, help=f"training device: auto (default {D.DEVICE}), cpu or cuda[:N]")
    p.add_argument("--precision", choices=("auto", "bf16", "fp16", "fp32"), default=D.PRECISION,
                   help="on CUDA: auto (default: bf16 autocast where the GPU has it natively, else fp16 with a "
                        "gradient scaler), bf16, fp16 or fp32; on the CPU auto is fp32, and bf16 (autocast) needs "
                        "a CPU with native bf16 (AVX512-BF16 or AMX)")  # fmt: skip
    p.add_argument("--test", action="store_true",
                   help="also report test_acc on the data's official test split (fashion-mnist, mnist:DIR; "
                        "kept apart from training and validation, never used by searches)")  # fmt: skip
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    old_spellings(p, {"--resolution": "--proxy-resolution", "--fraction": "--data-fraction",
                      "--width-mult": "--proxy-width"})  # fmt: skip
    old_value_form(p, "--resume", into="--save")  # nas train --resume DIR (before --resume was a switch)
    p.set_defaults(func=run)
    p.set_defaults(training_defaults={flag: p.get_default(flag) for flag in TRAINING_FLAGS})


# training flags --resume refuses: it continues with the saved ones
TRAINING_FLAGS = ("data", "epochs", "proxy_resolution", "batch_size", "seed", "data_fraction", "proxy_width", "threads",
                  "lr", "drop_path", "device", "precision", "test")  # fmt: skip


def run(args: argparse.Namespace) -> int:
    """Train; Ctrl-C (exit 130) and SIGTERM (exit 143, as `nas search`) end it with one closing line
    that says what was kept and how to continue."""
    at = _Progress()
    term = _SigtermInterrupts()
    with term:
        try:
            return _train(args, at)
        except KeyboardInterrupt:
            signum = term.received or signal.SIGINT
            print(printable(_interrupted_line(signum, at)), file=sys.stderr)
            return 128 + signum


def _train(args: argparse.Namespace, at: "_Progress") -> int:
    from train_proxy import ProxySpec, load_data, train_proxy
    from results.cards import trained_card
    from train_proxy import keep as kept
    from results.run_dir import refuse_run_records
    from train_proxy.checkpoint import TrainingDir
    from train_proxy.data import resolve_data_arg
    from train_proxy.trainer import resolve_device

    if args.resume:
        keep = _resumed(args)
        at.keep = keep
        done = kept.finished(keep)
        if done is not None:  # nothing to train, nothing to rewrite
            if args.json:
                print_json(done)
            else:
                print(printable(_finished_line(keep.path, done)))
            return 0
        cfg, spec = keep.source_config(), kept.saved_spec(keep)
        data, notice = keep.settings()["data"], None
    else:
        if not args.model:
            raise UserError("give a model (zoo name or config YAML), or --save DIR --resume")
        cfg = resolve_config(args.model)
        spec = ProxySpec(  # the warm-up follows the one rule (proxy_defaults.warmup_epochs)
            resolution=args.proxy_resolution,
            epochs=args.epochs,
            batch_size=args.batch_size,
            data_fraction=args.data_fraction,
            width_multiplier=args.proxy_width,
            seed=args.seed,
            lr=args.lr,
            threads=args.threads,
            device=args.device,
            precision=args.precision,
            drop_path_rate=args.drop_path if args.drop_path is not None else default_drop_path(cfg, args),
        )
        data, notice = resolve_data_arg(args.data)
        if args.save:
            refuse_run_records(args.save, "--save")
            TrainingDir.check_new(args.save)
    at.epochs = spec.epochs
    resolve_device(spec.device)  # an unusable device is refused before the data is read
    bundle = load_data(data, spec.resolution, fraction=spec.data_fraction)
    if args.test and bundle.test is None:
        raise UserError(f"--test: {bundle.name} has no official test split (fashion-mnist and mnist:DIR have one)")
    if notice:
        print(printable(notice), file=sys.stderr)
    if args.save and not args.resume:
        # a kept training scores its test split at the end, when the data has one
        evaluate_test = args.test or bundle.test is not None
        keep = TrainingDir.create(args.save)  # everything checked: now the first write
        at.keep = keep
        kept.start(keep, cfg, spec, data, bundle, evaluate_test=evaluate_test, extra=_provenance(args))

    def report_epoch(record: dict) -> None:
        at.finished = record["epoch"]
        if not args.json:
            _write(
                f"epoch {record['epoch']:>3}/{spec.epochs}  loss {record['train_loss']:.4f}  "
                f"val_acc {record['val_acc']:.4f}  {record['seconds']:.1f} s"
            )

    if not args.json:
        verb = f"resuming {keep.path}: " if args.resume else ""
        print(printable(f"{verb}training {cfg.name} on {bundle.summary()}"))
    at.training = True
    if args.save or args.resume:
        out = kept.run(keep, bundle, card=trained_card, on_epoch=report_epoch, progress=not args.no_progress)
    else:
        result = train_proxy(cfg, spec, bundle, on_epoch=report_epoch, progress=not args.no_progress,
                             evaluate_test=args.test)  # fmt: skip
        out = kept.result_record(cfg, spec, bundle, result)
    if args.json:
        print_json(out)
    else:
        test = f"test_acc {out['test_acc']:.4f} " if out["test_acc"] is not None else ""
        print(printable(
            f"{cfg.name} at {spec.resolution} px ({format_count(out['params'])} params, "
            f"{format_macs(out['macs'])} MACs): val_acc {out['val_acc']:.4f} (best {out['best_val_acc']:.4f}) "
            f"{test}after {out['epochs']} epochs, {out['train_seconds']:.1f} s, {out['images_per_second']:.0f} "
            f"images/s on {out['device']} ({out['precision']}), drop path {out['drop_path_rate']:g}"
        ))  # fmt: skip
        if "saved" in out:
            print(printable(f"saved in {out['saved']}: model.safetensors, config.yaml, card.md, curves.png"))
    if out["status"] == "failed":
        print(printable(f"error: training failed: {out['failure_reason']}"), file=sys.stderr)
        return 1
    return 0


@dataclass
class _Progress:
    """How far a `nas train` got, for the closing line of an interrupted one."""

    keep: Any = None  # the TrainingDir, once there is one (--resume, or --save after its first write)
    epochs: int | None = None  # of the training, once known
    training: bool = False  # the data is loaded and the loop started
    finished: int = 0  # epochs finished in this call's loop (their count, as reported)


class _SigtermInterrupts:
    """For the duration of a `with`: SIGTERM interrupts the training as Ctrl-C does (a
    KeyboardInterrupt), and `received` records it, so that the command can close with one line and
    exit 143 (128 + SIGTERM, as `nas search`). A second SIGTERM kills the process at once."""

    def __init__(self) -> None:
        self.received: int | None = None
        self.previous: Any = None

    def _handler(self, signum: int, frame: object) -> None:
        if self.received is None:
            self.received = signum
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            raise KeyboardInterrupt

    def __enter__(self) -> "_SigtermInterrupts":
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGTERM, self._handler)
        return self

    def __exit__(self, *exc: object) -> None:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self.previous if self.previous is not None else signal.SIG_DFL)


def _interrupted_line(signum: int, at: _Progress) -> str:
    """One line: what interrupted the training, what was kept, and how to continue."""
    what = "interrupted by SIGTERM" if signum == signal.SIGTERM else "interrupted"
    of = f" of {at.epochs}" if at.epochs else ""
    if at.keep is None:
        if not at.training:
            return f"{what} before the training started; nothing was written"
        return (f"{what} during epoch {at.finished + 1}{of}; nothing was kept (nas train --save DIR keeps a training "
                "that nas train --save DIR --resume continues)")  # fmt: skip
    from train_proxy import keep as kept

    where, again = at.keep.path, f"nas train --save {shlex.quote(str(at.keep.path))} --resume"
    try:
        done = kept.finished(at.keep)
        saved = kept.epochs_kept(at.keep)
    except UserError:  # unreadable now: say what this call saw
        done, saved = None, at.finished
    if done is not None:
        return f"{what} after the training finished; its result is in {where}"
    if at.epochs and saved >= at.epochs:
        return (f"{what} after the last epoch: all {saved} epochs kept in {where}, the result not written yet; "
                f"finish with {again}")  # fmt: skip
    moment = f"during epoch {saved + 1}{of}" if at.training else "before the training started"
    if saved == 0:
        return f"{what} {moment}: no epoch finished yet, the settings are kept in {where}; continue with {again}"
    return (f"{what} {moment}: {saved} finished epoch{'s' if saved > 1 else ''} kept in {where} "
            f"(weights, optimizer and random state); continue with {again}")  # fmt: skip


def _finished_line(path: Any, result: dict) -> str:
    """What `--resume` says of a training that already ran to its end."""
    facts = [f"{result.get('epochs')} epochs"]
    facts += [f"{name} {result[name]:.4f}" for name in ("val_acc", "test_acc")
              if isinstance(result.get(name), (int, float)) and not isinstance(result.get(name), bool)]  # fmt: skip
    return f"{path}: training finished ({', '.join(facts)}); nothing to do"


def _resumed(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from train_proxy.checkpoint import TrainingDir

    if args.model:
        raise UserError("--resume continues the training kept in --save DIR; give no model")
    if not args.save:
        raise UserError("--resume continues the training kept in a directory: give it with --save DIR")
    defaults = args.training_defaults
    changed = [f"--{flag.replace('_', '-')}" for flag in TRAINING_FLAGS if getattr(args, flag) != defaults.get(flag)]
    if changed:
        raise UserError(f"--resume continues with the saved settings; drop {', '.join(changed)}")
    return TrainingDir.open(args.save)


def _provenance(args: argparse.Namespace) -> dict:
    from results.run_dir import now_iso, versions

    return {
        "model": args.model,
        "command": shlex.join(["nas", *sys.argv[1:]]) if sys.argv[1:] else "nas train",
        "created": now_iso(),
        "versions": versions(),
    }


def default_drop_path(cfg: ArchConfig, args: argparse.Namespace) -> float | None:
    """None (the config's own rate) for a full run, 0 for a proxy run."""
    full = (args.proxy_resolution >= cfg.resolution and args.data_fraction == D.FULL_DATA_FRACTION
            and args.proxy_width == D.FULL_WIDTH)  # fmt: skip
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
