"""`nas search --storage`: the study's database goes away mid-search.

The search ends with one line naming the database (never its password) and what happened, no
traceback or log spam (Tune, Optuna, SQLAlchemy, the heartbeat thread), exit status 2, run.json
``interrupted`` with a short error naming the database, Ray shut down; once the server is back,
``nas search --resume`` finishes the run (trials left RUNNING are marked interrupted and re-queued).

The end-to-end test stops a private throwaway PostgreSQL cluster (tests/pg_cluster.py) with
``pg_ctl stop -m fast`` while trials train, and starts it again on the same data directory and port
(``pg_ctl restart`` reuses the options it was started with). The fast tests check how database
errors are told from others (`storage.connection_error`), however they are wrapped.
"""

from __future__ import annotations

import builtins
import json
import logging
import pickle
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from fault_helpers import Tagged, nas_cmd, result_json, run_cli, search_args, start_cli, train_log, wait_until, write_space
from storage_helpers import assert_finished_db_run, db_trials, files_containing

from results import storage as S
from results.run_dir import RunDir

# what a search may meet while `pg_ctl stop -m fast` runs, and once it has
SHUTDOWN_PHRASES = ("connection refused", "the server is shutting down", "the server ended the connection",
                    "the server closed the connection", "connection lost")  # fmt: skip
REFUSED = ('connection failed: connection to server at "127.0.0.1", port 5433 failed: Connection refused\n'
           "\tIs the server running on that host and accepting TCP/IP connections?")  # fmt: skip


# -- how a lost database is recognised ------------------------------------------------------------


def _raised(make: Any, cause: BaseException | None = None, context: BaseException | None = None) -> BaseException:
    """``make()`` raised as Python would: ``from cause``, or while handling ``context``."""
    try:
        if context is not None:
            try:
                raise context
            except BaseException:
                raise make() from cause if cause is not None else make()
        if cause is not None:
            raise make() from cause
        raise make()
    except BaseException as exc:  # noqa: BLE001
        return exc


def _sa_operational(text: str = REFUSED) -> BaseException:
    import psycopg
    from sqlalchemy import exc as sa

    return sa.OperationalError("SELECT 1", {}, psycopg.OperationalError(text))


def _lost_cases() -> dict[str, BaseException]:
    import psycopg
    from optuna.exceptions import StorageInternalError
    from ray.tune.error import TuneError
    from sqlalchemy import exc as sa

    committed = _raised(lambda: StorageInternalError("An exception is raised during the commit."), _sa_operational())
    traceback_text = ("Traceback (most recent call last):\n  File \"x.py\", line 1, in f\n"
                      "sqlalchemy.exc.OperationalError: (psycopg.OperationalError) " + REFUSED.splitlines()[0] + "\n")  # fmt: skip
    cases = {
        "psycopg": psycopg.OperationalError(REFUSED),
        "admin shutdown": psycopg.errors.AdminShutdown("terminating connection due to administrator command"),
        "sqlalchemy operational": _sa_operational(),
        "sqlalchemy interface": sa.InterfaceError("SELECT 1", {}, psycopg.InterfaceError("the connection is closed")),
        "disconnection": sa.DisconnectionError("connection invalidated"),
        "optuna commit": committed,
        "tune wraps it (context)": _raised(lambda: TuneError("Traceback (most recent call last): ..."), None, committed),
        "tune quotes it (text only)": TuneError(traceback_text),
    }
    group = getattr(builtins, "ExceptionGroup", None)  # Python 3.11+
    if group is not None:
        cases["exception group"] = group("several", [ValueError("x"), committed])
    return cases


def _other_cases() -> dict[str, BaseException]:
    import errno

    import psycopg
    from optuna.exceptions import StorageInternalError
    from ray.tune.error import TuneError
    from sqlalchemy import exc as sa

    integrity = sa.IntegrityError("INSERT", {}, psycopg.errors.UniqueViolation("duplicate key value"))
    return {
        "value error": ValueError("bad"),
        "disk full": OSError(errno.ENOSPC, "No space left on device"),
        "integrity": integrity,
        "optuna commit of bad data": _raised(lambda: StorageInternalError("commit"), integrity),
        "tune error of a trial": TuneError("Traceback (most recent call last):\nZeroDivisionError: division by zero\n"),
        "user error": S.UserError("cannot use the storage x"),
    }


def test_connection_errors_are_recognised_however_wrapped() -> None:
    for name, exc in _lost_cases().items():
        assert S.connection_error(exc) is not None, name
        assert S.Outage().note(exc), name
    for name, exc in _other_cases().items():
        assert S.connection_error(exc) is None, name
        outage = S.Outage()
        assert not outage.note(exc) and not outage, name


def test_the_line_names_the_database_never_the_password(tmp_path: Path) -> None:
    url = S.parse_url("postgresql+psycopg://nas:s3cr3t-pw@127.0.0.1:5433/nas")
    where = S.RunStorage(RunDir(tmp_path / "run"), "search-run-abc123", url)
    phrases = {
        REFUSED: "connection refused",
        "terminating connection due to administrator command": "the server ended the connection",
        "server closed the connection unexpectedly\n\tThis probably means the server terminated abnormally": "the server closed the connection",
        'connection failed: connection to server at "10.0.0.9", port 5432 failed: timeout expired': "connection timed out",
        "the database system is shutting down": "the server is shutting down",
        'FATAL: password authentication failed for user "nas" (password s3cr3t-pw)': 'FATAL: password authentication failed for user "nas" (password ***)',
    }  # fmt: skip
    for text, phrase in phrases.items():
        lost = S.database_lost(where, _raised(lambda t=text: S.UserError("wrapped"), _sa_operational(text)))
        short = f"lost the study's database postgresql+psycopg://nas@127.0.0.1:5433/nas ({phrase})"
        assert lost.short == short, (text, lost.short)
        assert str(lost) == (f"{short}; the run is interrupted: continue with nas search --resume --out "
                             f"{tmp_path / 'run'} once it is reachable")  # fmt: skip
        assert "s3cr3t" not in str(lost) and "\n" not in str(lost)
    # the old one-line error of a storage that cannot be used still quotes the driver's words
    err = S.database_error(url, _lost_cases()["optuna commit"])
    assert "Connection refused" in str(err) and "is the server running" in str(err), err


def test_the_runner_turns_a_wrapped_database_error_into_the_one_line(tmp_path: Path) -> None:
    from nas.search.runner import _database_lost

    rd = RunDir(tmp_path / "run")
    database = S.RunStorage(rd, "s", S.parse_url("postgresql+psycopg://nas@127.0.0.1:5433/nas"))
    lost = _database_lost(database, _lost_cases()["tune wraps it (context)"])
    assert lost is not None and lost.short.startswith("lost the study's database postgresql+psycopg://nas@127.0.0.1")
    assert _database_lost(database, ValueError("x")) is None
    assert _database_lost(S.RunStorage(rd), _lost_cases()["psycopg"]) is None  # a journal has no database to lose


def test_outage_pickles_without_its_error() -> None:
    outage = S.Outage()
    assert outage.note(_lost_cases()["optuna commit"]) and outage
    assert not pickle.loads(pickle.dumps(outage))  # Tune pickles its configuration (the stopper holds it)


class _FailingStorage:
    def __init__(self, exc: BaseException) -> None:
        self.exc, self.calls = exc, 0

    def get_heartbeat_interval(self) -> int:
        return 5

    def record_heartbeat(self, trial_id: int) -> None:
        self.calls += 1
        raise self.exc


def test_heartbeats_note_a_lost_database_and_stop_quietly(monkeypatch: pytest.MonkeyPatch,
                                                          caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    monkeypatch.setattr(S, "HEARTBEAT_INTERVAL_S", 0.02)
    storage = _FailingStorage(_lost_cases()["optuna commit"])
    outage = S.Outage()
    with caplog.at_level(logging.DEBUG), S.Heartbeats(storage, lambda: [1, 2, 3], outage) as beats:
        deadline = time.monotonic() + 10
        while beats.thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not beats.thread.is_alive(), "the heartbeat thread went on after losing the database"
    assert outage and storage.calls == 1
    assert not caplog.records, [r.getMessage() for r in caplog.records]
    # another error is a lost beat: said once, retried
    other = _FailingStorage(ValueError("odd"))
    outage = S.Outage()
    with caplog.at_level(logging.WARNING), S.Heartbeats(other, lambda: [1], outage):
        deadline = time.monotonic() + 10
        while other.calls < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
    assert other.calls >= 3 and not outage
    assert [r.getMessage() for r in caplog.records] == ["could not record a trial heartbeat: odd"]


def test_the_searcher_notes_a_lost_database_instead_of_raising_into_tune() -> None:
    from types import SimpleNamespace

    from nas.search.searcher import NasSearcher

    stub = SimpleNamespace(outage=S.Outage(), disk_full=None)
    with NasSearcher._guard(stub):  # type: ignore[arg-type]
        raise _lost_cases()["optuna commit"]
    assert stub.outage and stub.disk_full is None
    with pytest.raises(ValueError), NasSearcher._guard(stub):  # type: ignore[arg-type]
        raise ValueError("a bug is still a bug")


# -- end to end: PostgreSQL stopped while trials train, then resumed ------------------------------


@pytest.fixture
def tagged() -> Any:
    t = Tagged()
    yield t
    t.cleanup()  # SIGKILL by PID whatever a failed test left behind


@pytest.fixture
def private_cluster() -> Any:
    """A cluster of this test's own: it is stopped on purpose, which the session's shared one must
    never be (other tests use it)."""
    from pg_cluster import start_cluster

    cluster = start_cluster()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.mark.slow
def test_database_stopped_mid_search_is_one_line_then_resume(private_cluster: Any, tmp_path: Path, tagged: Tagged,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    c = private_cluster
    requested = 4
    db = c.create_database("outage")
    url_pw = c.url(db, password=c.password)
    shown = c.url(db)  # as run.json and the messages show it: no password
    data = str(c.root / "data")
    space = write_space(tmp_path / "space.yaml")
    run = tmp_path / "run"
    log = tmp_path / "train.jsonl"
    env = tagged.env(HYBRID_NAS_TRAIN_LOG=str(log))
    env.pop("PGPASSWORD", None)  # the password in the URL: it must not show anywhere
    args = search_args(run, space, trials=requested, epochs=3, concurrency=2, extra=["--storage", url_pw])
    out = tmp_path / "search.log"
    proc = start_cli(nas_cmd(*args), env, out)

    def training_now() -> int | None:  # one trial finished (kept by the resume), another one training
        if not (run / "run.json").exists() or not [r for r in train_log(log) if result_json(run, r["number"])]:
            return None
        for row in train_log(log):
            if time.time() - row["time"] > 0.3 and result_json(run, row["number"]) is None:
                return int(row["number"])
        return None

    victim = wait_until("a trial in the middle of training", training_now, proc, out)
    stopped = c._run("pg_ctl", "-D", data, "-m", "fast", "-w", "stop")
    assert stopped.returncode == 0, stopped.stderr
    stopped_at = time.monotonic()
    try:
        code = proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the search went on without its database:\n{out.read_text()[-3000:]}")
    exit_s = time.monotonic() - stopped_at
    output = out.read_text()
    lines = output.splitlines()
    errors = [ln for ln in lines if "error" in ln.lower()]
    assert code == 2, (code, output[-3000:])
    assert len(errors) == 1 and errors[0].startswith("error: "), output[-3000:]
    line = re.fullmatch(rf"error: lost the study's database {re.escape(shown)} \(([^()]+)\); the run is interrupted: "
                        rf"continue with nas search --resume --out {re.escape(str(run))} once it is reachable", errors[0])  # fmt: skip
    assert line is not None, errors[0]
    assert line.group(1) in SHUTDOWN_PHRASES, errors[0]  # what happened depends on when the search met it
    assert "Traceback" not in output and "WARNING" not in output and len(lines) <= 30, output[-3000:]
    assert c.password not in output
    assert not tagged.wait_gone(45), "processes outlived the search"

    meta = json.loads((run / "run.json").read_text())
    assert meta["status"] == "interrupted", meta["status"]
    assert meta["error"] == f"lost the study's database {shown} ({line.group(1)})", meta["error"]
    study_name = meta["study_name"]

    # the server is back (same data directory, same port): the resume finishes the run
    started = c._run("pg_ctl", "-D", data, "-l", str(c.root / "log"), "-w", "-t", "60", "restart")
    assert started.returncode == 0, started.stderr
    before = db_trials(url_pw, study_name)
    running = {n for n, t in before.items() if t.state.name == "RUNNING"}
    assert victim in running, f"trial {victim} was not left RUNNING ({running})"
    env["PGPASSWORD"] = c.password
    monkeypatch.setenv("PGPASSWORD", c.password)
    resumed = run_cli(nas_cmd("search", "--resume", "--out", run), env, timeout=400)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"{len(running)} interrupted trial(s) marked failed and re-queued" in resumed.stderr, resumed.stderr[-2000:]
    assert not tagged.wait_gone(45), "processes outlived the resumed search"
    report, end = assert_finished_db_run(run, url_pw, requested)
    for number, t in before.items():  # what was told before the outage is kept as it was
        if number in running:
            assert end[number].state.name == "FAIL" and end[number].user_attrs.get("interrupted"), number
        else:
            assert (end[number].state, end[number].values) == (t.state, t.values), number
    assert report["interrupted"] == len(running)
    assert not files_containing(run, c.password.encode())
    print(f"exit {exit_s:.1f} s after the server stopped ({len(lines)} lines); {len(running)} trial(s) re-queued; "
          f"{report['total']} trials")  # fmt: skip
