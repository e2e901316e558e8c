"""`nas dashboard`: optuna-dashboard on a run's study, read through its own HTTP API and a real browser.

The server is a real ``python -m nas.cli dashboard`` subprocess; what it serves is checked against
facts read independently (the study's trials by plain SQL, the run directory's result files):
the study and its trial count through the dashboard's JSON API (``/api/studies``), our per-trial
facts among the trials' user attributes, the socket bound to 127.0.0.1 only, the page rendered by
headless Chromium without console errors (and a screenshot), a journal run shown live (a trial
added while the server runs appears), and the server gone after SIGTERM.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from fault_helpers import listening_sockets, nas_cmd
from pg_cluster import PgCluster, free_port, missing_tool
from storage_helpers import TRIALS, shared_pg_run

@pytest.fixture(autouse=True)
def needs_optuna_dashboard() -> None:
    import importlib.util

    if importlib.util.find_spec("optuna_dashboard") is None:
        missing_tool("optuna-dashboard is not installed (pip install optuna-dashboard)")


CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
                  "--hide-scrollbars"]  # fmt: skip


def get_json(url: str) -> Any:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never through a proxy
    with opener.open(url, timeout=20) as resp:
        assert resp.status == 200, url
        return json.loads(resp.read())


class Dashboard:
    """`nas dashboard ARGS --port P` in a session of its own; stopped with SIGTERM."""

    def __init__(self, args: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.log = log
        full_env = {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"}
        full_env.update(env or {})
        with open(log, "w") as fh:
            self.proc = subprocess.Popen(nas_cmd("dashboard", *args, "--port", self.port), env=full_env, stdout=fh,
                                         stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
        self.base = f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"nas dashboard exited {self.proc.returncode}:\n{self.log.read_text()}"
            text = self.log.read_text()
            if f"{self.base}/" in text:
                try:
                    get_json(f"{self.base}/api/meta")
                    return text
                except OSError:
                    pass
            time.sleep(0.2)
        raise AssertionError(f"nas dashboard did not answer in {timeout} s:\n{self.log.read_text()}")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=15)
                raise AssertionError("nas dashboard ignored SIGTERM") from None
        return int(self.proc.returncode)


def study_from_api(base: str, name: str) -> tuple[int, dict[str, Any]]:
    studies = get_json(f"{base}/api/studies")["study_summaries"]
    ids = [s["study_id"] for s in studies if s["study_name"] == name]
    assert len(ids) == 1, studies
    return ids[0], get_json(f"{base}/api/studies/{ids[0]}?after=0")


@pytest.mark.slow
def test_dashboard_serves_a_postgresql_run(pg_cluster: PgCluster, tmp_path_factory: pytest.TempPathFactory,
                                           tmp_path: Path) -> None:  # fmt: skip
    shared = shared_pg_run(pg_cluster, tmp_path_factory.mktemp("pgrun"))
    assert shared.returncode == 0, shared.output[-3000:]
    run = shared.run_dir
    name = json.loads((run / "run.json").read_text())["study_name"]
    with pg_cluster.connect(shared.db) as conn:  # the trial count, by plain SQL
        count = conn.execute("SELECT count(*) FROM trials JOIN studies USING (study_id) WHERE study_name = %s",
                             (name,)).fetchone()[0]  # fmt: skip
    assert count >= TRIALS
    dash = Dashboard([str(run)], tmp_path / "dashboard.log", env={"PGPASSWORD": pg_cluster.password})
    try:
        started = time.monotonic()
        text = dash.wait_ready()
        ready_s = time.monotonic() - started
        assert f"{dash.base}/dashboard/studies/" in text and name in text
        assert pg_cluster.password not in text
        # bound to the loopback address only
        assert listening_sockets(dash.proc.pid) == [("127.0.0.1", dash.port)]
        study_id, detail = study_from_api(dash.base, name)
        assert detail["name"] == name and len(detail["trials"]) == count
        assert detail["directions"] == ["maximize", "minimize"]
        for t in detail["trials"]:
            attrs = {a["key"]: a["value"] for a in t["user_attrs"]}
            assert {"macs", "params", "blocks", "proxy", "arch_hash"} <= set(attrs), sorted(attrs)
            result = json.loads((run / "trials" / f"{t['number']:05d}" / "result.json").read_text())
            assert int(attrs["macs"]) == result["macs"] and int(attrs["params"]) == result["params"]
            assert json.loads(attrs["proxy"])["resolution"] == 32
            assert len(attrs["blocks"].split(" | ")) == 4
        browse(f"{dash.base}/dashboard/studies/{study_id}", name, tmp_path / "dashboard.png")
    finally:
        code = dash.stop()
    assert code == 0, dash.log.read_text()
    with pytest.raises(ConnectionRefusedError):  # nothing listens there any more
        socket.create_connection(("127.0.0.1", dash.port), timeout=5).close()
    print(f"dashboard answered after {ready_s:.1f} s; {count} trials via /api/studies/{study_id}")


def browse(url: str, name: str, shot: Path) -> None:
    """Headless Chromium: the page renders the study (its name in the DOM), logs no console error,
    and a screenshot is taken."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        missing_tool("Debian's chromium is not installed")
    work = Path(tempfile.mkdtemp(prefix="chromium-"))
    try:
        dom = subprocess.run([browser, *CHROMIUM_FLAGS, f"--user-data-dir={work / 'p1'}", "--enable-logging=stderr",
                              "--v=0", "--virtual-time-budget=15000", "--dump-dom", url],
                             capture_output=True, text=True, timeout=120)  # fmt: skip
        assert dom.returncode == 0, dom.stderr[-2000:]
        assert name in dom.stdout, "the dashboard page did not show the study"
        errors = [ln for ln in dom.stderr.splitlines()
                  if any(k in ln for k in ("Uncaught", "Failed to load resource", "net::ERR_"))
                  or ("CONSOLE" in ln and "rror" in ln)]  # fmt: skip
        assert not errors, errors[:5]
        shotrun = subprocess.run([browser, *CHROMIUM_FLAGS, f"--user-data-dir={work / 'p2'}", "--window-size=1280,900",
                                  "--virtual-time-budget=15000", f"--screenshot={shot}", url],
                                 capture_output=True, text=True, timeout=120)  # fmt: skip
        assert shotrun.returncode == 0, shotrun.stderr[-2000:]
        data = shot.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000, len(data)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def test_dashboard_on_a_journal_run_is_live(tmp_path: Path) -> None:
    """A journal run's study: the dashboard reads it through Optuna's JournalStorage, and a trial
    written while it runs shows up (as a search's would)."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    from results.run_dir import STUDY_NAME, RunDir

    rd = RunDir(tmp_path / "run")
    rd.create({"budget_macs": 4_000_000_000}, "name: x\n")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name=STUDY_NAME, directions=["maximize", "minimize"],
                                storage=JournalStorage(JournalFileBackend(str(rd.journal))))  # fmt: skip
    for i in range(2):
        study.add_trial(optuna.trial.create_trial(values=[0.5 + i / 10, 1e6], user_attrs={"macs": 1_000_000 + i}))
    dash = Dashboard([str(rd.path)], tmp_path / "dashboard.log")
    try:
        dash.wait_ready()
        _, detail = study_from_api(dash.base, STUDY_NAME)
        assert len(detail["trials"]) == 2
        study.add_trial(optuna.trial.create_trial(values=[0.9, 2e6], user_attrs={"macs": 2_000_000}))
        deadline = time.monotonic() + 15  # optuna-dashboard caches a study's trials for 2 s
        while len(detail["trials"]) < 3 and time.monotonic() < deadline:
            time.sleep(0.5)
            _, detail = study_from_api(dash.base, STUDY_NAME)
        assert len(detail["trials"]) == 3, "a trial added while the dashboard runs did not show"
        assert {a["key"]: a["value"] for a in detail["trials"][2]["user_attrs"]} == {"macs": "2000000"}
    finally:
        code = dash.stop()
    assert code == 0, dash.log.read_text()


def test_dashboard_bad_input(tmp_path: Path, cli: Any) -> None:
    """One line and exit 2, no server: nothing to serve, a missing run, a run with no study yet,
    a port in use, a malformed URL."""
    from results.run_dir import RunDir

    empty = RunDir(tmp_path / "empty")
    empty.create({"budget_macs": 4_000_000_000}, "name: x\n")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        run = RunDir(tmp_path / "run")
        run.create({"budget_macs": 4_000_000_000}, "name: x\n")
        import optuna
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        optuna.create_study(study_name="search", storage=JournalStorage(JournalFileBackend(str(run.journal))))
        cases = {
            "nothing": ([], "give a run directory"),
            "missing": ([str(tmp_path / "nope")], "no such run directory"),
            "no study yet": ([str(empty.path)], "no study yet"),
            "port in use": ([str(run.path), "--port", str(port)], f"cannot listen on 127.0.0.1:{port}"),
            "bad url": (["--storage", "mysql://a@b/c"], "unknown storage scheme"),
            "journal run with --storage": ([str(run.path), "--storage", "sqlite:///x.db"], "leave out --storage"),
        }
        for what, (argv, expected) in cases.items():
            code, out, err = cli("dashboard", *argv)
            assert code == 2 and err.count("\n") == 1 and expected in err, (what, err)
            assert "Traceback" not in err
    assert not empty.journal.exists(), "looking at a run created its journal"
