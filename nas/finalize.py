"""`nas finalize`: train a search's chosen architectures fully, each into ``RUN_DIR/final/<trial>/``.

Each final training is a kept training (`train_proxy.keep`, the same as ``nas train --save``):
the trial's architecture at full width on all the training data, at the run's proxy resolution
unless told otherwise (``data_fraction`` and ``width`` make it smaller, as ``nas train``'s flags
do), saved after every epoch. Running the command again continues unfinished
trainings from their last epoch and leaves finished ones alone. Several trainings run at once
as Ray tasks (one CPU thread each by default; a share of a GPU where Ray sees one), like a search.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from results.cards import trained_card
from results.export import select_trials
from results.run import Run, TrialRecord, load_run
from search_space.errors import UserError
from train_proxy import keep as kept
from train_proxy import proxy_defaults as D
from train_proxy.checkpoint import SETTINGS, TrainingDir
from train_proxy.data import DataBundle, load_data
from train_proxy.trainer import ProxySpec, resolve_device

from results.run_dir import RunDir, now_iso, versions

# spec fields that may differ when a final training is continued (they do not change what is trained)
RUNTIME_FIELDS = ("threads", "device")


@dataclass(frozen=True)
class FinalizeOptions:
    """A full training's options (`train_proxy.proxy_defaults`: FULL_EPOCHS, the training batch...)."""

    epochs: int = D.FULL_EPOCHS
    resolution: int | None = None  # default: the run's proxy resolution
    data: str | None = None  # default: the run's data
    data_fraction: float = D.FULL_DATA_FRACTION  # of the training split: all of it (less: a smaller, quicker look)
    width: float = D.FULL_WIDTH  # width multiplier: the network's own widths
    batch_size: int = D.BATCH_SIZE
    lr: float = D.LR
    seed: int = D.SEED
    drop_path: float | None = None  # None: the config's own rate (a full training)
    device: str = D.DEVICE
    precision: str = D.PRECISION


@dataclass
class Job:
    trial: TrialRecord  # a complete trial: its config is recorded (`select_trials` checks)
    path: Path
    state: str  # new | resume | done


def plan(run_path: str | Path, trials: Sequence[int] | None, top: int | None, options: FinalizeOptions,
         threads: int) -> tuple[Run, list[Job], ProxySpec, str, DataBundle]:  # fmt: skip
    """Everything checked, nothing written: the run, the jobs, the spec and the loaded data."""
    run = load_run(run_path)
    chosen = select_trials(run, trials, top)
    s = run.settings
    data = options.data or s.data
    resolution = options.resolution or s.proxy_resolution
    resolve_device(options.device)
    for problem in (D.fraction_problem(options.data_fraction), D.width_problem(options.width)):
        if problem:
            raise UserError(f"finalize: data fraction {options.data_fraction}, width {options.width}: {problem}")
    spec_fields = dict(resolution=resolution, epochs=options.epochs, batch_size=options.batch_size,
                       data_fraction=options.data_fraction, width_multiplier=options.width, seed=options.seed,
                       lr=options.lr, threads=threads, device=options.device, precision=options.precision,
                       drop_path_rate=options.drop_path)  # fmt: skip
    spec = ProxySpec(**spec_fields)
    bundle = load_data(data, resolution, fraction=options.data_fraction)
    rd = RunDir(run.path)
    jobs = []
    for t in chosen:
        assert t.config is not None
        path = rd.final_trial_dir(t.number)
        for part in (rd.final_dir, path):  # every component below the run directory
            if part.is_symlink():
                raise UserError(f"{part}: is a symbolic link; refusing to train into it")
        if (path / SETTINGS).exists():
            keep = TrainingDir.open(path, flag="final", root=run.path)
            _check_same(keep, spec, data, t.number)
            result = keep.result()
            state = "done" if result is not None and result.get("status") == "ok" else "resume"
        elif path.exists() and any(path.iterdir()):
            raise UserError(f"{path}: exists, is not empty and holds no training; move it away")
        else:
            state = "new"
        jobs.append(Job(t, path, state))
    return run, jobs, spec, data, bundle


def _check_same(keep: TrainingDir, spec: ProxySpec, data: str, number: int) -> None:
    saved = kept.saved_spec(keep).to_dict()
    wanted = spec.to_dict()
    differ = [k for k in wanted if k not in RUNTIME_FIELDS and saved.get(k) != wanted[k]]
    if keep.settings().get("data") != data:
        differ.append("data")
    if differ:
        shown = ", ".join(f"{k} {saved.get(k, keep.settings().get(k))!r}" for k in differ)
        raise UserError(f"trial {number} is already being finalised with other settings ({shown}); "
                        f"give the same options or move {keep.path} away")  # fmt: skip


def start_new(jobs: Sequence[Job], spec: ProxySpec, data: str, bundle: DataBundle, run: Run, command: str) -> None:
    for job in jobs:
        if job.state != "new":
            continue
        keep = TrainingDir.create(job.path, root=run.path)
        extra = {"model": f"{run.path} trial {job.trial.number}", "command": command, "created": now_iso(),
                 "versions": versions(), "run": str(run.path), "trial": job.trial.number,
                 "proxy_val_acc": job.trial.val_acc}  # fmt: skip
        assert job.trial.config is not None
        kept.start(keep, job.trial.config, spec, data, bundle, evaluate_test=bundle.test is not None,
                   extra=extra)  # fmt: skip


def train_all(jobs: Sequence[Job], concurrency: int, threads: int, gpus_per_job: float, bundle: DataBundle,
              report: Callable[[Job, dict[str, Any] | None, str | None], None]) -> None:  # fmt: skip
    """Train every unfinished job to its end; ``report(job, result, error)`` as each one ends."""
    todo = [j for j in jobs if j.state != "done"]
    if concurrency <= 1 or len(todo) <= 1:
        for job in todo:
            try:
                report(job, kept.run(TrainingDir.open(job.path, flag="final", root=_run_of(job)), bundle, card=trained_card), None)
            except UserError as exc:
                report(job, None, str(exc))
        return
    import ray

    remote = ray.remote(num_cpus=threads, num_gpus=gpus_per_job, max_retries=0)(_train_in_worker)
    pending = {remote.remote(str(job.path), str(_run_of(job))): job for job in todo}
    while pending:
        done, _ = ray.wait(list(pending), num_returns=1)
        job = pending.pop(done[0])
        try:
            report(job, ray.get(done[0]), None)
        except Exception as exc:  # the task's error, re-raised by ray.get
            cause = getattr(exc, "cause", None) or exc
            report(job, None, f"{type(cause).__name__}: {str(cause).strip().splitlines()[0] if str(cause).strip() else ''}")


def _run_of(job: Job) -> Path:
    """The run directory a final training lives in (RUN/final/NNNNN): the root of its writes."""
    return job.path.parent.parent


def _train_in_worker(path: str, root: str) -> dict[str, Any]:
    # the trainer pins the saved spec's thread count itself
    return kept.run(TrainingDir.open(path, flag="final", root=root), card=trained_card)
