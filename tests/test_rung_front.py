"""The front's rung rule (results.pareto.rung_front) on a worked example, by hand.

Objectives (accuracy max, MACs min); six trials at three rungs:

    name  rung  acc   MACs
    A     2     0.80  2.0 G   top rung: on the front
    B     2     0.78  3.0 G   dominated by A within rung 2: off
    C     1     0.85  1.5 G   cheaper than every rung-2 member: on (fills the cheap end)
    D     1     0.90  2.5 G   A (rung 2) costs no more (2.0 <= 2.5): off, whatever D's accuracy
    E     0     0.95  1.0 G   cheaper than A and C: on
    F     0     0.70  1.2 G   dominated by E within rung 0: off

Front: A, C, E. A plain Pareto front over all six would be E alone (0.95 at 1.0 G dominates
the rest): the rule exists because a rung-0 accuracy of 0.95 is not comparable with a rung-2 one
of 0.80.
"""

from __future__ import annotations

from results.pareto import non_dominated, rung_front

DIRECTIONS = ("maximize", "minimize")
ROWS = {  # name: (rung, (acc, MACs))
    "A": (2, (0.80, 2.0e9)),
    "B": (2, (0.78, 3.0e9)),
    "C": (1, (0.85, 1.5e9)),
    "D": (1, (0.90, 2.5e9)),
    "E": (0, (0.95, 1.0e9)),
    "F": (0, (0.70, 1.2e9)),
}


def _front(rows):
    names = list(rows)
    kept = rung_front([rows[n][0] for n in names], [rows[n][1] for n in names], DIRECTIONS, accuracy=0)
    return [names[i] for i in kept]


def test_the_worked_example():
    assert _front(ROWS) == ["A", "C", "E"]


def test_a_lower_rung_never_displaces_a_higher_one_whatever_its_accuracy():
    rows = {**ROWS, "G": (0, (0.99, 2.0e9))}  # as costly as A, far more "accurate" at rung 0
    assert "A" in _front(rows) and "G" not in _front(rows)


def test_one_rung_is_the_plain_pareto_front():
    rows = {name: (0, point) for name, (_, point) in ROWS.items()}
    names = list(rows)
    plain = [names[i] for i in non_dominated([rows[n][1] for n in names], DIRECTIONS)]
    assert _front(rows) == plain == ["E"]  # 0.95 at 1.0 G dominates all five others


def test_accuracy_alone_is_decided_at_the_highest_rung():
    rows = {name: (rung, (acc,)) for name, (rung, (acc, _)) in ROWS.items()}
    names = list(rows)
    kept = rung_front([rows[n][0] for n in names], [rows[n][1] for n in names], ("maximize",), accuracy=0)
    assert [names[i] for i in kept] == ["A"]
