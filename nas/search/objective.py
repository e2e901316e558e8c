"""The Ray Tune trainable of a search: proxy-train one architecture rung by rung, report each rung.

A search has ``rungs`` fidelity rungs (`SearchSettings.rung_ladder`): rung k trains a fresh proxy
of the architecture on more images than rung k-1. The trainable trains rung 0, reports it, and
goes on to the next rung only while Ray Tune's ASHA scheduler lets it (ASHA stops the trial when its
accuracy at a rung is not among the best 1/RUNG_GROWTH of the trials that reached that rung);
ASHA's time axis is the rung's ``budget`` (RUNG_GROWTH ** rung: 1, 3, 9, ...).

It runs in a Ray worker (reused across trials: ``reuse_actors=True``), so it keeps the loaded
data sets in a per-process cache and pins torch's thread count to the trial's CPUs itself
(oversubscribed CPU threads made a model 60x slower on this class of machine).

Reports (``ray.tune.report``), one per rung: ``rung``, ``budget``, ``val_acc`` (on the rung's
validation images), ``train_loss`` (the last epoch's mean), ``tse`` (the sum of every training
step's loss, Ru et al. 2021), ``epochs``, ``n_train``, ``n_val``, ``seconds`` (the rung's training
time), ``cpu_seconds`` (the worker's CPU time for it, every thread: what a CPU-time budget counts),
``node_id`` and ``device``. A training that ends with a non-finite loss reports one last
row with ``status: failed`` and its ``failure_reason`` (not retried: the trial's seed is fixed, a
retry would replay it); an exception, or running out of memory, is reported the same way and
then raised, so Ray retries the trial up to ``--max-failures`` times and the searcher knows why.
"""

from __future__ import annotations

import math
import time
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


def rung_spec(settings: dict[str, Any], rung: Any, seed: int, threads: int) -> Any:
    """The proxy of one rung (`train_proxy.proxy_defaults.Rung`) under the search's settings."""
    from train_proxy.trainer import ProxySpec, warmup_epochs

    return ProxySpec(
        resolution=settings["proxy_resolution"],
        epochs=rung.epochs,
        warmup_epochs=warmup_epochs(rung.epochs),  # the recipe docs/fidelity.md measured
        batch_size=settings["batch_size"],
        data_fraction=rung.data_fraction,  # equal to the loaded bundle's: used as it is
        val_fraction=rung.val_fraction,
        width_multiplier=rung.width,
        seed=seed,
        threads=threads,
        device="auto",  # CUDA when Ray gave this trial a GPU, else CPU
    )


def rung_report(rung: Any, result: Any, node_id: str | None, device: str, cpu_seconds: float) -> dict[str, Any]:
    """What the searcher (and ASHA) read of one rung's training."""
    history = result.history
    return {
        "rung": rung.index,
        "budget": rung.budget,  # ASHA's time axis
        "val_acc": float(result.val_acc),
        "train_loss": float(history[-1]["train_loss"]) if history else math.nan,
        "tse": float(sum(h["train_loss_sum"] for h in history)),
        "epochs": len(history),
        "n_train": int(result.n_train),
        "n_val": int(result.n_val),
        "seconds": float(result.train_seconds),
        "cpu_seconds": float(cpu_seconds),
        "node_id": node_id,  # which cluster node trained it (result.json keeps it)
        "device": device,
    }


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
    from results.settings import SearchSettings

    ladder = SearchSettings.from_json(settings).rung_ladder()
    last_rung, last_acc = -1, 0.0

    hooks = hooks or {}
    number = int(config["number"])
    try:
        arch = ArchConfig.from_dict(config["config"])
        attempt = faults.start_attempt(hooks, number, arch, node_id)
        for rung in ladder:
            data = load_cached_data(settings["data"], settings["proxy_resolution"], rung.data_fraction, settings["seed"])
            data = faults.before_training(hooks, number, attempt, data)
            cfg = with_classes(arch, data.num_classes)
            cpu_start = time.process_time()
            result = train_proxy(cfg, rung_spec(settings, rung, int(config["seed"]), threads), data)
            cpu_seconds = time.process_time() - cpu_start
            if result.status == "failed" and (result.failure_reason or "").startswith("out of memory"):
                # Raised, not reported: memory may be free on a retry (trials share a GPU), so Ray
                # retries it up to --max-failures times. A non-finite loss is a result: the trial's
                # seed is fixed, so a retry would replay it.
                raise torch.OutOfMemoryError(result.failure_reason)
            if result.status == "failed":
                break
            last_rung, last_acc = rung.index, float(result.val_acc)
            # ASHA answers here: a trial it stops never returns from this call's next round
            tune.report(rung_report(rung, result, node_id, device, cpu_seconds))
    except Exception as exc:
        reason = f"{type(exc).__name__}: {exc}".splitlines()[0][:500]
        tune.report({"rung": last_rung, "val_acc": last_acc, "status": "failed", "failure_reason": reason,
                     "traceback": traceback.format_exc()[-4000:]})  # fmt: skip
        raise
    if result.status == "failed":
        tune.report({"rung": last_rung, "val_acc": last_acc, "status": "failed",
                     "failure_reason": f"rung {last_rung + 1}: {result.failure_reason or 'training failed'}"})  # fmt: skip
