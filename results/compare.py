"""Comparing two runs: front against front, hypervolume ratio, coverage.

Both fronts are measured against one reference point derived from both runs (`reference_point`:
accuracy 0, the larger of the two MAC budgets, for other costs the larger limit or 1.1 x the
largest value seen in either run), so the ratio compares like with like even when the budgets
differ. The ratio is HV(A) / HV(B): above 1, A's front dominates more of the objective space.

Coverage C(A, B) is the share of B's front that some member of A's front dominates or equals
(Zitzler's set coverage); it is not symmetric, so both directions are reported.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

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
        }


def compare_runs(
    a: Run | str | Path, b: Run | str | Path, objectives: Sequence[str] = ("acc", "macs")
) -> Comparison:
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
    )


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
