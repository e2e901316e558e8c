"""The Ray Tune trainable of a search: proxy-train one architecture, report every epoch.

It runs in a Ray worker (reused across trials: ``reuse_actors=True``), so it keeps the loaded
data set in a per-process cache and pins torch's thread count to the trial's CPUs itself
(oversubscribed CPU threads made a model 60x slower on this class of machine).

Reports (``ray.tune.report``), one per epoch: ``epoch``, ``val_acc``, ``train_loss``,
``seconds`` (since the training started), ``epoch_seconds`` and ``node_id``. A training that
ends with a non-finite loss reports one last row with ``status: failed`` and its
``failure_reason`` (not retried: the trial's seed is fixed, a retry would replay it); an
exception, or running out of memory, is reported the same way and then raised, so Ray retries the
trial up to ``--max-failures`` times and the searcher knows why.
"""

from __future__ import annotations

import math
import traceback
from typing import Any


def load_cached_data(spec: str, resolution: int, fraction: float, seed: int) -> Any:
    """The proxy data set: `load_data` caches it per process, so a reused worker loads it once
    (the same subset for every trial of the search)."""
    from train_proxy.data import load_data

    return load_data(spec, resolution, fraction=fraction, seed=seed)


def ray_node_id() -> str | None:
    try:
        import ray

        return ray.get_runtime_context().get_node_id()
    except Exception:  # noqa: BLE001 - outside Ray (direct calls in tests/benchmarks)
        return None


def proxy_spec(settings: dict[str, Any], seed: int, threads: int) -> Any:
    from train_proxy.trainer import ProxySpec, warmup_epochs

    return ProxySpec(
        resolution=settings["proxy_resolution"],
        epochs=settings["epochs"],
        warmup_epochs=warmup_epochs(settings["epochs"]),  # the recipe docs/fidelity.md measured
        batch_size=settings["batch_size"],
        data_fraction=settings["data_fraction"],  # equal to the loaded bundle's: used as it is
        width_multiplier=settings["proxy_width"],
        seed=seed,
        threads=threads,
        device="auto",  # CUDA when Ray gave this trial a GPU, else CPU
    )


def search_trial(config: dict[str, Any], settings: dict[str, Any], hooks: dict[str, Any] | None = None) -> None:
    """Ray Tune function trainable. ``config`` comes from `NasSearcher.suggest`; ``hooks`` are the
    testing hooks of `faults` (empty in normal use)."""
    import torch
    from ray import tune

    from search_space import ArchConfig
    from search_space.transforms import with_classes
    from train_proxy.trainer import train_proxy

    from . import faults

    threads = int(config["threads"])
    torch.set_num_threads(threads)
    node_id = ray_node_id()
    device = "cuda" if torch.cuda.is_available() else "cpu"  # what train_proxy's "auto" picks in this worker
    last_epoch = 0
    last_acc = 0.0

    def on_epoch(row: dict[str, Any]) -> None:
        nonlocal last_epoch, last_acc
        last_epoch, last_acc = int(row["epoch"]), float(row["val_acc"])
        tune.report(
            {
                "epoch": last_epoch,
                "val_acc": last_acc,
                "train_loss": float(row.get("train_loss", math.nan)),
                "seconds": float(row.get("seconds", 0.0)),  # since the trial's training started
                "epoch_seconds": float(row.get("epoch_seconds", 0.0)),
                "node_id": node_id,  # which cluster node trained it (result.json keeps it)
                "device": device,
            }
        )

    hooks = hooks or {}
    number = int(config["number"])
    try:
        arch = ArchConfig.from_dict(config["config"])
        attempt = faults.start_attempt(hooks, number, arch, node_id)
        data = load_cached_data(settings["data"], settings["proxy_resolution"], settings["data_fraction"], settings["seed"])
        data = faults.before_training(hooks, number, attempt, data)
        cfg = with_classes(arch, data.num_classes)
        result = train_proxy(cfg, proxy_spec(settings, int(config["seed"]), threads), data, on_epoch)
        if result.status == "failed" and (result.failure_reason or "").startswith("out of memory"):
            # Raised, not reported: memory may be free on a retry (trials share a GPU), so Ray
            # retries it up to --max-failures times. A non-finite loss is a result: the trial's
            # seed is fixed, so a retry would replay it.
            raise torch.OutOfMemoryError(result.failure_reason)
    except Exception as exc:
        reason = f"{type(exc).__name__}: {exc}".splitlines()[0][:500]
        tune.report({"epoch": last_epoch, "val_acc": last_acc, "status": "failed", "failure_reason": reason,
                     "traceback": traceback.format_exc()[-4000:]})  # fmt: skip
        raise
    if result.status == "failed":
        tune.report({"epoch": last_epoch, "val_acc": last_acc, "status": "failed",
                     "failure_reason": result.failure_reason or "training failed"})  # fmt: skip
