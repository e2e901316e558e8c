"""Reading a search run directory (written by `nas search`) into plain dataclasses.

The directory's format (layout, study name, trial statuses and which count as trained, which
are eligible for a front) is `results.run_dir`; its settings are `nas.search.settings`
(``RunSettings``, the search's own settings class read leniently). This module only turns what
is there into `Run` and `TrialRecord`. The study is read where the run keeps it (its journal file or
the database run.json names: `results.storage`). Everything here only reads: no lock is taken and
no file, database table or study is created, so a report can be made while the search is still
writing the directory. Half-written
data is tolerated: Optuna skips a trailing partial journal line, run.json is re-read if it is
caught mid-write, and malformed metric lines are skipped.

Objective names used throughout ``results``: ``acc`` (proxy validation accuracy, maximised),
``macs`` and ``params`` (analytic, at the deploy resolution, minimised), ``latency`` (measured
latency in ms when the Pareto re-measurement recorded one, else the predicted one, minimised),
``latency_measured`` and ``latency_predicted`` (each alone).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from results.run_dir import (
    STUDY_NAME,
    RunDir,
    count_trials,
    counts_as_trained,
    is_eligible,
    measured_rung,
    is_feasible,
    is_interrupted,
    trial_arch_hash,
    trial_status,
)
from .settings import RunSettings, SearchSettings
from search_space import ArchConfig
from search_space.errors import ConfigError, UserError

# objective name -> direction; "acc" is the only maximised one
DIRECTIONS = {
    "acc": "maximize",
    "macs": "minimize",
    "params": "minimize",
    "latency": "minimize",
    "latency_measured": "minimize",
    "latency_predicted": "minimize",
}
LABELS = {
    "acc": "proxy val. accuracy",
    "macs": "MACs",
    "params": "params",
    "latency": "latency (ms)",
    "latency_measured": "measured latency (ms)",
    "latency_predicted": "predicted latency (ms)",
}


@dataclass(frozen=True)
class Fidelity:
    """How cheaply a trial was evaluated: the proxy settings and how far training got."""

    resolution: int | None = None
    epochs: int | None = None  # epochs asked for
    epochs_trained: int | None = None  # epochs done (fewer when ASHA stopped it)
    width: float | None = None  # proxy width multiplier (the proxy's widths = deploy widths x this)
    batch_size: int | None = None
    data: str | None = None
    data_fraction: float | None = None
    seed: int | None = None
    rung: int | None = None  # the rung the accuracy was measured at (0: the lowest); None: no accuracy
    rungs: int | None = None  # of the run
    val_fraction: float | None = None  # share of the validation split the rung scored
    label: str | None = None  # e1-w0.5-f0.1 (the fidelity study's names)

    @property
    def full(self) -> bool:
        """Measured at the run's top rung (the fidelity that decides the front)."""
        return self.rung is not None and self.rungs is not None and self.rung >= self.rungs - 1

    def describe(self) -> str:
        """``rung 2/2 (e1-w0.5-f0.1)``: which fidelity an accuracy comes from, for every display."""
        if self.rung is None:
            return "-"
        where = f"rung {self.rung + 1}/{self.rungs}" if self.rungs else f"rung {self.rung + 1}"
        return f"{where} ({self.label})" if self.label else where


@dataclass(frozen=True)
class TrialRecord:
    """One Optuna trial of a run, with what the search recorded about it.

    ``params`` is the architecture's parameter count (as in the run directory contract); the
    sampler's choices (Optuna's "params") are ``choices``.
    """

    number: int
    state: str  # Optuna state name: COMPLETE, PRUNED, FAIL, RUNNING, WAITING
    status: str  # complete | pruned | failed | infeasible | duplicate | running | waiting
    values: tuple[float, ...] | None
    choices: Mapping[str, Any]
    constraints: Mapping[str, float]
    config: ArchConfig | None
    arch_hash: str | None = None  # in the current version, whatever the run stored (`run_dir.trial_arch_hash`)
    macs: int | None = None
    params: int | None = None
    latency_ms_predicted: float | None = None
    latency_ms_measured: float | None = None
    val_acc: float | None = None
    best_val_acc: float | None = None
    train_seconds: float | None = None
    failure_reason: str | None = None
    duplicate_of: int | None = None
    fidelity: Fidelity = field(default_factory=Fidelity)
    history: tuple[Mapping[str, Any], ...] = ()  # per-epoch rows of trials/NNNNN/metrics.jsonl
    user_attrs: Mapping[str, Any] = field(default_factory=dict)
    datetime_start: str | None = None
    datetime_complete: str | None = None

    @property
    def feasible(self) -> bool:
        return is_feasible(self.constraints)

    @property
    def eligible(self) -> bool:
        """Measured at a rung, feasible and not a duplicate (`results.run_dir.is_eligible`)."""
        return is_eligible(self.state, self.status, self.constraints, self.user_attrs)

    @property
    def rung(self) -> int | None:
        """The rung its accuracy comes from (`results.run_dir.measured_rung`)."""
        return self.fidelity.rung

    @property
    def trained(self) -> bool:
        """Counts against --trials (`results.run_dir.counts_as_trained`)."""
        return counts_as_trained(self.status, self.user_attrs)

    @property
    def interrupted(self) -> bool:
        """Failed because a killed search left it running (re-queued by --resume)."""
        return self.status == "failed" and is_interrupted(self.user_attrs)

    @property
    def latency_ms(self) -> float | None:
        return self.latency_ms_measured if self.latency_ms_measured is not None else self.latency_ms_predicted

    def metric(self, name: str) -> float | None:
        """The value of objective ``name`` (see the module docstring), None if not recorded."""
        value: Any
        if name == "acc":
            value = self.val_acc
        elif name == "macs":
            value = self.macs
        elif name == "params":
            value = self.params
        elif name == "latency":
            value = self.latency_ms
        elif name == "latency_measured":
            value = self.latency_ms_measured
        elif name == "latency_predicted":
            value = self.latency_ms_predicted
        else:
            raise UserError(f"unknown objective '{name}' (choose from {', '.join(DIRECTIONS)})")
        if value is None:
            return None
        value = float(value)
        return value if math.isfinite(value) else None


@dataclass(frozen=True)
class FinalRecord:
    """A full training of a trial (`nas finalize`), from ``RUN_DIR/final/<trial>/result.json``."""

    number: int
    path: Path
    status: str
    val_acc: float | None
    best_val_acc: float | None
    test_acc: float | None
    epochs: int
    epochs_requested: int
    data: str


@dataclass(frozen=True)
class Run:
    """A run directory as a reader sees it: settings, status, the study's trials, what it recorded.

    Loaded by `load_run`; nothing here writes into the run directory.
    """

    path: Path
    status: str
    settings: RunSettings
    directions: tuple[str, ...]  # of the study, in settings.objectives order
    trials: tuple[TrialRecord, ...]
    command: tuple[str, ...] = ()
    created: str | None = None
    updated: str | None = None
    versions: Mapping[str, Any] = field(default_factory=dict)
    counts: Mapping[str, int] = field(default_factory=dict)  # as run.json recorded them
    resources: Mapping[str, Any] = field(default_factory=dict)  # concurrency, threads, GPUs, nodes, if recorded
    pareto_files: tuple[Path, ...] = ()  # pareto/*.yaml written by the search
    pareto_numbers: tuple[int, ...] = ()  # the front the search recorded in run.json

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def objectives(self) -> tuple[str, ...]:
        return self.settings.objectives

    def trial(self, number: int) -> TrialRecord:
        for t in self.trials:
            if t.number == number:
                return t
        numbers = [t.number for t in self.trials]
        span = f"trials 0..{max(numbers)}" if numbers else "no trials yet"
        raise UserError(f"{self.path}: no trial {number} in this run ({span})")

    def eligible(self) -> list[TrialRecord]:
        return [t for t in self.trials if t.eligible]

    def trial_counts(self) -> dict[str, int]:
        """Trial counts by status, counted from the study (run.json's may lag a running search):
        `results.run_dir.count_trials`, the counts `nas status` and `nas runs` show."""
        return count_trials((t.status, t.user_attrs) for t in self.trials)

    @property
    def trained(self) -> int:
        """Trials that count against --trials (interrupted and untrained ones do not)."""
        return self.trial_counts()["trained"]

    @property
    def display_status(self) -> str:
        """run.json's status, with a "running" run whose search process is gone shown as interrupted."""
        return RunDir(self.path).shown_status(self.status)

    def best(self, objective: str = "acc") -> TrialRecord | None:
        """The eligible trial best in ``objective``; ties go to fewer MACs, then the lower number."""
        ranked = rank_trials(self.eligible(), objective)
        return ranked[0] if ranked else None

    def trial_dir(self, number: int) -> Path:
        return RunDir(self.path).trial_dir(number)

    def study(self) -> Any:
        """The Optuna study itself (for importances and Optuna's own tools), wherever the run keeps it."""
        return RunDir(self.path).storage().load_study()

    def finals(self) -> list[FinalRecord]:
        """Finished full trainings of this run's trials (`nas finalize`), by trial number."""
        from train_proxy.checkpoint import TrainingDir

        final_dir = RunDir(self.path).final_dir
        records = []
        for d in sorted(final_dir.iterdir()) if final_dir.is_dir() else ():
            if not d.name.isdigit() or d.is_symlink():
                continue
            r = TrainingDir(d).result()
            if not isinstance(r, Mapping):
                continue  # not finished (or unreadable): not a final result
            records.append(FinalRecord(
                number=int(d.name), path=d, status=str(r.get("status")), val_acc=_float(r.get("val_acc")),
                best_val_acc=_float(r.get("best_val_acc")), test_acc=_float(r.get("test_acc")),
                epochs=_int(r.get("epochs")) or 0, epochs_requested=_int(r.get("epochs_requested")) or 0,
                data=str(r.get("data", "-")),
            ))  # fmt: skip
        return records


def rank_trials(trials: Sequence[TrialRecord], objective: str = "acc") -> list[TrialRecord]:
    """Best first by ``objective``; ties broken by fewer MACs, then by the lower trial number.
    By accuracy, a trial measured at a higher rung ranks above every trial of lower rungs
    (accuracies are only compared within a rung)."""
    sign = -1.0 if DIRECTIONS[objective] == "maximize" else 1.0
    usable = [t for t in trials if t.metric(objective) is not None]

    def key(t: TrialRecord) -> tuple:
        rung = -(t.rung or 0) if objective == "acc" else 0
        return (rung, sign * t.metric(objective), t.macs if t.macs is not None else math.inf, t.number)  # type: ignore[operator]

    return sorted(usable, key=key)


# -- loading -------------------------------------------------------------------------------------


def is_run_dir(path: str | Path) -> bool:
    """Whether ``path`` is a directory `nas search` wrote (it holds run.json or a study journal)."""
    rd = RunDir(Path(path))
    return rd.path.is_dir() and (rd.run_json.is_file() or rd.journal.is_file())


def load_run(path: str | Path, storage: Any = None) -> Run:
    """Load a run directory. A missing path or a directory that is not a run is a `UserError`.

    ``storage``: the run's `results.storage.RunStorage` when the caller holds it already (the
    search, whose database URL may carry a password); by default the one run.json names."""
    path = Path(path)
    rd = RunDir(path)
    if not path.exists():
        raise UserError(f"{path}: no such run directory")
    if not path.is_dir():
        raise UserError(f"{path}: not a directory (expected a run directory written by nas search)")
    if not is_run_dir(path):
        raise UserError(f"{path}: not a run directory (no run.json or study.journal; made by nas search)")
    meta = rd.read_run_json(strict=False) if rd.run_json.is_file() else {}
    settings = RunSettings.from_run_json(meta.get("settings"))
    where = storage or rd.storage(meta=meta)
    study = where.load_study()  # the journal, or the database run.json names
    if study is None and rd.recorded_trials(meta):  # never shown as an empty run
        raise UserError(f"{path}: the run's study ({where.describe()}) is missing, though the run recorded "
                        f"{rd.recorded_trials(meta)} trial(s)")  # fmt: skip
    directions: tuple[str, ...]
    if study is not None:
        directions = tuple(d.name.lower() for d in study.directions)
    else:
        directions = tuple(DIRECTIONS.get(o, "minimize") for o in settings.objectives)
    if not meta.get("settings") and study is not None:  # journal only: infer the objectives
        settings = RunSettings.from_run_json({"objectives": _guess_objectives(len(directions))})
    trials = study_records(study, path, settings) if study is not None else ()
    pareto_files = tuple(sorted(rd.pareto_dir.glob("*.yaml"))) if rd.pareto_dir.is_dir() else ()
    return Run(
        path=path,
        status=str(meta.get("status", "unknown")),
        settings=settings,
        directions=directions,
        trials=trials,
        command=tuple(str(a) for a in meta.get("command") or ()),
        created=meta.get("created"),
        updated=meta.get("updated"),
        versions=dict(meta.get("versions") or {}),
        counts=dict(meta.get("counts") or {}),
        resources=dict(meta.get("resources") or {}) if isinstance(meta.get("resources"), Mapping) else {},
        pareto_files=pareto_files,
        pareto_numbers=tuple(
            int(p["number"]) for p in meta.get("pareto") or ()
            if isinstance(p, Mapping) and _int(p.get("number")) is not None
        ),
    )


def study_records(study: Any, run_path: Path, settings: SearchSettings) -> tuple[TrialRecord, ...]:
    """Every trial of the study as a `TrialRecord` (also how `nas search` reads its own study).

    `nas search` re-measures its front after the trials finished (when they can no longer take
    user attrs), so the measurements live in a study attr {number: ms} and in trials/*/result.json.
    """
    measured = study.user_attrs.get("latency_ms_measured")
    measured = measured if isinstance(measured, Mapping) else {}
    frozen: Iterable[Any] = study.get_trials(deepcopy=False)
    return tuple(trial_record(t, run_path, settings, _float(measured.get(str(t.number)))) for t in frozen)


def _guess_objectives(n: int) -> tuple[str, ...]:
    return ("acc", "macs", "latency")[: max(1, n)]


def load_study(source: Any) -> Any:
    """A run's study, or None when there is none yet: ``source`` is a `results.storage.RunStorage`
    (the journal or the database a run names) or a run's journal path (RUN_DIR/study.journal)."""
    from results.storage import RunStorage

    if not isinstance(source, RunStorage):
        source = RunStorage(RunDir(Path(source).parent), STUDY_NAME)
    return source.load_study()


def trial_record(t: Any, run_path: Path, settings: SearchSettings, measured_ms: float | None = None) -> TrialRecord:
    """One Optuna FrozenTrial of a run as a `TrialRecord`."""
    attrs = dict(t.user_attrs)
    if measured_ms is None and attrs.get("latency_ms_measured") is None:
        measured_ms = _float((RunDir(run_path).read_trial_result(t.number) or {}).get("latency_ms_measured"))
    state = t.state.name
    status = trial_status(state, attrs, t.constraints)
    config = _config(attrs.get("config"), run_path, t.number)
    proxy = attrs.get("proxy") if isinstance(attrs.get("proxy"), Mapping) else {}
    rungs = _int(settings.rungs) if settings.rungs is not None else None
    rung = measured_rung(status, attrs, rungs)
    ladder = proxy.get("rungs") if isinstance(proxy.get("rungs"), list) else []
    at = ladder[rung] if rung is not None and rung < len(ladder) and isinstance(ladder[rung], Mapping) else {}
    fidelity = Fidelity(
        resolution=_int(proxy.get("resolution", settings.proxy_resolution)),
        epochs=_int(at.get("epochs", proxy.get("epochs", settings.epochs))),
        epochs_trained=_int(attrs.get("epochs_trained")),
        width=_float(at.get("width_multiplier", proxy.get("width_multiplier", settings.proxy_width))),
        batch_size=_int(proxy.get("batch_size", settings.batch_size)),
        data=proxy.get("data", settings.data),
        data_fraction=_float(at.get("data_fraction", proxy.get("data_fraction", settings.data_fraction))),
        seed=_int(proxy.get("seed")),
        rung=rung,
        rungs=rungs if rungs is not None else (len(ladder) or None),
        val_fraction=_float(at.get("val_fraction", 1.0)),
        label=at.get("label") if isinstance(at.get("label"), str) else None,
    )
    values = tuple(float(v) for v in t.values) if t.values is not None else None
    val_acc = _float(attrs.get("val_acc"))
    if val_acc is None and values is not None and status == "complete" and "acc" in settings.objectives:
        idx = settings.objectives.index("acc")
        val_acc = values[idx] if idx < len(values) else None
    return TrialRecord(
        number=t.number,
        state=state,
        status=status,
        values=values,
        choices=dict(t.params),
        constraints=dict(t.constraints),
        config=config,
        arch_hash=trial_arch_hash(attrs, config),
        macs=_int(attrs.get("macs")),
        params=_int(attrs.get("params")),
        latency_ms_predicted=_float(attrs.get("latency_ms_predicted")),
        latency_ms_measured=_float(attrs.get("latency_ms_measured", measured_ms)),
        val_acc=val_acc,
        best_val_acc=_float(attrs.get("best_val_acc")),
        train_seconds=_float(attrs.get("train_seconds")),
        failure_reason=attrs.get("failure_reason"),
        duplicate_of=_int(attrs.get("duplicate_of")),
        fidelity=fidelity,
        history=tuple(RunDir(run_path).read_trial_metrics(t.number)),
        user_attrs=attrs,
        datetime_start=t.datetime_start.isoformat(timespec="seconds") if t.datetime_start else None,
        datetime_complete=t.datetime_complete.isoformat(timespec="seconds") if t.datetime_complete else None,
    )


def _config(raw: Any, run_path: Path, number: int) -> ArchConfig | None:
    """The trial's ArchConfig from its user attr, else from trials/NNNNN/config.yaml."""
    source = f"{run_path.name} trial {number}"
    if isinstance(raw, Mapping):
        try:
            return ArchConfig.from_dict(raw, source=source)
        except (ConfigError, TypeError):
            pass
    path = RunDir(run_path).trial_config(number)
    if path.is_file():
        try:
            return ArchConfig.load(path)
        except ConfigError:
            return None
    return None


def _int(value: Any) -> int | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _float(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None
