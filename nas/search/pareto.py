"""The end of a search: its Pareto front, latency re-measured, configs and model cards exported.

The front is `results.pareto.run_front`'s, computed on the study's trials read as
`results.run.TrialRecord`s (one set of front rules for the search and every reader): complete
feasible trials measured at a rung, non-dominated in proxy accuracy up and MACs down, plus predicted
latency down when latency is an objective, ties kept, accuracy compared only within a rung (the
rung rule, `results.pareto.rung_front`). When latency was asked for at all, every front member
is then measured (not predicted) on the search's latency device at batch 1 with one thread,
after the search, with nothing else running. Model cards are `results.cards.model_card`'s.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

from results.cards import ArtifactInfo, model_card
from results.pareto import front_objectives, pareto_front
from results.run import load_run, study_records
from search_space import ArchConfig
from search_space.files import make_dirs, write_atomic

from search_space.units import format_count, format_macs
from results.run_dir import RunDir
from .settings import SearchSettings


@dataclass
class FrontMember:
    number: int
    cfg: ArchConfig
    val_acc: float
    macs: int
    params: int
    latency_predicted: float | None
    latency_measured: float | None = None
    latency_note: str = ""
    rung: int | None = None  # the fidelity rung its accuracy comes from (0: the lowest)
    fidelity: str = ""  # `results.run.Fidelity.describe`: "rung 2/2 (e1-w0.5-f0.1)"

    @property
    def name(self) -> str:
        return f"trial_{self.number:05d}"


def front(study: optuna.Study, settings: SearchSettings, run_dir: RunDir) -> list[FrontMember]:
    records = study_records(study, run_dir.path, settings)
    members = []
    for t in pareto_front(records, front_objectives(settings.objectives, records)):
        assert t.config is not None and t.val_acc is not None and t.macs is not None and t.params is not None
        members.append(
            FrontMember(
                number=t.number,
                cfg=t.config.replace(name=f"trial_{t.number:05d}"),
                val_acc=t.val_acc,
                macs=t.macs,
                params=t.params,
                latency_predicted=t.latency_ms_predicted,
                rung=t.rung,
                fidelity=t.fidelity.describe(),
            )
        )
    return members


def latency_clock(settings: SearchSettings) -> str:
    """On the CPU, time the measuring thread's CPU time: one thread at batch 1 is exactly the
    latency on an idle core, and other load on the machine (a shared laptop, the search's own
    workers shutting down) cannot inflate it. On CUDA, synchronised wall time."""
    return "cpu" if settings.device == "cpu" else "wall"


def measure_front(members: list[FrontMember], settings: SearchSettings) -> None:
    """Measure each member's latency at deploy resolution (batch 1, one thread)."""
    from train_proxy.latency import measure_latency

    for m in members:
        result = measure_latency(m.cfg, device=settings.device, batch_size=1, threads=1, clock=latency_clock(settings))
        m.latency_measured = float(result.median_ms)
        m.latency_note = f"median of {result.repeats} after {result.warmup} warm-up, {latency_clock(settings)} clock"


def export(run_dir: RunDir, members: list[FrontMember], study: optuna.Study) -> list[Path]:
    """Write pareto/<name>.yaml and record the front in result.json and the study (the cards
    follow with `write_cards` once run.json says how the search ended)."""
    out = run_dir.pareto_dir
    make_dirs(out, root=run_dir.path)
    for stale in list(out.glob("trial_*.yaml")) + list(out.glob("trial_*.md")):
        stale.unlink()  # a resumed run's front replaces the earlier one
    written = []
    for m in members:
        path = out / f"{m.name}.yaml"
        write_atomic(path, m.cfg.to_yaml(), root=run_dir.path)
        written.append(path)
        result = run_dir.read_trial_result(m.number) or {}
        if m.latency_measured is not None:
            result["latency_ms_measured"] = m.latency_measured
        result["pareto"] = True
        run_dir.write_trial_result(m.number, result)
    measured = {str(m.number): m.latency_measured for m in members if m.latency_measured is not None}
    if measured:
        # finished trials cannot take new user attrs; the study keeps the re-measurement instead
        study.set_user_attr("latency_ms_measured", measured)
    study.set_user_attr("pareto", [m.number for m in members])
    return written


def write_cards(run_dir: RunDir, members: list[FrontMember], storage: Any = None) -> None:
    """pareto/<name>.md for each member: the model card `nas export` writes, read back from the
    run directory as every reader sees it (``storage``: the search's own `storage.RunStorage`)."""
    run = load_run(run_dir.path, storage)
    for m in members:
        yaml_path = run_dir.pareto_dir / f"{m.name}.yaml"
        text = model_card(run, run.trial(m.number), m.cfg, [ArtifactInfo("yaml", yaml_path)], weights_seed=0)
        write_atomic(yaml_path.with_suffix(".md"), text, root=run_dir.path)


def summary(members: list[FrontMember]) -> list[dict[str, Any]]:
    return [
        {
            "number": m.number,
            "name": m.name,
            "val_acc": m.val_acc,
            "rung": m.rung,
            "fidelity": m.fidelity,
            "macs": m.macs,
            "params": m.params,
            "latency_ms_predicted": m.latency_predicted,
            "latency_ms_measured": m.latency_measured,
        }
        for m in members
    ]


def table(members: list[FrontMember], settings: SearchSettings) -> Any:
    from rich.table import Table

    t = Table(title=f"Pareto front ({len(members)} architectures; FLOPs = MACs at deploy resolution)")
    t.add_column("trial", justify="right")
    t.add_column("proxy acc", justify="right")
    t.add_column("at", justify="left")  # the rung the accuracy comes from
    t.add_column("MACs", justify="right")
    t.add_column("params", justify="right")
    target = settings.uses_latency and settings.latency_table is not None
    if settings.uses_latency:
        t.add_column("latency pred. (target table)" if target else "latency pred.", justify="right")
        if not target:  # a target table's device is elsewhere: nothing to measure here
            t.add_column(f"latency meas. ({settings.device})", justify="right")
    t.add_column("blocks")
    for m in members:
        row = [str(m.number), f"{m.val_acc:.4f}", m.fidelity, format_macs(m.macs), format_count(m.params)]
        if settings.uses_latency:
            row.append(f"{m.latency_predicted:.2f} ms" if m.latency_predicted is not None else "-")
            if not target:
                row.append(f"{m.latency_measured:.2f} ms" if m.latency_measured is not None else "-")
        row.append(",".join(f"{s.block}x{s.depth}" for s in m.cfg.stages))
        t.add_row(*row)
    return t
