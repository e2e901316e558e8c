"""Pareto fronts and hypervolume for mixed maximised / minimised objectives.

The front rules, defined here once and used by `nas search` (its exported front), `nas report`,
`nas export` and `nas compare`:

* **Eligible trials**: measured and feasible (`results.run_dir.is_eligible`), with every objective
  recorded: COMPLETE ones (trained to the top rung) and PRUNED ones that recorded the rung they
  reached before ASHA stopped them. Infeasible ones were never trained, duplicates repeat another
  trial.
* **Dominance**: ``a`` dominates ``b`` when ``a`` is at least as good in every objective and
  strictly better in one.
* **The rung rule** (`rung_front`): accuracy is only compared between trials measured at the same
  rung (fidelity). The front is built from the highest rung down: a trial of a lower rung joins it
  only where no trial of a higher rung on the front costs as little in every other objective, so
  a trial measured only at a lower rung never displaces one measured at a higher rung, whatever
  its accuracy. With one rung it is the plain non-dominated set.
* **Ties**: points equal in every objective do not dominate each other, so all of them stay on
  the front (dropping one would be an arbitrary choice between equally good architectures).
* **A run's objectives** (`front_objectives`): proxy accuracy and MACs always (the MAC budget
  constrains every run; a run optimising accuracy alone still gets a cost trade-off), plus latency
  when the run optimised it. Latency is the measured one when every eligible trial has a
  measurement, else the predicted one for all: measured and predicted figures are never mixed on
  one front (`nas search` measures only its front, after choosing it on predicted latency).

Hypervolume is the measure of the objective-space region that the points dominate and that
dominates the reference point. It is computed exactly: a sweep for two objectives (n log n) and
slicing along the last objective for more (O(n^(d-1) log n): fine for fronts of a few hundred
points). Points that do not strictly improve on the reference in every objective add nothing.

Reference point of a run (`reference_point`), chosen so that every feasible trial counts:

* ``acc``: 0.0, the worst accuracy there is;
* ``macs``: the MAC budget (the largest one when several runs are compared);
* ``params`` / ``latency*``: the run's limit when one was set, else 1.1 x the largest value seen.

`normalized_hypervolume` divides by the box between that reference and the ideal point
(accuracy 1, zero cost), so it reads as the fraction of [0, 1] x [0, budget] that is dominated.
"""

from __future__ import annotations

import math
from typing import Iterable, Sequence

from search_space.errors import UserError

from .run import DIRECTIONS, Run, TrialRecord

Point = Sequence[float]


def directions_of(objectives: Sequence[str]) -> tuple[str, ...]:
    try:
        return tuple(DIRECTIONS[o] for o in objectives)
    except KeyError as exc:
        raise UserError(f"unknown objective {exc.args[0]!r} (choose from {', '.join(DIRECTIONS)})") from None


def _check_directions(directions: Sequence[str], dims: int) -> tuple[float, ...]:
    if len(directions) != dims:
        raise UserError(f"{len(directions)} directions for {dims} objectives")
    signs = []
    for d in directions:
        if d not in ("maximize", "minimize"):
            raise UserError(f"direction must be 'maximize' or 'minimize', got {d!r}")
        signs.append(-1.0 if d == "maximize" else 1.0)
    return tuple(signs)


def _as_minimized(points: Iterable[Point], signs: Sequence[float]) -> list[tuple[float, ...]]:
    out = []
    for p in points:
        if len(p) != len(signs):
            raise UserError(f"point {tuple(p)} has {len(p)} values, expected {len(signs)}")
        out.append(tuple(s * float(v) for s, v in zip(signs, p)))
    return out


def dominates(a: Point, b: Point, directions: Sequence[str]) -> bool:
    """Whether ``a`` is at least as good as ``b`` in every objective and better in one.

    ``directions`` holds ``"maximize"`` or ``"minimize"`` per objective.
    """
    signs = _check_directions(directions, len(a))
    ma, mb = _as_minimized([a, b], signs)
    return all(x <= y for x, y in zip(ma, mb)) and any(x < y for x, y in zip(ma, mb))


def non_dominated(points: Sequence[Point], directions: Sequence[str]) -> list[int]:
    """Indices of the points no other point dominates (ties all kept), in input order."""
    if not points:
        return []
    signs = _check_directions(directions, len(points[0]))
    mins = _as_minimized(points, signs)
    if len(signs) == 2:
        return _non_dominated_2d(mins)
    keep = []
    for i, p in enumerate(mins):
        if not any(
            all(x <= y for x, y in zip(q, p)) and any(x < y for x, y in zip(q, p)) for j, q in enumerate(mins) if j != i
        ):
            keep.append(i)
    return keep


def _non_dominated_2d(mins: list[tuple[float, ...]]) -> list[int]:
    """Sort by the first objective, keep points that improve the second (n log n)."""
    order = sorted(range(len(mins)), key=lambda i: mins[i])
    keep: list[int] = []
    best_y = math.inf
    i = 0
    while i < len(order):
        # points with the same first value: only those with that group's best second value survive
        j = i
        while j < len(order) and mins[order[j]][0] == mins[order[i]][0]:
            j += 1
        group = order[i:j]
        group_best = min(mins[k][1] for k in group)
        if group_best < best_y:
            keep.extend(k for k in group if mins[k][1] == group_best)
            best_y = group_best
        i = j
    return sorted(keep)


def rung_front(rungs: Sequence[int], points: Sequence[Point], directions: Sequence[str], accuracy: int | None = 0) -> list[int]:
    """Indices of the points on the front under the rung rule, in input order.

    ``rungs[i]`` is the fidelity point ``i`` was measured at (its highest rung); ``accuracy`` is the
    index of the one objective whose value depends on the fidelity (None: none does). Accuracy is
    only compared within a rung, so the front is built from the highest rung down:

    1. within rung r, the points no other point of rung r dominates (all objectives) are candidates;
    2. a candidate joins the front unless a member from a higher rung is at least as good in every
       other objective (the costs: MACs, latency, ...): that member costs no more and its accuracy
       is the better-measured one.

    So a point measured only at a lower rung never displaces one measured at a higher rung, whatever
    its accuracy: it can only add a point where the higher rungs offer nothing as cheap. With one
    rung this is the plain non-dominated set.
    """
    if not points:
        return []
    signs = _check_directions(directions, len(points[0]))
    costs = [k for k in range(len(signs)) if k != accuracy]
    mins = _as_minimized(points, signs)
    front: list[int] = []
    for rung in sorted(set(rungs), reverse=True):
        members = [i for i in range(len(points)) if rungs[i] == rung]
        candidates = [members[k] for k in non_dominated([points[i] for i in members], directions)]
        higher = list(front)
        front += [c for c in candidates if not any(all(mins[f][k] <= mins[c][k] for k in costs) for f in higher)]
    return sorted(front)


def pareto_front(trials: Sequence[TrialRecord], objectives: Sequence[str] = ("acc", "macs")) -> list[TrialRecord]:
    """The eligible trials on the front in ``objectives``, under the rung rule (`rung_front`):
    accuracy is compared only within a rung, and a trial measured at a lower rung never displaces
    one measured at a higher rung.

    Ordered from the cheapest to the most accurate: by the second objective, best first (for
    ``("acc", "macs")``: fewest MACs first), then by trial number.
    """
    directions = directions_of(objectives)
    usable = [t for t in trials if t.eligible and all(t.metric(o) is not None for o in objectives)]
    points = [tuple(t.metric(o) for o in objectives) for t in usable]
    accuracy = list(objectives).index("acc") if "acc" in objectives else None
    rungs = [t.rung or 0 for t in usable]
    front = [usable[i] for i in rung_front(rungs, points, directions, accuracy)]  # type: ignore[arg-type]
    key_obj = objectives[1] if len(objectives) > 1 else objectives[0]
    sign = -1.0 if DIRECTIONS[key_obj] == "maximize" else 1.0
    return sorted(front, key=lambda t: (sign * t.metric(key_obj), t.number))  # type: ignore[operator]


def front_objectives(objectives: Sequence[str], trials: Sequence[TrialRecord]) -> tuple[str, ...]:
    """The objectives a run's front is made in (see the module docstring), as `TrialRecord.metric`
    names, from the run's ``objectives`` (its settings) and its trials."""
    out = ["acc", "macs"]
    if "latency" in objectives:
        eligible = [t for t in trials if t.eligible]
        measured = bool(eligible) and all(t.latency_ms_measured is not None for t in eligible)
        out.append("latency_measured" if measured else "latency_predicted")
    return tuple(out)


def run_front(run: Run) -> list[TrialRecord]:
    """The Pareto front of a run, in the objectives the run used."""
    return pareto_front(run.trials, front_objectives(run.objectives, run.trials))


def hypervolume(points: Sequence[Point], reference: Point, directions: Sequence[str]) -> float:
    """Exact hypervolume dominated by ``points`` and bounded by ``reference``.

    Each objective is maximised or minimised as ``directions`` says; ``reference`` is a point
    worse than the points of interest in every objective (e.g. accuracy 0 and the MAC budget).
    """
    signs = _check_directions(directions, len(reference))
    ref = _as_minimized([reference], signs)[0]
    mins = [p for p in _as_minimized(points, signs) if all(x < r for x, r in zip(p, ref))]
    if not mins:
        return 0.0
    mins = [mins[i] for i in non_dominated(mins, ["minimize"] * len(ref))]
    return _hv(sorted(set(mins)), ref)


def _hv(points: list[tuple[float, ...]], ref: tuple[float, ...]) -> float:
    """Hypervolume of minimisation points that all strictly dominate ``ref``."""
    d = len(ref)
    if d == 1:
        return ref[0] - min(p[0] for p in points)
    if d == 2:
        total, best_y = 0.0, ref[1]
        for x, y in sorted(points):  # x ascending; a point adds area only if it lowers y
            if y < best_y:
                total += (ref[0] - x) * (best_y - y)
                best_y = y
        return total
    # slice along the last objective: between consecutive values, the (d-1)-D volume of the
    # points already reached is constant
    ordered = sorted(points, key=lambda p: p[-1])
    total = 0.0
    for i, p in enumerate(ordered):
        upper = ordered[i + 1][-1] if i + 1 < len(ordered) else ref[-1]
        depth = upper - p[-1]
        if depth <= 0:
            continue
        head = [q[:-1] for q in ordered[: i + 1]]
        head = [head[k] for k in non_dominated(head, ["minimize"] * (d - 1))]
        total += _hv(sorted(set(head)), ref[:-1]) * depth
    return total


# -- runs ------------------------------------------------------------------------------------------


def reference_point(runs: Sequence[Run], objectives: Sequence[str] = ("acc", "macs")) -> tuple[float, ...]:
    """A common reference point for the runs (see the module docstring for the rule)."""
    ref = []
    for o in objectives:
        if o == "acc":
            ref.append(0.0)
            continue
        limits = [_limit(run, o) for run in runs]
        if limits and all(v is not None for v in limits):
            ref.append(float(max(limits)))  # type: ignore[type-var]
            continue
        seen = [t.metric(o) for run in runs for t in run.eligible()]
        seen_values = [v for v in seen if v is not None]
        ref.append(1.1 * max(seen_values) if seen_values else 1.0)
    return tuple(ref)


def _limit(run: Run, objective: str) -> float | None:
    s = run.settings
    if objective == "macs":
        return s.budget_macs
    if objective == "params":
        return s.max_params
    if objective.startswith("latency"):
        return s.latency_ms
    return None


def ideal_point(objectives: Sequence[str]) -> tuple[float, ...]:
    return tuple(1.0 if o == "acc" else 0.0 for o in objectives)


def front_hypervolume(trials: Sequence[TrialRecord], objectives: Sequence[str], reference: Point) -> float:
    points = [tuple(t.metric(o) for o in objectives) for t in pareto_front(trials, objectives)]
    return hypervolume(points, reference, directions_of(objectives))  # type: ignore[arg-type]


def normalized_hypervolume(value: float, reference: Point, objectives: Sequence[str]) -> float:
    box = math.prod(abs(r - i) for r, i in zip(reference, ideal_point(objectives)))
    return value / box if box > 0 else 0.0
