"""Every reader of a run directory agrees with the others on a directory written by a real `nas search`.

The run (tests/run_fixture.py, one per module) holds complete, pruned, failed, interrupted,
infeasible and duplicate trials. `nas status`, `nas runs`, `nas report`, `nas export` and
`nas compare` must give the same counts and the same front, and the front must be the one worked
out here by brute force from the trials' accuracies and MACs.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from run_fixture import TRIALS, make_real_run

from results.run_dir import COUNT_KEYS, RunDir
from nas.search.settings import RunSettings, SearchSettings
from results import load_run

pytestmark = pytest.mark.slow  # one real search in two segments: about 30-60 s

ALL_COUNTS = (*COUNT_KEYS, "total", "interrupted", "trained")


@pytest.fixture(scope="module")
def real_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_real_run(tmp_path_factory.mktemp("real_run"))


def cli_json(cli, *argv):  # type: ignore[no-untyped-def]
    code, out, err = cli(*argv, "--json")
    assert code == 0, err
    return json.loads(out)


def tune_trained_numbers(run: Path) -> list[int]:
    """The trial numbers Ray Tune ran, from Tune's own experiment state (not the study)."""
    numbers = []
    for state in run.glob("tune/segment-*/experiment_state-*.json"):
        for trial_json in json.loads(state.read_text())["trial_data"]:
            trial = json.loads(trial_json[0] if isinstance(trial_json, list) else trial_json)
            numbers.append(int(trial["config"]["number"]))
    return sorted(numbers)


def front_by_hand(run_dir: Path) -> list[int]:
    """The rung rule worked out from the trials' result.json files: within each rung (from the
    top down), the trials no other trial of that rung beats in accuracy and MACs; a lower rung's
    trial joins only if no member from a higher rung has as few MACs."""
    points = {}
    for path in run_dir.glob("trials/*/result.json"):
        r = json.loads(path.read_text())
        if r["status"] in ("complete", "pruned"):
            points[r["number"]] = (r["rung"], r["val_acc"], r["macs"])
    front: list[int] = []
    for rung in sorted({p[0] for p in points.values()}, reverse=True):
        same = {n: p for n, p in points.items() if p[0] == rung}
        higher = list(front)
        for n, (_, acc, macs) in same.items():
            beaten = any(a >= acc and m <= macs and (a > acc or m < macs) for k, (_, a, m) in same.items() if k != n)
            if not beaten and not any(points[f][2] <= macs for f in higher):
                front.append(n)
    return sorted(front, key=lambda n: (points[n][2], n))


def test_the_run_has_every_kind_of_trial(real_run: Path, cli) -> None:
    s = cli_json(cli, "status", real_run)
    assert s["status"] == "finished" and s["trained"] == s["trials_requested"] == TRIALS
    assert s["complete"] >= 1 and s["pruned"] >= 1 and s["infeasible"] >= 1 and s["duplicate"] >= 1
    assert s["failed"] == 2 and s["interrupted"] == 1 and s["running"] == 0  # the raised trial and the orphan
    assert s["total"] == sum(s[k] for k in COUNT_KEYS)
    run = load_run(real_run)
    # trained trials are exactly those Ray Tune ran (its own record), interrupted ones excluded
    assert tune_trained_numbers(real_run) == sorted(t.number for t in run.trials if t.trained)
    (orphan,) = [t for t in run.trials if t.interrupted]
    assert not (real_run / "trials" / f"{orphan.number:05d}" / "result.json").exists()  # it never finished
    retrained = [t for t in run.trials if t.arch_hash == orphan.arch_hash and t.trained]
    assert len(retrained) == 1 and retrained[0].number > orphan.number  # re-queued and trained by --resume
    for t in run.trials:  # the status each trial's result.json recorded when it was told
        path = real_run / "trials" / f"{t.number:05d}" / "result.json"
        if path.exists():
            assert json.loads(path.read_text())["status"] == t.status, t.number


def test_status_and_runs_agree(real_run: Path, cli) -> None:
    status = cli_json(cli, "status", real_run)
    (row,) = cli_json(cli, "runs", real_run.parent)
    assert {k: row[k] for k in ALL_COUNTS} == {k: status[k] for k in ALL_COUNTS}
    assert row["status"] == status["status"] == "finished"
    assert row["best_trial"] == status["best"][0]["number"] and row["best_acc"] == status["best"][0]["val_acc"]
    run_json = json.loads((real_run / "run.json").read_text())
    assert {k: run_json["counts"][k] for k in ALL_COUNTS} == {k: status[k] for k in ALL_COUNTS}


def test_report_export_and_compare_agree_on_counts_and_front(real_run: Path, cli, tmp_path: Path) -> None:
    expected = front_by_hand(real_run)
    assert expected
    status = cli_json(cli, "status", real_run)
    assert status["pareto"] == expected  # what the search recorded in run.json
    assert sorted(p.stem for p in (real_run / "pareto").glob("*.yaml")) == sorted(f"trial_{n:05d}" for n in expected)
    exported = cli_json(cli, "export", real_run, "--out", tmp_path / "exported")
    assert [e["trial"] for e in exported] == expected
    compared = cli_json(cli, "compare", real_run, real_run)
    assert [r["trial"] for r in compared["a"]["front"]] == expected and compared["hypervolume_ratio"] == 1.0
    code, _, err = cli("report", real_run, "--out", tmp_path / "report")
    assert code == 0, err
    html = (tmp_path / "report" / "report.html").read_text()
    table = html[html.index("<h2>Pareto front</h2>") :]
    assert re.findall(r"<tr><td>#(\d+)</td>", table) == [str(n) for n in expected]
    assert f"<th>trials trained / requested</th><td>{status['trained']} / {TRIALS}</td>" in html
    counts = ", ".join(f"{k} {status[k]}" for k in (*COUNT_KEYS, "interrupted"))
    assert f"<th>counts</th><td>{counts}</td>" in html


def test_cards_say_where_the_accuracy_came_from(real_run: Path, cli, tmp_path: Path) -> None:
    """One card writer: the search's pareto/*.md is the card `nas export` writes for that trial."""
    exported = cli_json(cli, "export", real_run, "--out", tmp_path)
    for e in exported:
        card = Path(e["card"]).read_text()
        assert card == (real_run / "pareto" / Path(e["card"]).name).read_text()
        trial = json.loads((real_run / "trials" / f"{e['trial']:05d}" / "result.json").read_text())
        if trial["status"] == "complete":
            assert "measured at rung 2/2 (e1-w0.5-f0.3)" in card
            assert "data `digits` (fraction 0.3, validation share 1)" in card
            assert "1 of 1 epochs at 32 px, width x0.5 of the deploy widths" in card
        else:  # stopped by ASHA at the lower rung: half the width, all the validation images
            assert "measured at rung 1/2 (e1-w0.25-f0.3)" in card and "not comparable" in card
            assert "data `digits` (fraction 0.3, validation share 1)" in card
            assert "1 of 1 epochs at 32 px, width x0.25 of the deploy widths" in card


def test_settings_are_the_search_settings(real_run: Path) -> None:
    run = load_run(real_run)
    stored = json.loads((real_run / "run.json").read_text())["settings"]
    assert isinstance(run.settings, RunSettings) and isinstance(run.settings, SearchSettings)
    assert run.settings.proxy_width == 0.5 and run.settings.extra == {}
    assert SearchSettings.from_json(stored) == SearchSettings.from_json(run.settings.to_json())


def test_a_killed_search_reads_as_interrupted_everywhere(real_run: Path, cli, tmp_path: Path) -> None:
    copy = tmp_path / "runs" / "killed"
    shutil.copytree(real_run, copy)
    RunDir(copy).update(status="running")  # what a SIGKILL leaves; the lock's pid is long gone
    assert cli_json(cli, "status", copy)["status"] == "interrupted"
    assert cli_json(cli, "runs", copy.parent)[0]["status"] == "interrupted"
    with RunDir(copy).locked():  # a live search holds it
        assert cli_json(cli, "status", copy)["status"] == "running"
        assert cli_json(cli, "runs", copy.parent)[0]["status"] == "running"


def test_the_study_reads_true_through_optuna(real_run: Path) -> None:
    """Through Optuna's public API: no made-up accuracy anywhere, infeasible candidates carry their
    violations, pruned trials their rung, and the axes have names."""
    import optuna
    from optuna.trial import TrialState

    from results.run_dir import STUDY_NAME

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(real_run / "study.journal")))
    study = optuna.load_study(study_name=STUDY_NAME, storage=storage)
    assert study.metric_names == ["accuracy", "MACs"]
    trials = study.get_trials()
    infeasible = [t for t in trials if t.user_attrs.get("status") == "infeasible"]
    assert infeasible
    for t in infeasible:  # never trained: no values at all, violations as Optuna's constraints
        assert t.state == TrialState.PRUNED and t.values is None and t.intermediate_values == {}
        assert t.constraints["macs"] > 0 and "val_acc" not in t.user_attrs
    for t in trials:  # every value Optuna holds is a measured accuracy at the top rung
        if t.state == TrialState.COMPLETE:
            assert t.user_attrs["status"] in ("complete", "duplicate") and t.values[0] > 0
            assert t.user_attrs["rung"] == 1 and t.values[0] == t.user_attrs["val_acc"]
            assert all(v <= 0 for v in t.constraints.values())
    pruned = [t for t in trials if t.user_attrs.get("status") == "pruned"]
    assert pruned and all(t.user_attrs["rung"] == 0 and len(t.user_attrs["rung_val_acc"]) == 1 for t in pruned)
    # every training's CPU time is recorded (a trial is at least its model's build and one epoch:
    # more than nothing, and no more CPU than its wall time on its one thread and Ray's helpers allow)
    for t in [*pruned, *(t for t in trials if t.user_attrs.get("status") == "complete")]:
        assert 0 < t.user_attrs["train_cpu_seconds"] < 4 * t.user_attrs["train_seconds"] + 1
    # the samplers' own reading: Optuna's TPE counts a trial as infeasible by its constraints
    assert all(sum(v for v in t.constraints.values() if v > 0) > 0 for t in infeasible)


def test_the_dashboard_shows_infeasible_candidates_as_no_results(real_run: Path, tmp_path: Path) -> None:
    """Through optuna-dashboard's own JSON API, the one its pages draw from: the metric names are
    the axes, infeasible candidates have no values (never a point of its Pareto front or history),
    and the rung of each measured trial is one of its attributes."""
    from test_dashboard import Dashboard, study_from_api

    from results.run_dir import STUDY_NAME

    dash = Dashboard([str(real_run)], tmp_path / "dashboard.log")
    try:
        dash.wait_ready()
        _, detail = study_from_api(dash.base, STUDY_NAME)
    finally:
        dash.stop()
    assert detail["objective_names"] == ["accuracy", "MACs"]  # its axis titles
    for trial in detail["trials"]:
        attrs = {a["key"]: a["value"] for a in trial["user_attrs"]}
        if attrs.get("status") == "\"infeasible\"" or attrs.get("status") == "infeasible":
            assert trial["state"] == "Pruned" and not trial.get("values")
            assert any(c > 0 for c in trial["constraints"])
        if trial["state"] == "Complete":
            assert trial["values"][0] > 0 and "rung" in attrs
    assert any(t["state"] == "Pruned" and t.get("intermediate_values") == [] for t in detail["trials"])
