"""Shared by the database-storage and dashboard tests: reading a study straight from PostgreSQL
(Optuna's own RDBStorage or plain SQL, never `results.storage`), checks of a finished run, and
one real search on PostgreSQL run once per test session and reused read-only.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fault_helpers import COUNT_KEYS, Tagged, nas_cmd, result_json, search_args, start_cli, status_json, trained, write_space
from pg_cluster import PgCluster


def db_trials(url: str, study_name: str) -> dict[int, Any]:
    """The trials of a study read with Optuna's RDBStorage directly, by number."""
    import warnings

    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    storage = optuna.storages.RDBStorage(url, skip_table_creation=True)
    try:
        study = optuna.load_study(study_name=study_name, storage=storage)
        return {t.number: t for t in study.get_trials(deepcopy=True)}
    finally:
        storage.engine.dispose()


def db_snapshot(cluster: PgCluster, db: str) -> dict[str, int]:
    """Rows per table of a database (plain SQL): "nothing written" compares two of these."""
    with cluster.connect(db) as conn:
        tables = [r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
        return {t: int(conn.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0]) for t in sorted(tables)}


def heartbeat_trial_ids(cluster: PgCluster, db: str) -> set[int]:
    """Trial ids with a heartbeat row (Optuna's trial_heartbeats table, plain SQL)."""
    with cluster.connect(db) as conn:
        return {int(r[0]) for r in conn.execute("SELECT trial_id FROM trial_heartbeats")}


def files_containing(root: Path, needle: bytes) -> list[str]:
    found = []
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            path = Path(dirpath, name)
            try:
                if not path.is_symlink() and needle in path.read_bytes():
                    found.append(str(path))
            except OSError:
                continue
    return found


def assert_finished_db_run(run_dir: Path, url: str, requested: int) -> tuple[dict[str, Any], dict[int, Any]]:
    """A finished run on a database: no journal, no RUNNING trial, counts that add up (nas status
    against the study read directly), the requested number trained, no architecture trained twice."""
    from optuna.trial import TrialState

    meta = json.loads((run_dir / "run.json").read_text())
    assert not (run_dir / "study.journal").exists(), "a database-backed run directory holds a journal"
    trials = db_trials(url, meta["study_name"])
    report = status_json(run_dir)
    assert not [n for n, t in trials.items() if t.state == TrialState.RUNNING], "a trial was left RUNNING"
    assert report["running"] == 0 and report["status"] == "finished", report
    assert sum(report[k] for k in COUNT_KEYS) == report["total"] == len(trials), (report, len(trials))
    assert report["trained"] == report["complete"] + report["pruned"] + report["failed"] - report["interrupted"]
    assert report["trained"] == requested == sum(trained(t) for t in trials.values()), report
    hashes = [t.user_attrs["arch_hash"] for t in trials.values() if trained(t)]
    assert len(set(hashes)) == len(hashes), "an architecture was trained twice"
    for t in trials.values():
        if trained(t):
            rj = result_json(run_dir, t.number)
            assert rj is not None and rj["status"] == t.user_attrs["status"] and rj["state"] == t.state.name, t.number
    return report, trials


# -- one real search on PostgreSQL, shared by the modules that only read it ------------------------


@dataclass
class SharedPgRun:
    run_dir: Path
    db: str
    url: str  # with the password: for the tests' own reads only
    returncode: int
    output: str
    seconds: float
    password_in: list[str]  # files of the run directory or Ray's temp dir holding the password


_SHARED: dict[str, SharedPgRun] = {}

TRIALS = 4


def shared_pg_run(cluster: PgCluster, base: Path) -> SharedPgRun:
    """A finished tiny search (TINY_SPACE, 4 trials, 1 epoch, 2 at a time) with ``--storage`` on
    PostgreSQL, the password given in the URL. Run once per session and cluster (in ``base`` the
    first time); callers must not modify it."""
    key = str(cluster.port)
    if key in _SHARED:
        return _SHARED[key]
    db = cluster.create_database("shared")
    url = cluster.url(db, password=cluster.password)
    space = write_space(base / "space.yaml")
    run_dir = base / "run"
    tagged = Tagged()
    log = base / "shared_pg_search.log"
    env = tagged.env()
    env.pop("PGPASSWORD", None)
    started = time.monotonic()
    try:
        proc = start_cli(nas_cmd(*search_args(run_dir, space, trials=TRIALS, epochs=1, concurrency=2,
                                              extra=["--storage", url])), env, log)  # fmt: skip
        proc.wait(timeout=400)
        seconds = time.monotonic() - started
        tagged.wait_gone(45)
        needle = cluster.password.encode()
        leaks = files_containing(run_dir, needle) + files_containing(tagged.ray_tmp, needle)
    finally:
        tagged.cleanup()
    _SHARED[key] = SharedPgRun(run_dir, db, url, proc.returncode, log.read_text(), seconds, leaks)
    return _SHARED[key]
