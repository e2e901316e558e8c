"""Shared test setup: keep torch to few threads (CI has 2 cores) and small helpers."""

from __future__ import annotations

import os

import pytest
import torch
from tiny_config import make_tiny_cfg

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
os.environ.setdefault("RAY_DEDUP_LOGS", "0")


@pytest.fixture
def tiny_cfg():
    return make_tiny_cfg()


@pytest.fixture
def cli(capsys):
    """Run the `nas` CLI in-process: returns (exit code, stdout, stderr). Usage errors exit via SystemExit."""

    def run(*argv: str, main=None):
        from nas.cli import main as nas_main

        try:
            code = (main or nas_main)([str(a) for a in argv])
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        out, err = capsys.readouterr()
        return code, out, err

    return run


def pytest_sessionfinish(session, exitstatus):
    """Under CI=true a skipped test fails the run: `install.sh --test` installs every tool the
    tests need (chromium, onnxruntime), so a skip there means a missing install step."""
    if os.environ.get("CI") != "true":
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter is not None else []
    if skipped and session.exitstatus == 0:
        names = ", ".join(sorted({r.nodeid for r in skipped})[:5])
        reporter.write_line(f"CI=true: {len(skipped)} test(s) skipped ({names}): failing the run", red=True)
        session.exitstatus = 1


@pytest.fixture(scope="session")
def pg_cluster():
    """A throwaway PostgreSQL server for the session (tests/pg_cluster.py: initdb + pg_ctl in a temp
    dir, 127.0.0.1 on a free port, password auth); stopped and removed at the end, whatever happened."""
    from pg_cluster import start_cluster

    cluster = start_cluster()
    try:
        yield cluster
    finally:
        cluster.stop()
