"""`nas search --address` against a local two-node Ray cluster on loopback.

The cluster is a head (`ray start --head --port P --node-ip-address 127.0.0.1 --include-dashboard
false --num-cpus 1`) plus a second node (`ray start --address 127.0.0.1:P --num-cpus 1`), each run
with ``--block`` in its own session so that teardown can end exactly these processes (their whole
process groups), never another user's Ray (`ray stop --force` would kill every Ray process on the
machine). The cluster gets its own temp dir (short path: Ray's Unix sockets live there) and its own
authentication token, so it neither reads nor writes ~/.ray/auth_token.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "ray start --head exited early"
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)
    raise TimeoutError(f"the Ray head did not open port {port} in {timeout:.0f}s")


WAIT_FOR_NODES = """
import sys, time, ray
ray.init(address=sys.argv[1], _node_ip_address="127.0.0.1", logging_level="ERROR", log_to_driver=False)
deadline = time.monotonic() + float(sys.argv[3])
while time.monotonic() < deadline:
    if len([n for n in ray.nodes() if n["Alive"]]) >= int(sys.argv[2]):
        sys.exit(0)
    time.sleep(0.5)
sys.exit(1)
"""


def stop_group(proc: subprocess.Popen) -> None:
    """End one `ray start --block` and every process it started (its process group)."""
    if proc.poll() is not None and not _group_alive(proc.pid):
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)  # --block stops the node's processes (after draining, up to 30 s)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=8)
    except subprocess.TimeoutExpired:
        pass  # no work is left to drain: the group is killed below
    if _group_alive(proc.pid):
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


@pytest.fixture
def ray_cluster(tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    port = free_port()
    temp_dir = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # AF_UNIX paths must stay short
    env = dict(os.environ, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32), RAY_USAGE_STATS_ENABLED="0")
    env.pop("RAY_ADDRESS", None)
    address = f"127.0.0.1:{port}"
    common = ["--node-ip-address", "127.0.0.1", "--num-cpus", "1", "--block", "--disable-usage-stats"]
    head_cmd = ["ray", "start", "--head", "--port", str(port), "--include-dashboard", "false", "--temp-dir", temp_dir]
    procs: list[subprocess.Popen] = []
    with open(tmp_path / "head.log", "w") as head_log, open(tmp_path / "worker.log", "w") as worker_log:
        try:
            procs.append(subprocess.Popen([*head_cmd, *common], stdout=head_log, stderr=subprocess.STDOUT, env=env,
                                          start_new_session=True))  # fmt: skip
            wait_for_port(port, procs[0], timeout=180)
            procs.append(subprocess.Popen(["ray", "start", "--address", address, *common], stdout=worker_log,
                                          stderr=subprocess.STDOUT, env=env, start_new_session=True))  # fmt: skip
            ready = subprocess.run([sys.executable, "-c", WAIT_FOR_NODES, address, "2", "180"], env=env, timeout=300,
                                   check=False)  # fmt: skip
            assert ready.returncode == 0, (tmp_path / "worker.log").read_text()[-2000:]
            yield address, env
        finally:
            for proc in reversed(procs):
                stop_group(proc)
            shutil.rmtree(temp_dir, ignore_errors=True)


def test_search_on_a_two_node_cluster(ray_cluster: tuple[str, dict[str, str]], tmp_path: Path) -> None:
    address, env = ray_cluster
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "nas.cli", "search", "--address", address, "--budget", "1.5G", "--trials", "3",
         "--epochs", "1", "--proxy-width", "0.25", "--data-fraction", "0.25", "--concurrency", "2", "--seed", "5",
         "--data", "digits", "--out", str(out)],
        capture_output=True, text=True, env=dict(env, PYTHONUNBUFFERED="1"), timeout=600, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "on 2 node(s)" in proc.stderr
    run_json = json.loads((out / "run.json").read_text())
    assert run_json["status"] == "finished"
    assert run_json["settings"]["address"] == address
    assert run_json["resources"]["nodes"] == 2 and run_json["resources"]["threads"] == 1
    results = [json.loads(p.read_text()) for p in out.glob("trials/*/result.json")]
    trained = [r for r in results if r["trained"]]
    assert len(trained) == 3 and all(r["status"] in ("complete", "pruned", "failed") for r in trained)
    # two trials at a time on two one-CPU nodes: the first two ran side by side, one per node
    assert len({r["node_id"] for r in trained if r.get("node_id")}) == 2
    status = subprocess.run([sys.executable, "-m", "nas.cli", "status", str(out), "--json"],
                            capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    counts = json.loads(status.stdout)
    assert counts["trained"] == 3 and counts["running"] == 0
