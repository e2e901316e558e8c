"""A kept training: start one in a `TrainingDir`, run it (or continue it) to the end, record its result.

`nas train --save/--resume` and `nas finalize` (which trains a search's chosen architectures, each
into ``RUN_DIR/final/<trial>/``) both go through here, so a kept training is one thing everywhere.
"""

from __future__ import annotations

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
        # what a deployed model must be fed (timm's pretrained_cfg reads it: search_space.timm_models)
        "input": {"size": [built.in_channels, spec.resolution, spec.resolution], "mean": list(bundle.mean),
                  "std": list(bundle.std), "interpolation": "bilinear"},  # fmt: skip
    }
    keep.write_settings(settings, built)


def saved_spec(keep: TrainingDir) -> ProxySpec:
    try:
        return ProxySpec(**keep.settings()["spec"])
    except TypeError as exc:
        raise UserError(f"{keep.path}/train.json: bad spec ({exc})") from None


def run(
    keep: TrainingDir,
    bundle: DataBundle | None = None,
    *,
    on_epoch: EpochCallback | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Train (or continue) the training kept in ``keep`` to its end; write result.json and card.md."""
    from results.cards import trained_card

    settings = keep.settings()
    spec = saved_spec(keep)
    cfg = keep.source_config()
    if bundle is None:
        bundle = load_data(settings["data"], spec.resolution, fraction=spec.data_fraction)
    result = train_proxy(cfg, spec, bundle, on_epoch=on_epoch, progress=progress,
                         evaluate_test=bool(settings.get("evaluate_test")), checkpoint=keep)  # fmt: skip
    record = result_record(cfg, spec, bundle, result)
    record["saved"] = str(keep.path)
    record["data_summary"] = bundle.summary()
    keep.write_result(record, trained_card(keep.built_config(), record, settings, bundle.summary()))
    return record

