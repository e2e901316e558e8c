"""Where a scaled family's base comes from: a config, a trial of a search run, or the latest run.

Order: ``--config NAME|YAML``; else ``--from RUN_DIR [--trial N]``; else the most recent finished
run under ``runs/`` (the runs `nas runs` lists). Without ``--trial`` the pick is the run's best
trial on its own Pareto front (by the objectives the run searched): the highest proxy accuracy,
ties to fewer MACs, then the lower trial number. The base is the trial's stored architecture,
which is the deploy one (the search's resolution, full width, the space's classes); the proxy's
low resolution and narrow width never reach the stored config.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from results.run_dir import COUNT_KEYS
from results.pareto import run_front
from results.run import Run, TrialRecord, is_run_dir, load_run
from search_space import ArchConfig, UserError, resolve_config
from search_space.text import printable

from search_space.units import format_macs

DEFAULT_RUNS = Path("runs")
PICK_RULE = "highest proxy accuracy on the run's Pareto front, ties to fewer MACs, then the lower trial number"
HOW_TO_GIVE_A_BASE = "give --config NAME|YAML (a zoo model or model config) or --from RUN_DIR (a nas search run)"


@dataclass(frozen=True)
class Provenance:
    """Which run and trial a base architecture came from, and why that trial."""

    run: str  # the run directory as the user gave it (or as found under runs/)
    run_status: str
    trial: int
    val_acc: float | None
    macs: int | None
    objectives: tuple[str, ...]
    chosen_by: str  # "--trial" or "pareto"
    latest_run: bool = False  # the run was not named: the most recent finished one under runs/
    proxy_resolution: int | None = None
    proxy_epochs: int | None = None
    proxy_data: str | None = None
    run_path: str = ""  # resolved, for files read elsewhere later

    @property
    def reason(self) -> str:
        if self.chosen_by == "--trial":
            rule = "given with --trial"
        else:
            rule = f"the highest proxy accuracy on its Pareto front ({', '.join(self.objectives)}), ties to fewer MACs"
        if self.latest_run:
            rule += f"; the most recent finished run under {DEFAULT_RUNS}/"
        return rule

    def describe(self) -> str:
        """One line: which run and trial, its proxy accuracy, and why it was picked."""
        acc = f"proxy acc {self.val_acc:.4f}" if self.val_acc is not None else "no proxy accuracy"
        macs = f", {format_macs(self.macs)} MACs" if self.macs is not None else ""
        return f"base: run {self.run} trial {self.trial} ({acc}{macs}); {self.reason}"

    def proxy_text(self) -> str:
        parts = []
        if self.proxy_resolution is not None:
            parts.append(f"{self.proxy_resolution} px")
        if self.proxy_epochs is not None:
            parts.append(f"{self.proxy_epochs} epoch{'s' if self.proxy_epochs != 1 else ''}")
        if self.proxy_data:
            parts.append(f"data {self.proxy_data}")
        return ", ".join(parts)

    def comment_lines(self) -> list[str]:
        """Header lines for a written YAML (each starts with '# ')."""
        lines = [f"# Base: trial {self.trial} of search run {self.run} (status {self.run_status})."]
        if self.val_acc is not None:
            proxy = f" ({self.proxy_text()})" if self.proxy_text() else ""
            lines.append(f"# Proxy validation accuracy of the base: {self.val_acc:.4f}{proxy}; {self.reason}.")
        return lines

    def to_dict(self) -> dict[str, Any]:
        return {
            "run": self.run,
            "run_path": self.run_path,
            "run_status": self.run_status,
            "trial": self.trial,
            "val_acc": self.val_acc,
            "macs": self.macs,
            "objectives": list(self.objectives),
            "chosen_by": self.chosen_by,
            "latest_run": self.latest_run,
            "rule": PICK_RULE if self.chosen_by != "--trial" else "given with --trial",
            "proxy": {"resolution": self.proxy_resolution, "epochs": self.proxy_epochs, "data": self.proxy_data},
        }


@dataclass(frozen=True)
class Base:
    config: ArchConfig
    source: Provenance | None = None  # None: from --config


def resolve_base(
    config: str | None, from_dir: str | None, trial: int | None, runs_dir: Path = DEFAULT_RUNS
) -> Base:
    """The base of `scaling expand` / `scaling family`, in the documented order."""
    if config is not None:
        if trial is not None:
            raise UserError("--trial picks a trial of a run: use it with --from RUN_DIR, not with --config")
        return Base(resolve_config(config))
    if from_dir is not None:
        try:
            run = load_run(from_dir)
        except UserError as exc:  # it names the path as given: keep the message on one line
            raise UserError(printable(str(exc))) from None
        return base_from_run(run, trial, display=from_dir)
    run = latest_finished_run(runs_dir)
    return base_from_run(run, trial, display=str(run.path), latest_run=True)


def base_from_run(run: Run, number: int | None, *, display: str, latest_run: bool = False) -> Base:
    chosen_by = "pareto"
    if number is not None:
        picked = run.trial(number)  # a number not in the run is a UserError naming the span
        if not picked.eligible:
            raise UserError(
                f"{display}: trial {number} is {picked.status}, not a complete feasible trial "
                f"(complete feasible trials: {_numbers(run.eligible())})"
            )
        chosen_by = "--trial"
    else:
        picked = best_on_front(run, display)
    if picked.config is None:
        raise UserError(f"{display}: trial {picked.number} has no stored architecture (config.yaml missing)")
    epochs = picked.fidelity.epochs_trained if picked.fidelity.epochs_trained is not None else picked.fidelity.epochs
    source = Provenance(
        run=printable(display),
        run_status=run.status,
        trial=picked.number,
        val_acc=picked.val_acc,
        macs=picked.macs,
        objectives=tuple(run.settings.objectives),
        chosen_by=chosen_by,
        latest_run=latest_run,
        proxy_resolution=picked.fidelity.resolution,
        proxy_epochs=epochs,
        proxy_data=picked.fidelity.data,
        run_path=str(run.path.resolve()),
    )
    return Base(picked.config, source)


def best_on_front(run: Run, display: str) -> TrialRecord:
    front = run_front(run)
    if not front:
        counts = run.trial_counts()
        detail = ", ".join(f"{k} {counts[k]}" for k in COUNT_KEYS if counts[k])
        raise UserError(
            f"{display}: no complete feasible trial to scale ({detail or 'no trials'}); "
            "pick another run with --from or give --config"
        )

    def key(t: TrialRecord) -> tuple[float, float, int]:
        acc = t.val_acc if t.val_acc is not None else -math.inf
        return (-acc, t.macs if t.macs is not None else math.inf, t.number)

    return min(front, key=key)


def latest_finished_run(runs_dir: Path = DEFAULT_RUNS) -> Run:
    """The finished run under ``runs_dir`` updated last; a one-line UserError when there is none."""
    if not runs_dir.is_dir():
        raise UserError(f"no base model: {HOW_TO_GIVE_A_BASE}; no {runs_dir}/ here to take the latest run from")
    paths = [runs_dir] if is_run_dir(runs_dir) else sorted(p for p in runs_dir.iterdir() if is_run_dir(p))
    finished: list[Run] = []
    unfinished = 0
    for path in paths:
        try:
            run = load_run(path)
        except UserError:  # a damaged run is skipped, as `nas runs` lists it as unreadable
            continue
        if run.status == "finished":
            finished.append(run)
        else:
            unfinished += 1
    if not finished:
        others = f" ({unfinished} not finished)" if unfinished else ""
        raise UserError(f"no base model: {HOW_TO_GIVE_A_BASE}; no finished run under {runs_dir}/{others}")
    return max(finished, key=lambda r: (_when(r), r.name))


def _when(run: Run) -> datetime:
    for stamp in (run.updated, run.created):
        if stamp:
            try:
                moment = datetime.fromisoformat(stamp)
            except ValueError:
                continue
            return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
    return datetime.fromtimestamp(run.path.stat().st_mtime, tz=timezone.utc)


def _numbers(trials: list[TrialRecord]) -> str:
    return ", ".join(str(t.number) for t in trials) or "none"
