"""The end of a search: its Pareto front, latency re-measured, configs and model cards exported.

Only trials with status "complete" (trained for every proxy epoch, feasible, not duplicates) are
candidates: pruned trials carry a low-fidelity accuracy and must not sit on the front. The front
is non-dominated in (accuracy up, MACs down), plus predicted latency down when latency is an
objective. When latency was asked for at all, every front member is measured (not predicted) on
the search's latency device at batch 1 with one thread, after the search, with nothing else
running.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from search_space import ArchConfig, analytic_cost
from search_space.blocks import get_block

from ..units import format_count, format_macs
from .run_dir import RunDir, write_json_atomic, write_text_atomic
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
    seed: int | None = None
    epochs: int | None = None
    train_seconds: float | None = None

    @property
    def name(self) -> str:
        return f"trial_{self.number:05d}"


def complete_trials(study: optuna.Study) -> list[FrozenTrial]:
    return [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if t.user_attrs.get("status") == "complete" and t.user_attrs.get("val_acc") is not None
    ]


def non_dominated(points: Sequence[Sequence[float]]) -> list[int]:
    """Indices of the points no other point dominates (every coordinate is minimised)."""
    keep = []
    for i, p in enumerate(points):
        dominated = False
        for j, q in enumerate(points):
            if j != i and all(a <= b for a, b in zip(q, p)) and any(a < b for a, b in zip(q, p)):
                dominated = True
                break
        if not dominated:
            keep.append(i)
    return keep


def front(study: optuna.Study, settings: SearchSettings) -> list[FrontMember]:
    trials = complete_trials(study)
    with_latency = "latency" in settings.objectives

    def point(t: FrozenTrial) -> list[float]:
        p = [-float(t.user_attrs["val_acc"]), float(t.user_attrs["macs"])]
        if with_latency:
            p.append(float(t.user_attrs.get("latency_ms_predicted", float("inf"))))
        return p

    members = []
    seen: set[tuple] = set()
    for i in non_dominated([point(t) for t in trials]):
        t = trials[i]
        key = tuple(point(t))
        if key in seen:  # equal points: keep the earliest trial only
            continue
        seen.add(key)
        cfg = ArchConfig.from_dict(t.user_attrs["config"], source=f"trial {t.number}").replace(name=f"trial_{t.number:05d}")
        members.append(
            FrontMember(
                number=t.number,
                cfg=cfg,
                val_acc=float(t.user_attrs["val_acc"]),
                macs=int(t.user_attrs["macs"]),
                params=int(t.user_attrs["params"]),
                latency_predicted=t.user_attrs.get("latency_ms_predicted"),
                seed=(t.user_attrs.get("proxy") or {}).get("seed"),
                epochs=t.user_attrs.get("epochs_trained"),
                train_seconds=t.user_attrs.get("train_seconds"),
            )
        )
    members.sort(key=lambda m: (m.macs, -m.val_acc))
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


def card(m: FrontMember, settings: SearchSettings, space_name: str) -> str:
    cost = analytic_cost(m.cfg)
    lines = [
        f"# {m.name}",
        "",
        f"Pareto-optimal architecture from `nas search` (trial {m.number}).",
        "",
        "| | |",
        "|---|---|",
        f"| params | {format_count(cost.params)} ({cost.params}) |",
        f"| MACs (\"FLOPs\") at {m.cfg.resolution} px | {format_macs(cost.macs)} ({cost.macs}) |",
    ]
    if m.latency_measured is not None:
        lines.append(f"| latency, measured | {m.latency_measured:.2f} ms ({settings.device}, batch 1, 1 thread, "
                     f"{m.latency_note}) |")
    if m.latency_predicted is not None:
        lines.append(f"| latency, predicted | {m.latency_predicted:.2f} ms |")
    lines += [
        f"| proxy accuracy | {m.val_acc:.4f} ({settings.data}, {settings.proxy_resolution} px, width x{settings.proxy_width:g}, {settings.epochs} epochs, "
        f"batch {settings.batch_size}, data fraction {settings.data_fraction:g}) |",
        f"| trial | {m.number} |",
        f"| seed | {m.seed} (search seed {settings.seed}) |",
        f"| space | {space_name} |",
        "",
        "## Stages",
        "",
        "| stage | block | depth | width | mlp ratio | heads | kv reduction | channel attention |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for i, s in enumerate(m.cfg.stages, 1):
        summary = get_block(s.block).summary(s)
        heads, kv = summary.get("heads", "-"), summary.get("kv_reduction", "-")
        lines.append(f"| {i} | {s.block} | {s.depth} | {s.width} | {s.mlp_ratio:g} | {heads} | {kv} | {s.channel_attention} |")
    lines += [
        "",
        "Rebuild: `nas profile " + f"{m.name}.yaml`, or in Python "
        f"`build_model(ArchConfig.load('{m.name}.yaml'))`. FLOPs means multiply-accumulates (MACs).",
        "",
    ]
    return "\n".join(lines)


def export(run_dir: RunDir, members: list[FrontMember], settings: SearchSettings, study: optuna.Study) -> list[Path]:
    """Write pareto/<name>.yaml and <name>.md, and record the front in run.json and the study."""
    out = run_dir.pareto_dir
    out.mkdir(parents=True, exist_ok=True)
    for stale in list(out.glob("trial_*.yaml")) + list(out.glob("trial_*.md")):
        stale.unlink()  # a resumed run's front replaces the earlier one
    written = []
    for m in members:
        path = out / f"{m.name}.yaml"
        write_text_atomic(path, m.cfg.to_yaml())
        write_text_atomic(out / f"{m.name}.md", card(m, settings, settings.space))
        written.append(path)
        result = run_dir.read_trial_result(m.number) or {}
        if m.latency_measured is not None:
            result["latency_ms_measured"] = m.latency_measured
        result["pareto"] = True
        write_json_atomic(run_dir.trial_dir(m.number) / "result.json", result)
    measured = {str(m.number): m.latency_measured for m in members if m.latency_measured is not None}
    if measured:
        # finished trials cannot take new user attrs; the study keeps the re-measurement instead
        study.set_user_attr("latency_ms_measured", measured)
    study.set_user_attr("pareto", [m.number for m in members])
    return written


def summary(members: list[FrontMember]) -> list[dict[str, Any]]:
    return [
        {
            "number": m.number,
            "name": m.name,
            "val_acc": m.val_acc,
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
    t.add_column("MACs", justify="right")
    t.add_column("params", justify="right")
    if settings.uses_latency:
        t.add_column("latency pred.", justify="right")
        t.add_column(f"latency meas. ({settings.device})", justify="right")
    t.add_column("blocks")
    for m in members:
        row = [str(m.number), f"{m.val_acc:.4f}", format_macs(m.macs), format_count(m.params)]
        if settings.uses_latency:
            row.append(f"{m.latency_predicted:.2f} ms" if m.latency_predicted is not None else "-")
            row.append(f"{m.latency_measured:.2f} ms" if m.latency_measured is not None else "-")
        row.append(",".join(f"{s.block}x{s.depth}" for s in m.cfg.stages))
        t.add_row(*row)
    return t
