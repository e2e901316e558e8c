"""Reliability of `nas search` under faults: hard kills and resume, failing trials, two searches at once.

Every search here is a real ``python -m nas.cli search`` subprocess on a tiny space (trials train
in about a second at 32 px), started in a session of its own and tagged (see ``fault_helpers``):
after each kill the test waits for every process it started, Ray's included, to be gone, and
teardown SIGKILLs any straggler by PID. No test runs ``ray stop`` (it would end other users' Ray).

Moments of the kills are hit deterministically with the search's testing hooks
(``nas/search/faults.py``): ``HYBRID_NAS_FAULT=pause@sample:N`` / ``pause@checkpoint:N`` make the
driver stop at that moment and say so on stderr; mid-training is found by watching the training
log (``HYBRID_NAS_TRAIN_LOG``) for a trial that started training and has not finished.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from fault_helpers import (
    Tagged,
    assert_consistent,
    kill_group,
    nas_cmd,
    result_json,
    run_cli,
    search_args,
    snapshot,
    start_cli,
    status_json,
    study_trials,
    train_log,
    trained,
    wait_until,
    write_space,
)

pytestmark = pytest.mark.slow

@pytest.fixture
def tagged() -> Any:
    t = Tagged()
    yield t
    t.cleanup()  # SIGKILL by PID whatever a failed test left behind


# -- 1. hard kill at three moments, resume each time ------------------------------------------------


def test_sigkill_at_three_moments_then_resume(tmp_path: Path, tagged: Tagged) -> None:
    """One run killed three times (SIGKILL to the whole process group) and resumed each time:

    1. during sampling: the driver has asked Optuna for a trial and written its config, Ray has
       not received it (``pause@sample:3``: with two trials in flight, trial 3 is asked for only
       after two earlier trials finished);
    2. mid-training: a worker has started training a trial that has not finished (training log);
    3. during a Tune experiment checkpoint: experiment state written to the staging directory,
       the searcher's state file half written (``pause@checkpoint:3``); on top of that the test
       tears the files a kill during the sync and the journal append would leave (a half-copied
       experiment_state in RUN_DIR/tune, a partial last journal record).

    Then `nas search --resume` finishes the requested count; everything finished before each kill
    is kept with its values, killed trials are marked interrupted (not RUNNING), no architecture is
    trained twice, and `nas status` adds up.
    """
    requested = 9
    space = write_space(tmp_path / "space.yaml")
    run = tmp_path / "run"
    log = tmp_path / "train.jsonl"
    env = tagged.env(HYBRID_NAS_TRAIN_LOG=str(log), TUNE_GLOBAL_CHECKPOINT_S="1")
    new = search_args(run, space, trials=requested, epochs=2, concurrency=2)
    resume = ["search", "--resume", "--out", str(run)]
    timings: dict[str, float] = {}
    kills: list[tuple[str, dict[int, Any]]] = []

    def killed_study(moment: str) -> dict[int, Any]:
        trials = snapshot(run, tmp_path / f"snap-{moment}")
        report = status_json(run)
        assert report["status"] == "interrupted" and report["running"] >= 1, report
        kills.append((moment, trials))
        return trials

    # 1. during sampling
    started = time.monotonic()
    out1 = tmp_path / "search1.log"
    proc = start_cli(nas_cmd(*new), dict(env, HYBRID_NAS_FAULT="pause@sample:3"), out1)
    wait_until("the pause while sampling", lambda: "fault hook: paused at sample" in out1.read_text(), proc, out1)
    kill_group(proc, tagged)
    timings["run until the sampling kill"] = time.monotonic() - started
    trials = killed_study("sampling")
    starts = {row["number"] for row in train_log(log)}
    sampled_only = [n for n, t in trials.items() if t.state.name == "RUNNING" and n not in starts
                    and (run / "trials" / f"{n:05d}" / "config.yaml").exists()]  # fmt: skip
    assert sampled_only, "no trial was caught between sampling and training"
    assert sum(trained(t) for t in trials.values()) >= 2

    # 2. mid-training
    started = time.monotonic()
    out2 = tmp_path / "search2.log"
    proc = start_cli(nas_cmd(*resume), env, out2)
    done_before = len(train_log(log))

    def training_now() -> int | None:
        if sum(trained(t) for t in study_trials(run).values()) < 4:
            return None
        for row in train_log(log)[done_before:]:
            if time.time() - row["time"] > 0.3 and result_json(run, row["number"]) is None:
                return int(row["number"])
        return None

    victim = wait_until("a trial in the middle of training", training_now, proc, out2)
    kill_group(proc, tagged)
    timings["resume until the mid-training kill"] = time.monotonic() - started
    assert "interrupted trial(s) marked failed and re-queued" in out2.read_text()
    trials = killed_study("mid-training")
    assert trials[victim].state.name == "RUNNING", f"trial {victim} was not training when killed"

    # 3. during a Tune experiment checkpoint
    started = time.monotonic()
    out3 = tmp_path / "search3.log"
    proc = start_cli(nas_cmd(*resume), dict(env, HYBRID_NAS_FAULT="pause@checkpoint:3"), out3)
    wait_until("the pause in a checkpoint", lambda: "fault hook: paused at checkpoint" in out3.read_text(), proc, out3)
    torn = list(tagged.ray_tmp.glob("**/driver_artifacts/.*-tmp-searcher-state-*"))
    kill_group(proc, tagged)
    timings["resume until the checkpoint kill"] = time.monotonic() - started
    assert torn, "the kill did not catch a searcher state file being written"
    trials = killed_study("checkpoint")
    # what a kill during Tune's sync into RUN_DIR/tune and during a journal append leaves behind
    states = sorted(run.glob("tune/segment-*/experiment_state-*.json"))
    assert states, "Tune wrote no experiment checkpoint into the run directory"
    states[-1].write_bytes(states[-1].read_bytes()[: max(1, states[-1].stat().st_size // 2)])
    with open(run / "study.journal", "ab") as fh:
        fh.write(b'{"op_code": 6, "worker_id": "killed-mid-write", "trial_id": 0, "user_attr": {"x"')

    # resume to the end
    started = time.monotonic()
    final = run_cli(nas_cmd(*resume), env, timeout=400)
    timings["final resume"] = time.monotonic() - started
    assert final.returncode == 0, final.stderr[-3000:]
    assert not tagged.wait_gone(45), "processes outlived a finished search"
    report = assert_consistent(run, requested)
    end = study_trials(run)

    for moment, before in kills:  # every trial finished before a kill is kept as it was
        for number, t in before.items():
            after = end[number]
            if t.state.name == "RUNNING":
                assert after.state.name == "FAIL" and after.user_attrs.get("interrupted"), (moment, number)
                continue
            assert after.state == t.state and after.values == t.values, (moment, number)
            for key in ("status", "val_acc", "arch_hash", "macs", "epochs_trained"):
                assert after.user_attrs.get(key) == t.user_attrs.get(key), (moment, number, key)
    assert report["interrupted"] == len({n for _, b in kills for n, t in b.items() if t.state.name == "RUNNING"})

    # no architecture trained twice: a re-training happens only for a trial a kill interrupted
    interrupted_hashes = [t.user_attrs.get("arch_hash") for t in end.values() if t.user_attrs.get("interrupted")]
    rows = train_log(log)
    assert len({r["number"] for r in rows}) == len(rows), "a trial number was trained twice"
    for h in {r["arch_hash"] for r in rows}:
        n_starts = sum(r["arch_hash"] == h for r in rows)
        assert n_starts <= 1 + interrupted_hashes.count(h), f"architecture {h[:8]} trained {n_starts} times"
    print("kill/resume timings (s):", {k: round(v, 1) for k, v in timings.items()},
          "| interrupted:", report["interrupted"], "| total trials:", report["total"])  # fmt: skip


# -- 2. failing trials ------------------------------------------------------------------------


def test_failing_trials_are_recorded_retried_and_counted(tmp_path: Path, tagged: Tagged) -> None:
    """Trial 1 raises (every attempt), 2 has a non-finite loss, 3 runs out of memory (simulated),
    4 raises on its first attempt only. With --max-failures 2: 1 and 3 are tried 3 times then
    recorded failed with their reason, 2 is failed by the NaN guard without a retry (a result,
    not a crash), 4 completes on its retry; the search goes on to the requested count and
    `nas status` shows the 3 failures."""
    requested = 7
    space = write_space(tmp_path / "space.yaml")
    run = tmp_path / "run"
    log = tmp_path / "train.jsonl"
    env = tagged.env(HYBRID_NAS_TRAIN_LOG=str(log), HYBRID_NAS_FAULT="raise@trial:1,nan@trial:2,oom@trial:3,flaky@trial:4")
    args = search_args(run, space, trials=requested, epochs=1, concurrency=2, extra=["--max-failures", "2"])
    started = time.monotonic()
    proc = run_cli(nas_cmd(*args), env, timeout=400)
    seconds = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not tagged.wait_gone(45)
    report = assert_consistent(run, requested)
    trials = study_trials(run)
    attempts = {n: sum(r["number"] == n for r in train_log(log)) for n in trials}

    expected = {1: ("RuntimeError", 3), 2: ("non-finite loss", 1), 3: ("OutOfMemoryError", 3)}
    for number, (reason, tries) in expected.items():
        t = trials[number]
        assert t.state.name == "FAIL" and t.user_attrs["status"] == "failed", (number, t.user_attrs)
        assert reason in t.user_attrs["failure_reason"], (number, t.user_attrs["failure_reason"])
        assert attempts[number] == tries, (number, attempts[number])
        assert t.user_attrs.get("retries", 0) == tries - 1
        rj = result_json(run, number)
        assert rj["status"] == "failed" and reason in rj["reason"]
    flaky = trials[4]
    assert flaky.user_attrs["status"] in ("complete", "pruned") and attempts[4] == 2 and flaky.user_attrs["retries"] == 1
    others = [n for n, t in trials.items() if trained(t) and n not in expected]
    assert all(attempts[n] == 1 for n in others if n != 4)
    assert len(others) == requested - 3  # the search went on past the failures
    assert report["failed"] == 3 and report["complete"] + report["pruned"] == requested - 3

    shown = subprocess.run(nas_cmd("status", run), capture_output=True, text=True, timeout=120, env=env, check=False)
    assert shown.returncode == 0 and "failed 3" in shown.stdout, shown.stdout
    print(f"failing-trials search: {seconds:.1f}s, attempts {attempts}")


# -- 3. two searches at once -------------------------------------------------------------------


def test_second_search_on_a_run_dir_in_use_is_refused(tmp_path: Path, tagged: Tagged) -> None:
    """While search A runs in RUN_A, a resume of RUN_A and a new search into RUN_A are refused with
    one clear line (exit 2) and change nothing; search C in RUN_C runs beside A; both finish."""
    space = write_space(tmp_path / "space.yaml")
    run_a, run_c = tmp_path / "run_a", tmp_path / "run_c"
    env = tagged.env()
    # A must outlast the refused processes' start-up (imports take seconds on a busy machine)
    args_a = search_args(run_a, space, trials=10, epochs=2, concurrency=1)
    log_a, log_c = tmp_path / "a.log", tmp_path / "c.log"
    a = start_cli(nas_cmd(*args_a), env, log_a)
    c = start_cli(nas_cmd(*search_args(run_c, space, trials=3, epochs=1, concurrency=1)), env, log_c)

    from results.run_dir import RunDir

    wait_until("search A to hold its run directory", lambda: (run_a / "run.json").exists() and RunDir(run_a).in_use(),
               a, log_a)  # fmt: skip
    second = [subprocess.Popen(nas_cmd(*argv), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
              for argv in (["search", "--resume", "--out", run_a], args_a)]  # together: their imports overlap
    for proc in second:
        out, err = proc.communicate(timeout=180)
        lines = err.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in err + out, err
        assert "in use by another nas search" in lines[0] and str(run_a) in lines[0], lines[0]
    assert a.poll() is None, "the refused searches disturbed search A"

    assert a.wait(timeout=400) == 0, log_a.read_text()[-3000:]
    assert c.wait(timeout=400) == 0, log_c.read_text()[-3000:]
    assert not tagged.wait_gone(45)
    assert_consistent(run_a, 10)
    assert_consistent(run_c, 3)
    run_json = json.loads((run_a / "run.json").read_text())
    assert run_json["resumes"] == [] and "--resume" not in run_json["command"]
