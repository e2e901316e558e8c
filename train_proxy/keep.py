"""A kept training: start one in a `TrainingDir`, run it (or continue it) to the end, record its result.

`nas train --save/--resume` and `nas finalize` (which trains a search's chosen architectures, each
into ``RUN_DIR/final/<trial>/``) both go through here, so a kept training is one thing everywhere.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from search_space import ArchConfig
from search_space.errors import UserError

from .checkpoint import TrainingDir
from .data import DataBundle, load_data
from .trainer import EpochCallback, ProxySpec, TrainResult, proxy_config, train_proxy


def result_record(cfg: ArchConfig, spec: ProxySpec, bundle: DataBundle, result: TrainResult) -> dict[str, Any]:
    """What a training reports (``nas train --json``, ``result.json``)."""
    return {
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
        "precision": result.precision,
        "threads": spec.threads,
        "n_train": result.n_train,
        "n_val": result.n_val,
        "num_classes": bundle.num_classes,
        "history": result.history,
    }


def start(
    keep: TrainingDir,
    cfg: ArchConfig,
    spec: ProxySpec,
    data: str,
    bundle: DataBundle,
    *,
    evaluate_test: bool,
    extra: dict[str, Any] | None = None,
) -> None:
    """Write a new training's settings and built network into ``keep`` (the data already loaded)."""
    built = proxy_config(cfg, spec, bundle.num_classes, in_channels=int(bundle.train.tensors[0].shape[1]))
    settings = {
        **(extra or {}),
        "source_config": cfg.to_dict(),
        "spec": spec.to_dict(),
        "data": data,
        "evaluate_test": evaluate_test,
        # what a deployed model must be fed (timm's pretrained_cfg reads it: train_proxy.timm_models)
        "input": {"size": [built.in_channels, spec.resolution, spec.resolution], "mean": list(bundle.mean),
                  "std": list(bundle.std), "interpolation": "bilinear"},  # fmt: skip
    }
    keep.write_settings(settings, built)


def saved_spec(keep: TrainingDir) -> ProxySpec:
    try:
        return ProxySpec(**keep.settings()["spec"])
    except TypeError as exc:
        raise UserError(f"{keep.path}/train.json: bad spec ({exc})") from None


def finished(keep: TrainingDir) -> dict[str, Any] | None:
    """The result of the training kept in ``keep`` when it ran to its end (result.json, status ok),
    else None (not finished, failed, or the result unreadable): what `nas finalize` calls done."""
    result = keep.result()
    return result if result is not None and result.get("status") == "ok" else None


def epochs_kept(keep: TrainingDir) -> int:
    """How many epochs the training kept in ``keep`` has finished and saved (0 before the first)."""
    state = keep.load_state()
    return int(state["epoch"]) if state is not None else 0


@contextmanager
def signals_held() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM while the files of one epoch (or the result) are written, so they
    are written together; the first signal that came is then delivered to the handler in place
    before (the caller's: `nas train` turns SIGTERM into its closing line). In a thread other than
    the main one, where signals cannot be caught, nothing is held."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    saved = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    for signum in saved:
        signal.signal(signum, lambda number, frame: received.append(number))
    try:
        yield
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
    if received:
        signal.raise_signal(received[0])


class _HeldWrites:
    """A `TrainingDir` as the trainer's checkpointer, each epoch's files written with signals held."""

    def __init__(self, keep: TrainingDir) -> None:
        self.keep = keep

    def load_state(self) -> dict[str, Any] | None:
        return self.keep.load_state()

    def save_epoch(self, state: dict[str, Any]) -> None:
        with signals_held():
            self.keep.save_epoch(state)


# how a finished training's card.md is written: (built config, result.json, train.json, data summary) -> markdown
# (`results.cards.trained_card`, handed in by the commands: cards are a floor above training)
CardWriter = Callable[[ArchConfig, dict[str, Any], dict[str, Any], str], str]


def run(
    keep: TrainingDir,
    bundle: DataBundle | None = None,
    *,
    card: CardWriter,
    on_epoch: EpochCallback | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Train (or continue) the training kept in ``keep`` to its end; write result.json and the
    card.md that ``card`` writes.

    A training that already finished is left as it is: its saved result is returned, nothing is
    trained or rewritten (a rerun would record a throughput of 0 images/s)."""
    done = finished(keep)
    if done is not None:
        return done
    settings = keep.settings()
    spec = saved_spec(keep)
    cfg = keep.source_config()
    if bundle is None:
        bundle = load_data(settings["data"], spec.resolution, fraction=spec.data_fraction)
    result = train_proxy(cfg, spec, bundle, on_epoch=on_epoch, progress=progress,
                         evaluate_test=bool(settings.get("evaluate_test")), checkpoint=_HeldWrites(keep))  # fmt: skip
    record = result_record(cfg, spec, bundle, result)
    record["saved"] = str(keep.path)
    record["data_summary"] = bundle.summary()
    text = card(keep.built_config(), record, settings, bundle.summary())
    with signals_held():
        keep.write_result(record, text)
    return record

