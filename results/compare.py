"""Comparing two runs: front against front, hypervolume ratio, coverage.

Both fronts are measured against one reference point derived from both runs (`reference_point`:
accuracy 0, the larger of the two MAC budgets, for other costs the larger limit or 1.1 x the
largest value seen in either run), so the ratio compares like with like even when the budgets
differ. The ratio is HV(A) / HV(B): above 1, A's front dominates more of the objective space.

Coverage C(A, B) is the share of B's front that some member of A's front dominates or equals
(Zitzler's set coverage); it is not symmetric, so both directions are reported.

Accuracies are only comparable when measured alike: two runs whose proxies differ (data, epochs,
resolution, width, data fraction, batch, rungs) are compared all the same, with one line saying
how they differ (`proxy_differences`). `finals_notice` is the same line for the full trainings of
one run (`nas finalize`) that the report sets against its proxy accuracies.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from .pareto import (
    directions_of,
    front_hypervolume,
    normalized_hypervolume,
    pareto_front,
    reference_point,
)
from .run import Run, TrialRecord, load_run


@dataclass(frozen=True)
class Comparison:
    """Two runs' fronts against one reference point: hypervolumes, their ratio and coverage."""

    run_a: Run
    run_b: Run
    objectives: tuple[str, ...]
    reference: tuple[float, ...]
    front_a: tuple[TrialRecord, ...]
    front_b: tuple[TrialRecord, ...]
    hv_a: float
    hv_b: float
    coverage_a_over_b: float | None  # share of B's front weakly dominated by A's front
    coverage_b_over_a: float | None
    differences: tuple[str, ...] = field(default=())  # how the two runs' proxies differ (`proxy_differences`)

    @property
    def notice(self) -> str | None:
        """One line when the runs' accuracies were not measured alike."""
        return mixed_notice("the two runs", self.differences)

    @property
    def ratio(self) -> float | None:
        """HV(A) / HV(B); None when B's front is empty (or dominates nothing)."""
        return self.hv_a / self.hv_b if self.hv_b > 0 else None

    def to_dict(self) -> dict[str, Any]:
        def side(run: Run, front: Sequence[TrialRecord], hv: float) -> dict[str, Any]:
            return {
                "path": str(run.path),
                "status": run.status,
                "trials": len(run.trials),
                "eligible": len(run.eligible()),
                "budget_macs": run.settings.budget_macs,
                "hypervolume": hv,
                "hypervolume_normalized": normalized_hypervolume(hv, self.reference, self.objectives),
                "front": [
                    {"trial": t.number, **{o: t.metric(o) for o in self.objectives}, "params": t.params}
                    for t in front
                ],
            }

        return {
            "objectives": list(self.objectives),
            "directions": list(directions_of(self.objectives)),
            "reference": list(self.reference),
            "a": side(self.run_a, self.front_a, self.hv_a),
            "b": side(self.run_b, self.front_b, self.hv_b),
            "hypervolume_ratio": self.ratio,
            "coverage_a_over_b": self.coverage_a_over_b,
            "coverage_b_over_a": self.coverage_b_over_a,
            "proxy_differences": list(self.differences),
            "notice": self.notice,
        }


def compare_runs(
    a: Run | str | Path, b: Run | str | Path, objectives: Sequence[str] = ("acc", "macs")
) -> Comparison:
    """Compare run A's front with run B's (what `nas compare A B` prints).

    Args:
        a: run A, loaded or a run directory.
        b: run B, loaded or a run directory.
        objectives: the objectives both fronts are taken in (``acc``, ``macs``, ``latency``).
    """
    run_a = a if isinstance(a, Run) else load_run(a)
    run_b = b if isinstance(b, Run) else load_run(b)
    objectives = tuple(objectives)
    reference = reference_point([run_a, run_b], objectives)
    front_a = pareto_front(run_a.trials, objectives)
    front_b = pareto_front(run_b.trials, objectives)
    return Comparison(
        run_a=run_a,
        run_b=run_b,
        objectives=objectives,
        reference=reference,
        front_a=tuple(front_a),
        front_b=tuple(front_b),
        hv_a=front_hypervolume(run_a.trials, objectives, reference),
        hv_b=front_hypervolume(run_b.trials, objectives, reference),
        coverage_a_over_b=coverage(front_a, front_b, objectives),
        coverage_b_over_a=coverage(front_b, front_a, objectives),
        differences=tuple(proxy_differences(run_a, run_b)),
    )


# what makes two proxy accuracies comparable: the run settings (run.json) that change what is measured
PROXY_SETTINGS = (("data", "data"), ("epochs", "epochs"), ("proxy_resolution", "resolution"),
                  ("proxy_width", "width"), ("data_fraction", "data fraction"), ("batch_size", "batch"),
                  ("rungs", "rungs"))  # fmt: skip


def proxy_differences(run_a: Run, run_b: Run) -> list[str]:
    """How the two runs' proxies differ, e.g. ``["data digits vs fashion-mnist", "epochs 1 vs 3"]``;
    a setting one run did not record is not counted as a difference."""
    out = []
    for key, label in PROXY_SETTINGS:
        a, b = getattr(run_a.settings, key, None), getattr(run_b.settings, key, None)
        if a is not None and b is not None and a != b:
            out.append(f"{label} {_show(a)} vs {_show(b)}")
    return out


def mixed_notice(what: str, differences: Sequence[str]) -> str | None:
    """The one line a comparison prints when its accuracies were measured on different terms."""
    if not differences:
        return None
    return (f"note: {what} mix data or training settings ({'; '.join(differences)}): their accuracies are not "
            "measured on the same terms")  # fmt: skip


# the full trainings' settings (train.json's spec) that change what a final accuracy measures
FINAL_SETTINGS = (("resolution", "resolution"), ("epochs", "epochs"), ("width_multiplier", "width"),
                  ("data_fraction", "data fraction"))  # fmt: skip


def finals_notice(run: Run, finals: Sequence[Any]) -> str | None:
    """One line when a run's full trainings (`nas finalize`, ``finals``: `FinalRecord`s) were trained
    on other data than the search's proxies, or not all alike (data, resolution, epochs, width,
    data fraction); None when they are comparable."""
    from train_proxy.checkpoint import TrainingDir

    from search_space.errors import UserError

    seen: dict[str, list[Any]] = {}
    for f in finals:
        try:
            settings: Mapping[str, Any] = TrainingDir(f.path).settings()
        except UserError:
            continue  # unreadable train.json: the final's own table row still shows its data
        spec = settings.get("spec") if isinstance(settings.get("spec"), Mapping) else {}
        values = {"data": settings.get("data"), **{key: spec.get(key) for key, _ in FINAL_SETTINGS}}  # type: ignore[union-attr]
        for key, value in values.items():
            if value is not None and value not in seen.setdefault(key, []):
                seen[key].append(value)
    differences = []
    searched = getattr(run.settings, "data", None)
    other_data = [d for d in seen.get("data", []) if searched is not None and d != searched]
    if other_data:
        differences.append(f"search on {_show(searched)}, full trainings on {', '.join(map(_show, other_data))}")
    elif len(seen.get("data", [])) > 1:
        differences.append(f"data {' vs '.join(map(_show, seen['data']))}")
    for key, label in FINAL_SETTINGS:
        if len(seen.get(key, [])) > 1:
            differences.append(f"{label} {' vs '.join(map(_show, seen[key]))}")
    return mixed_notice("the full trainings", differences)


def _show(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def coverage(
    front_a: Sequence[TrialRecord], front_b: Sequence[TrialRecord], objectives: Sequence[str]
) -> float | None:
    """Share of ``front_b`` that a member of ``front_a`` dominates or equals; None if B is empty."""
    if not front_b:
        return None
    signs = [-1.0 if d == "maximize" else 1.0 for d in directions_of(objectives)]

    def vec(t: TrialRecord) -> list[float]:
        return [s * t.metric(o) for s, o in zip(signs, objectives)]  # type: ignore[operator]

    covered = sum(1 for b in front_b if any(all(x <= y for x, y in zip(vec(a), vec(b))) for a in front_a))
    return covered / len(front_b)
