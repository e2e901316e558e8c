"""Fast checks of what the search records, each against a value worked out by hand (issue 25: three
mutations used to be caught only by slow tests or by none):

* the constraint Optuna is told is the relative violation ``value / limit - 1``;
* a resume marks only trials left RUNNING as interrupted, never finished ones;
* a trial's metrics.jsonl is never written through a symbolic link planted in its place.
"""

from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState, create_trial

from nas.search.searcher import INTERRUPTED, mark_interrupted, relative_violation
from results.run_dir import RunDir
from search_space.errors import UserError
from search_space.files import make_dirs

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.mark.parametrize(
    "value, limit, told",
    [
        (5e9, 4e9, 0.25),  # 25 % over the MAC budget
        (3e9, 4e9, -0.25),  # a quarter under: feasible
        (4e9, 4e9, 0.0),  # on the limit: feasible
        (3e7, 2e7, 0.5),  # params: the same scale as MACs, whatever their magnitude
        (12.0, 15.0, -0.2),  # latency in ms
    ],
)
def test_the_constraint_is_the_relative_violation(value, limit, told):
    assert relative_violation(value, limit) == pytest.approx(told)


def test_mark_interrupted_touches_running_trials_only():
    study = optuna.create_study(directions=["maximize", "minimize"])
    distributions = {"x": optuna.distributions.IntDistribution(0, 9)}
    finished = {
        TrialState.COMPLETE: create_trial(state=TrialState.COMPLETE, values=[0.8, 1e9], params={"x": 1},
                                          distributions=distributions, user_attrs={"status": "complete"}),
        TrialState.PRUNED: create_trial(state=TrialState.PRUNED, params={"x": 2}, distributions=distributions,
                                        user_attrs={"status": "pruned"}),
        TrialState.FAIL: create_trial(state=TrialState.FAIL, params={"x": 3}, distributions=distributions,
                                      user_attrs={"status": "failed"}),
    }  # fmt: skip
    for trial in finished.values():
        study.add_trial(trial)
    running = study.ask({"x": optuna.distributions.IntDistribution(0, 9)})
    running.set_user_attr("arch_hash", "abc")
    assert mark_interrupted(study) == [running.number]
    by_number = {t.number: t for t in study.get_trials(deepcopy=False)}
    for number, (state, _) in enumerate(finished.items()):
        t = by_number[number]
        assert t.state == state and "interrupted" not in t.user_attrs, (state, t.user_attrs)
    t = by_number[running.number]
    assert t.state == TrialState.FAIL and t.user_attrs["interrupted"] is True
    assert t.user_attrs["failure_reason"] == INTERRUPTED
    assert [w.system_attrs["fixed_params"] for w in study.get_trials(states=(TrialState.WAITING,))] == [running.params]  # re-queued


@pytest.mark.parametrize("epoch", [1, 2])
def test_metrics_are_never_written_through_a_planted_link(tmp_path, epoch):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    rd = RunDir(tmp_path / "run")
    make_dirs(rd.trial_dir(0), root=rd.path)
    (rd.trial_dir(0) / "metrics.jsonl").symlink_to(victim)
    with pytest.raises(UserError, match="symbolic link"):
        rd.append_metrics(0, {"epoch": epoch, "val_acc": 0.5})
    assert victim.read_text() == "precious\n"
