"""`nas search --storage`: the Optuna study in a real PostgreSQL server (and SQLite).

A throwaway PostgreSQL 15 cluster is started for the session (tests/pg_cluster.py; initdb + pg_ctl
as the ``postgres`` user, 127.0.0.1 on a free port, password authentication) and stopped at the
end. Searches are real ``python -m nas.cli search`` subprocesses on the tiny space of
tests/fault_helpers.py, tagged so that every process they start is found and ended by PID.
What the tests compare against is read independently of the code under test: the study through
Optuna's own RDBStorage or plain SQL, the run directory's files, the training log of the workers.

Covered: a search to completion on PostgreSQL (no journal, no password anywhere, every reader
works from run.json alone with PGPASSWORD); a SIGKILL of the driver mid-training and
``nas search --resume`` (nothing lost, nothing trained twice, heartbeats waited out); two searches
side by side in one database; every bad storage input refused with one line, exit 2, nothing
written to the run directory or the database.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from fault_helpers import (
    Tagged,
    kill_group,
    nas_cmd,
    result_json,
    run_cli,
    search_args,
    start_cli,
    status_json,
    train_log,
    trained,
    tree_digest,
    wait_until,
    write_space,
)
from pg_cluster import PgCluster, free_port
from storage_helpers import (
    TRIALS,
    assert_finished_db_run,
    db_snapshot,
    db_trials,
    files_containing,
    heartbeat_trial_ids,
    shared_pg_run,
)

from nas.cli import main


@pytest.fixture
def tagged() -> Any:
    t = Tagged()
    yield t
    t.cleanup()  # SIGKILL by PID whatever a failed test left behind


@pytest.fixture(scope="module")
def shared(pg_cluster: PgCluster, tmp_path_factory: pytest.TempPathFactory) -> Any:
    return shared_pg_run(pg_cluster, tmp_path_factory.mktemp("pgrun"))


def one_line_error(err: str) -> str:
    assert err.endswith("\n") and err.count("\n") == 1, f"not one line: {err!r}"
    assert err.startswith("error: ") and "Traceback" not in err, err
    return err


# -- 1. bad storage input ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def bad_input_dbs(pg_cluster: PgCluster) -> dict[str, str]:
    """An empty database, and one where a different search already holds the study name "taken"."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    empty = pg_cluster.create_database("bad_empty")
    taken = pg_cluster.create_database("bad_taken")
    storage = optuna.storages.RDBStorage(pg_cluster.url(taken, password=pg_cluster.password))
    study = optuna.create_study(study_name="taken", storage=storage, directions=["maximize", "minimize"])
    study.enqueue_trial({"x": 1})
    storage.engine.dispose()
    return {"empty": empty, "taken": taken}


# case -> (URL builder (cluster, dbs, tmp) -> URL, extra args, whether PGPASSWORD is set, expected words)
BAD_STORAGE = {
    "malformed-port": (lambda c, d, t: f"postgresql+psycopg://nas@127.0.0.1:not-a-port/{d['empty']}", [], True,
                       "malformed --storage"),
    "not-a-url": (lambda c, d, t: "runs/study.db", [], True, "malformed --storage"),
    "unknown-scheme": (lambda c, d, t: "mysql://nas@127.0.0.1:3306/db", [], True, "unknown storage scheme 'mysql'"),
    "server-down": (lambda c, d, t: "postgresql+psycopg://nobody@127.0.0.1:1/x", [], False, "Connection refused"),
    "server-down-free-port": (lambda c, d, t: f"postgresql+psycopg://nas@127.0.0.1:{free_port()}/x", [], True,
                              "Connection refused"),
    "wrong-password": (lambda c, d, t: c.url(d["empty"], password="wrong-" + c.password), [], False,
                       'password authentication failed for user "nas"'),
    "no-password": (lambda c, d, t: c.url(d["empty"]), [], False, "no password supplied"),
    "database-missing": (lambda c, d, t: c.url("no_such_db", password=c.password), [], False,
                         'database "no_such_db" does not exist'),
    "study-name-taken": (lambda c, d, t: c.url(d["taken"]), ["--study-name", "taken"], True,
                         "study name 'taken' is already used by a different search"),
    "password-in-query": (lambda c, d, t: c.url(d["empty"]) + "?password=" + c.password, [], False,
                          "no password=... in the query"),
    "sqlite-no-directory": (lambda c, d, t: f"sqlite:///{t}/no/such/dir/study.db", [], True, "no such directory"),
    "sqlite-not-a-database": (lambda c, d, t: f"sqlite:///{t}/notes.txt", [], True, "not an SQLite file"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(BAD_STORAGE))
def test_bad_storage_is_one_line_and_writes_nothing(case: str, pg_cluster: PgCluster, bad_input_dbs: dict[str, str],
                                                    tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """Refused in prepare() (before Ray, which must not start): one line on stderr, exit 2, no run
    directory, no table or row in the database, no SQLite file, the password never echoed."""
    make_url, extra, with_password, expected = BAD_STORAGE[case]
    (tmp_path / "notes.txt").write_text("not a database\n" * 50)
    url = make_url(pg_cluster, bad_input_dbs, tmp_path)
    if with_password:
        monkeypatch.setenv("PGPASSWORD", pg_cluster.password)
    else:
        monkeypatch.delenv("PGPASSWORD", raising=False)
    monkeypatch.setattr("nas.search.runner.start_ray", lambda *a, **k: pytest.fail("Ray was started"))
    before = {db: db_snapshot(pg_cluster, db) for db in bad_input_dbs.values()}
    space = write_space(tmp_path / "space.yaml")
    out = tmp_path / "run"
    files_before = tree_digest(tmp_path)
    argv = search_args(out, space, trials=2, extra=["--storage", url, *extra])
    code = main(argv)
    captured = capsys.readouterr()
    assert code == 2, (code, captured.err)
    err = one_line_error(captured.err)
    assert expected in err, err
    assert pg_cluster.password not in err and "wrong-" not in err, "the password was echoed"
    assert not out.exists(), "a run directory was written"
    assert tree_digest(tmp_path) == files_before, "a file was written (an SQLite database?)"
    assert {db: db_snapshot(pg_cluster, db) for db in bad_input_dbs.values()} == before, "the database was written"
    assert before[bad_input_dbs["empty"]] == {}, "Optuna's tables were created in the empty database"


# -- 2. a search to completion on PostgreSQL -------------------------------------------------------


@pytest.mark.slow
def test_search_on_postgresql_completes(shared: Any, pg_cluster: PgCluster, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    assert shared.returncode == 0, shared.output[-3000:]
    run = shared.run_dir
    meta = json.loads((run / "run.json").read_text())
    # run.json names the database without its password, and a study name of this run's own
    assert meta["storage"] == pg_cluster.url(shared.db) and pg_cluster.password not in meta["storage"]
    assert meta["study_name"].startswith("search-run-") and len(meta["study_name"]) == len("search-run-") + 6
    assert pg_cluster.studies(shared.db) == [meta["study_name"]]
    assert not shared.password_in, f"the password was written to {shared.password_in}"
    assert pg_cluster.password not in shared.output and f"study {meta['study_name']} in {meta['storage']}" in shared.output
    assert not (run / "study.journal").exists()
    monkeypatch.setenv("PGPASSWORD", pg_cluster.password)
    report, trials = assert_finished_db_run(run, shared.url, TRIALS)
    assert (report["storage"], report["study_name"]) == (meta["storage"], meta["study_name"])
    # the driver kept heartbeats for every trial it trained (Optuna's table, plain SQL)
    trained_ids = {t._trial_id for t in trials.values() if trained(t)}
    assert trained_ids <= heartbeat_trial_ids(pg_cluster, shared.db)
    assert meta["counts"]["trained"] == TRIALS and meta["status"] == "finished"
    # every reader finds the study from run.json alone (password from PGPASSWORD)
    for argv in (["runs", str(run.parent)], ["report", str(run)], ["export", str(run), "--out", str(tmp_path / "x")],
                 ["compare", str(run), str(run)], ["status", str(run)]):  # fmt: skip
        assert main(argv) == 0, argv
        capsys.readouterr()
    assert main(["runs", str(run.parent), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["run"], r["trained"], r["total"]) for r in rows] == [("run", TRIALS, len(trials))]
    # without the password: one line that says where to give it
    monkeypatch.delenv("PGPASSWORD")
    assert main(["status", str(run)]) == 2
    err = one_line_error(capsys.readouterr().err)
    assert "no password supplied" in err and "PGPASSWORD" in err
    print(f"search on PostgreSQL: {shared.seconds:.1f} s; counts {report}")


@pytest.mark.slow
def test_resume_refuses_a_storage_mismatch(shared: Any, pg_cluster: PgCluster, capsys: pytest.CaptureFixture[str],
                                           monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """A resume names the run's own storage only: another database, a study name, a wrong
    password: one line, exit 2, the run directory byte-identical."""
    assert shared.returncode == 0, shared.output[-3000:]
    monkeypatch.setattr("nas.search.runner.start_ray", lambda *a, **k: pytest.fail("Ray was started"))
    monkeypatch.delenv("PGPASSWORD", raising=False)
    run = shared.run_dir
    cases = {
        "other database": (["--storage", pg_cluster.url("bad_empty", password=pg_cluster.password)],
                           "is not this run's storage"),
        "study name": (["--study-name", "other"], "a resumed run keeps its own"),
        "wrong password": (["--storage", pg_cluster.url(shared.db, password="nope")], "password authentication failed"),
        "no password": ([], "no password supplied"),
    }  # fmt: skip
    for name, (extra, expected) in cases.items():
        before = tree_digest(run)
        code = main(["search", "--resume", "--out", str(run), *extra])
        err = one_line_error(capsys.readouterr().err)
        assert code == 2 and expected in err, (name, err)
        assert pg_cluster.password not in err and "nope" not in err
        assert tree_digest(run) == before, f"{name}: the run directory changed"


# -- 3. SIGKILL of the driver mid-training, then --resume -----------------------------------------


@pytest.mark.slow
def test_sigkill_mid_training_then_resume_on_postgresql(pg_cluster: PgCluster, tmp_path: Path, tagged: Tagged,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """The driver (and its Ray) SIGKILLed while a trial trains: the trials it left RUNNING keep
    their last heartbeat; `nas search --resume` waits for those to lapse, marks them interrupted
    and re-queues their architectures; everything finished before the kill is kept as it was, no
    architecture is trained twice, and the run finishes with the requested count."""
    requested = 6
    db = pg_cluster.create_database("killed")
    url_pw = pg_cluster.url(db, password=pg_cluster.password)
    space = write_space(tmp_path / "space.yaml")
    run = tmp_path / "run"
    log = tmp_path / "train.jsonl"
    env = tagged.env(HYBRID_NAS_TRAIN_LOG=str(log), PGPASSWORD=pg_cluster.password)
    monkeypatch.setenv("PGPASSWORD", pg_cluster.password)
    args = search_args(run, space, trials=requested, epochs=2, concurrency=2, extra=["--storage", pg_cluster.url(db)])
    started = time.monotonic()
    out1 = tmp_path / "search1.log"
    proc = start_cli(nas_cmd(*args), env, out1)

    def training_now() -> int | None:
        if not (run / "run.json").exists() or len([r for r in train_log(log) if result_json(run, r["number"])]) < 2:
            return None
        for row in train_log(log):
            if time.time() - row["time"] > 0.3 and result_json(run, row["number"]) is None:
                return int(row["number"])
        return None

    victim = wait_until("a trial in the middle of training", training_now, proc, out1)
    kill_group(proc, tagged)
    killed_at = time.monotonic()
    first = time.monotonic() - started
    study_name = json.loads((run / "run.json").read_text())["study_name"]
    before = db_trials(url_pw, study_name)  # the driver is gone: nothing writes the study now
    assert before[victim].state.name == "RUNNING", f"trial {victim} was not training when killed"
    running = {n for n, t in before.items() if t.state.name == "RUNNING"}
    assert status_json(run)["status"] == "interrupted"
    assert not (run / "study.journal").exists()

    resumed = run_cli(nas_cmd("search", "--resume", "--out", run), env, timeout=400)
    resume_s = time.monotonic() - killed_at
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "waiting up to" in resumed.stderr and "to lapse" in resumed.stderr, resumed.stderr[-2000:]
    assert f"{len(running)} interrupted trial(s) marked failed and re-queued" in resumed.stderr
    assert not tagged.wait_gone(45), "processes outlived a finished search"
    report, end = assert_finished_db_run(run, url_pw, requested)

    for number, t in before.items():  # every trial finished before the kill is kept as it was
        after = end[number]
        if number in running:
            assert after.state.name == "FAIL" and after.user_attrs.get("interrupted"), number
            continue
        assert after.state == t.state and after.values == t.values, number
        for key in ("status", "val_acc", "arch_hash", "macs", "epochs_trained"):
            assert after.user_attrs.get(key) == t.user_attrs.get(key), (number, key)
    assert report["interrupted"] == len(running)
    # each interrupted architecture was trained again, by a later trial (re-queued, not lost)
    for number in running:
        if before[number].user_attrs.get("arch_hash") and before[number].params:
            again = [t for t in end.values() if t.number > number and trained(t)
                     and t.user_attrs["arch_hash"] == before[number].user_attrs["arch_hash"]]  # fmt: skip
            assert again, f"trial {number}'s architecture was not re-trained after the resume"
    rows = train_log(log)
    assert len({r["number"] for r in rows}) == len(rows), "a trial number was trained twice"
    interrupted_hashes = [t.user_attrs.get("arch_hash") for t in end.values() if t.user_attrs.get("interrupted")]
    for h in {r["arch_hash"] for r in rows}:
        starts = sum(r["arch_hash"] == h for r in rows)
        assert starts <= 1 + interrupted_hashes.count(h), f"architecture {h[:8]} trained {starts} times"
    assert not files_containing(run, pg_cluster.password.encode())
    print(f"kill after {first:.1f} s (victim trial {victim}, {len(running)} running); resume {resume_s:.1f} s; "
          f"{report['total']} trials, {report['interrupted']} interrupted")  # fmt: skip


# -- 4. two searches side by side in one database ------------------------------------------------


@pytest.mark.slow
def test_two_searches_share_one_database(pg_cluster: PgCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two searches at once on one database, one with a derived study name and one with
    --study-name: both finish, each study holds exactly its own run's trials."""
    db = pg_cluster.create_database("pair")
    url_pw = pg_cluster.url(db, password=pg_cluster.password)
    monkeypatch.setenv("PGPASSWORD", pg_cluster.password)
    space = write_space(tmp_path / "space.yaml")
    runs = {"a": tmp_path / "runs" / "a", "b": tmp_path / "runs" / "b"}
    extra = {"a": ["--storage", pg_cluster.url(db)], "b": ["--storage", pg_cluster.url(db), "--study-name", "pair-b"]}
    seeds = {"a": "0", "b": "1"}
    taggeds = {k: Tagged() for k in runs}
    procs = {}
    try:
        for k, run in runs.items():
            args = search_args(run, space, trials=3, epochs=1, concurrency=1, extra=extra[k])
            args[args.index("--seed") + 1] = seeds[k]
            procs[k] = start_cli(nas_cmd(*args), taggeds[k].env(PGPASSWORD=pg_cluster.password), tmp_path / f"{k}.log")
        for k, proc in procs.items():
            assert proc.wait(timeout=400) == 0, (tmp_path / f"{k}.log").read_text()[-3000:]
    finally:
        for t in taggeds.values():
            t.cleanup()
    names = {k: json.loads((run / "run.json").read_text())["study_name"] for k, run in runs.items()}
    assert names["b"] == "pair-b" and names["a"].startswith("search-a-") and names["a"] != names["b"]
    assert sorted(pg_cluster.studies(db)) == sorted(names.values())
    for k, run in runs.items():
        _, trials = assert_finished_db_run(run, url_pw, 3)
        for t in trials.values():  # the study's trials are this run's: their configs are in its trials/
            cfg = (run / "trials" / f"{t.number:05d}" / "config.yaml").read_text()
            assert f"name: trial_{t.number:05d}" in cfg and t.user_attrs["config"]["name"] == f"trial_{t.number:05d}"
            assert (run / "trials" / f"{t.number:05d}" / "result.json").exists()
        assert not (run / "study.journal").exists()
    rows = {r["run"]: r for r in _runs_json(tmp_path / "runs")}
    assert {k: (r["status"], r["trained"]) for k, r in rows.items()} == {"a": ("finished", 3), "b": ("finished", 3)}


def _runs_json(folder: Path) -> list[dict[str, Any]]:
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["runs", str(folder), "--json"]) == 0
    return json.loads(out.getvalue())


# -- 5. SQLite ----------------------------------------------------------------------------------


def test_sqlite_storage_url_is_recorded_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A relative sqlite:/// path is recorded absolute (readers run from anywhere) and a reader
    never creates the file."""
    from results.run_dir import RunDir
    from results.storage import RunStorage

    monkeypatch.chdir(tmp_path)
    rd = RunDir(tmp_path / "run")
    where = RunStorage.for_new_run(rd, "sqlite:///studies/nas.db", None)
    assert where.record()["storage"] == f"sqlite:///{tmp_path}/studies/nas.db"
    assert where.study_name.startswith("search-run-")
    rd.create({"budget_macs": 1}, "name: x\n", where.record())
    from search_space.errors import UserError

    with pytest.raises(UserError, match="SQLite storage .* is missing"):
        rd.storage().load_study()
    assert not (tmp_path / "studies").exists()
