"""`scaling expand` / `scaling family` take their base from a search run (issue 17).

A tiny real `nas search` runs once for the module in a temporary working directory; then
`scaling expand --phi 1`, exactly as a user types it there, must scale that run's best trial. The
best trial is worked out here from the Optuna journal directly (user attrs and constraints, a
Pareto front by hand), not through `results`. A second real search in which every trained trial
fails gives a run with no complete trial. Refusals are one line on stderr and exit status 2.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from scaling.cli import main
from search_space import ArchConfig

REPO = Path(__file__).resolve().parents[1]
SEARCH = ["search", "--budget", "1GFLOPs", "--trials", "2", "--epochs", "1"]


def cli(module: str, *argv: str, cwd: Path, extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """A CLI as a user runs it, from ``cwd``, on this checkout's code."""
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    env = dict(os.environ, PYTHONPATH=path, PYTHONUNBUFFERED="1", **(extra_env or {}))
    env.pop("RAY_ADDRESS", None)
    return subprocess.run([sys.executable, "-m", module, *argv], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600)  # fmt: skip


def in_process(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse usage errors
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_refusal(code: int, err: str, *needles: str) -> None:
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err, err


# -- the real runs ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory in which `nas search ... --out runs/X` has just finished."""
    ws = tmp_path_factory.mktemp("ws")
    proc = cli("nas.cli", *SEARCH, "--out", "runs/X", cwd=ws)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return ws


@pytest.fixture(scope="module")
def failed_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished real search whose every trained trial raised: no complete trial."""
    ws = tmp_path_factory.mktemp("failed")
    faults = ",".join(f"raise@trial:{n}" for n in range(200))  # whichever numbers get trained
    proc = cli("nas.cli", *SEARCH, "--max-failures", "0", "--out", "runs/F", cwd=ws,
               extra_env={"HYBRID_NAS_FAULT": faults})  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return ws / "runs" / "F"


def study_trials(run: Path) -> list:  # type: ignore[type-arg]
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    storage = JournalStorage(JournalFileBackend(str(run / "study.journal")))
    return optuna.load_study(study_name="search", storage=storage).get_trials(deepcopy=False)


def hand_pick(run: Path) -> tuple[int, float, dict]:  # type: ignore[type-arg]
    """(number, val_acc, user attrs) of the best complete feasible trial on the (acc up, MACs down) front."""
    assert json.loads((run / "run.json").read_text())["settings"]["objectives"] == ["acc", "macs"]
    ok = [
        t
        for t in study_trials(run)
        if t.state.name == "COMPLETE"
        and t.user_attrs.get("status") == "complete"
        and all(c <= 0 for c in t.constraints.values())  # each constraint: value - limit
        and t.user_attrs.get("val_acc") is not None
    ]
    points = {t.number: (float(t.user_attrs["val_acc"]), int(t.user_attrs["macs"])) for t in ok}

    def dominated(n: int) -> bool:
        a, m = points[n]
        return any(a2 >= a and m2 <= m and (a2, m2) != (a, m) for k, (a2, m2) in points.items() if k != n)

    front = [n for n in points if not dominated(n)]
    assert front, "the tiny search trained no complete feasible trial"
    best = sorted(front, key=lambda n: (-points[n][0], points[n][1], n))[0]
    attrs = next(t.user_attrs for t in ok if t.number == best)
    return best, points[best][0], dict(attrs)


# -- the must-shows -----------------------------------------------------------------------


@pytest.mark.slow
def test_expand_phi1_with_no_flags_scales_the_runs_best_trial(workspace: Path) -> None:
    best, acc, attrs = hand_pick(workspace / "runs" / "X")
    proc = cli("scaling.cli", "expand", "--phi", "1", cwd=workspace)
    assert proc.returncode == 0, proc.stderr
    first = proc.stdout.splitlines()[0]
    assert f"run runs/X trial {best} " in first and f"proxy acc {acc:.4f}" in first, first
    assert "most recent finished run" in first

    # the base is the deploy architecture (the space's resolution and classes, full width), so phi=1
    # lands where CMT's rule puts it: resolution x 1.15 to a multiple of 32, depths ceil(d x 1.2)
    space = yaml.safe_load((workspace / "runs" / "X" / "space.yaml").read_text())
    stored = attrs["config"]
    proc = cli("scaling.cli", "expand", "--phi", "1", "--json", cwd=workspace)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert "trial" in proc.stderr and "runs/X" in proc.stderr  # the implicit pick, said beside the JSON
    assert result["source"]["trial"] == best and result["source"]["val_acc"] == pytest.approx(acc)
    assert result["source"]["latest_run"] is True
    assert result["base_resolution"] == space["resolution"] == 224
    assert result["base_widths"] == [s["width"] for s in stored["stages"]]
    assert result["resolution"] == 32 * round(space["resolution"] * 1.15 / 32) == 256
    assert result["depths"] == [math.ceil(s["depth"] * 1.2 - 1e-9) for s in stored["stages"]]
    assert result["config"]["num_classes"] == space["num_classes"]


def test_expand_in_an_empty_directory_says_how_to_give_a_base(tmp_path: Path) -> None:
    proc = cli("scaling.cli", "expand", "--phi", "1", cwd=tmp_path)
    assert_one_line_refusal(proc.returncode, proc.stderr, "--config", "--from")
    assert proc.stdout == ""


# -- choosing the trial -------------------------------------------------------------------


@pytest.mark.slow
def test_from_equals_scaling_the_searchs_own_exported_yaml(workspace: Path, capsys) -> None:
    best, _, _ = hand_pick(workspace / "runs" / "X")
    run = workspace / "runs" / "X"
    code, out, _ = in_process(["expand", "--from", str(run), "--phi", "1", "--json"], capsys)
    assert code == 0
    from_run = json.loads(out)
    code, out, _ = in_process(["expand", "--config", str(run / "pareto" / f"trial_{best:05d}.yaml"), "--phi", "1",
                               "--json"], capsys)  # fmt: skip
    assert code == 0
    assert json.loads(out)["config"] == from_run["config"]
    assert from_run["source"]["chosen_by"] == "pareto"


@pytest.mark.slow
def test_trial_option(workspace: Path, capsys) -> None:
    run = workspace / "runs" / "X"
    trials = study_trials(run)
    best, _, _ = hand_pick(run)
    complete = [t.number for t in trials if t.user_attrs.get("status") == "complete"]
    infeasible = [t.number for t in trials if t.user_attrs.get("status") == "infeasible"]
    other = next((n for n in complete if n != best), best)
    code, out, _ = in_process(["expand", "--from", str(run), "--trial", str(other), "--phi", "1"], capsys)
    assert code == 0 and f"trial {other} " in out.splitlines()[0] and "given with --trial" in out

    assert infeasible, "1 GFLOPs should leave infeasible candidates in the default space"
    code, _, err = in_process(["expand", "--from", str(run), "--trial", str(infeasible[0]), "--phi", "1"], capsys)
    assert_one_line_refusal(code, err, f"trial {infeasible[0]} is infeasible")
    missing = max(t.number for t in trials) + 1
    code, _, err = in_process(["expand", "--from", str(run), "--trial", str(missing), "--phi", "1"], capsys)
    assert_one_line_refusal(code, err, f"no trial {missing}")
    code, _, err = in_process(["expand", "--config", "cmt_s", "--trial", "1", "--phi", "1"], capsys)
    assert_one_line_refusal(code, err, "--trial")


@pytest.mark.slow
def test_the_latest_finished_run_is_taken(workspace: Path, tmp_path: Path) -> None:
    """Among runs/, unfinished runs are passed over and the most recently updated finished run wins."""
    ws = tmp_path / "ws"
    (ws / "runs").mkdir(parents=True)
    shutil.copytree(workspace / "runs" / "X", ws / "runs" / "old")
    for name, status, updated in (("newer", "finished", "2099-01-01T00:00:00+00:00"),
                                  ("newest_running", "running", "2099-06-01T00:00:00+00:00")):  # fmt: skip
        shutil.copytree(workspace / "runs" / "X", ws / "runs" / name)
        meta = json.loads((ws / "runs" / name / "run.json").read_text())
        meta.update(status=status, updated=updated)
        (ws / "runs" / name / "run.json").write_text(json.dumps(meta))
    proc = cli("scaling.cli", "expand", "--phi", "1", cwd=ws)
    assert proc.returncode == 0, proc.stderr
    assert "run runs/newer trial" in proc.stdout.splitlines()[0]


# -- refusals -----------------------------------------------------------------------------


@pytest.mark.slow
def test_from_a_run_with_no_complete_trial(failed_run: Path, capsys) -> None:
    trials = study_trials(failed_run)
    assert trials and not any(t.state.name == "COMPLETE" and t.user_attrs.get("status") == "complete" for t in trials)
    assert any(t.user_attrs.get("status") == "failed" for t in trials)  # it did train, and every one failed
    code, _, err = in_process(["expand", "--from", str(failed_run), "--phi", "1"], capsys)
    assert_one_line_refusal(code, err, "no complete feasible trial", str(failed_run))
    code, _, err = in_process(["family", "--from", str(failed_run), "--out", str(failed_run.parent / "fam")], capsys)
    assert_one_line_refusal(code, err, "no complete feasible trial")
    assert not (failed_run.parent / "fam").exists()


@pytest.mark.parametrize("kind", ["missing", "empty_dir", "other_dir", "a_file"])
def test_from_something_that_is_not_a_run(kind: str, tmp_path: Path, capsys) -> None:
    target = tmp_path / kind
    if kind == "empty_dir":
        target.mkdir()
    elif kind == "other_dir":
        (target / "trials").mkdir(parents=True)
        (target / "notes.txt").write_text("not a run\n")
    elif kind == "a_file":
        target.write_text("{}\n")
    for command in (["expand", "--phi", "1"], ["family", "--out", str(tmp_path / "fam")]):
        code, _, err = in_process([*command, "--from", str(target)], capsys)
        assert_one_line_refusal(code, err, str(target))
    assert not (tmp_path / "fam").exists()


def test_runs_dir_without_a_finished_run(tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "runs" / "junk").mkdir(parents=True)  # a runs/ folder holding no run
    monkeypatch.chdir(tmp_path)
    code, _, err = in_process(["expand", "--phi", "1"], capsys)
    assert_one_line_refusal(code, err, "--config", "--from", "no finished run under runs/")


def test_config_and_from_together_are_refused(tmp_path: Path, capsys) -> None:
    code, _, err = in_process(["expand", "--config", "cmt_s", "--from", str(tmp_path), "--phi", "1"], capsys)
    assert_one_line_refusal(code, err, "not allowed with")


# -- a family from the run ----------------------------------------------------------------


@pytest.mark.slow
def test_family_from_run_writes_configs_and_cards_naming_run_and_trial(workspace: Path, tmp_path: Path) -> None:
    run = workspace / "runs" / "X"
    best, acc, attrs = hand_pick(run)
    out = tmp_path / "fam"
    proc = cli("scaling.cli", "family", "--from", "runs/X", "--out", str(out), cwd=workspace)
    assert proc.returncode == 0, proc.stderr
    assert f"run runs/X trial {best} " in proc.stdout.splitlines()[0]
    space = yaml.safe_load((run / "space.yaml").read_text())
    yamls = sorted(out.glob("*.yaml"))
    assert len(yamls) == 4
    by_member = {p.stem.rsplit("_", 1)[1]: p for p in yamls}
    assert sorted(by_member) == ["B", "S", "Ti", "XS"]
    for member, path in by_member.items():
        cfg = ArchConfig.load(path)
        assert cfg.num_classes == space["num_classes"]
        text = path.read_text()
        assert f"trial {best} of search run runs/X" in text and f"{acc:.4f}" in text
        card = path.with_suffix(".md").read_text()
        assert "search run `runs/X`" in card and f"trial {best}" in card and f"{acc:.4f}" in card
        assert f"Member **{member}**" in card
    # phi = 0 is the base itself: the stored deploy architecture, unchanged
    s = ArchConfig.load(by_member["S"]).to_dict()
    stored = dict(attrs["config"])
    assert {k: v for k, v in s.items() if k != "name"} == {k: v for k, v in stored.items() if k != "name"}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["source"]["trial"] == best and summary["source"]["run"] == "runs/X"
    assert f"trial {best}" in (out / "summary.md").read_text()


@pytest.mark.slow
def test_a_run_path_with_a_newline_stays_one_line_and_injects_no_yaml(workspace: Path, tmp_path: Path, capsys) -> None:
    odd = tmp_path / "a\nname: injected"
    shutil.copytree(workspace / "runs" / "X", odd)
    out = tmp_path / "o.yaml"
    code, stdout, _ = in_process(["expand", "--from", str(odd), "--phi", "1", "--out", str(out)], capsys)
    assert code == 0 and "a\\nname: injected" in stdout.splitlines()[0]
    assert not [line for line in out.read_text().splitlines() if line.startswith("name: injected")]
    assert ArchConfig.load(out).name.endswith("_phi1")
    code, _, err = in_process(["expand", "--from", str(tmp_path / "no\nsuch"), "--phi", "1"], capsys)
    assert_one_line_refusal(code, err, "no\\nsuch")
