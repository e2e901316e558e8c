"""Cluster faults: a worker node dies mid-trial; the trial is retried on the surviving node and the
search completes with the requested number of trained architectures.

The cluster is two one-CPU nodes on loopback, each a ``ray start --block`` in a session of its own:
a head (``--head --node-ip-address 127.0.0.1 --port P --include-dashboard false``) and a worker
(``--address 127.0.0.1:P``). It gets its own temp dir, ports, and authentication token (so it
neither reads nor writes ~/.ray/auth_token), and a fast node health check so the head declares
the killed node dead within a few seconds. Teardown ends exactly the processes this test started
(by PID, found through the test's tag), never another Ray on the machine.
"""

from __future__ import annotations

import re
import secrets
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fault_helpers import (
    Tagged,
    assert_consistent,
    cmdline,
    nas_cmd,
    result_json,
    search_args,
    start_cli,
    study_trials,
    train_log,
    wait_until,
    write_space,
)

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pgid(pid: int) -> int | None:
    try:
        return __import__("os").getpgid(pid)
    except ProcessLookupError:
        return None


def raylet_of(tagged: Tagged, group: int) -> tuple[int, str] | None:
    """(pid, node id) of the raylet started by the ``ray start`` whose process group is ``group``."""
    for pid in tagged.pids():
        cmd = cmdline(pid)
        if "raylet/raylet" in cmd and pgid(pid) == group:
            node = re.search(r"--node_id=([0-9a-f]+)", cmd)
            if node:
                return pid, node.group(1)
    return None


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[dict[str, Any]]:
    tagged = Tagged()
    port = free_port()
    env = tagged.env(
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN=secrets.token_hex(32),
        # declare a dead node dead quickly (defaults: 3 s period x 5 failures after a 5 s delay)
        RAY_health_check_period_ms="500",
        RAY_health_check_timeout_ms="500",
        RAY_health_check_failure_threshold="3",
        RAY_health_check_initial_delay_ms="1000",
    )
    node = ["--node-ip-address", "127.0.0.1", "--num-cpus", "1", "--block", "--disable-usage-stats",
            "--dashboard-agent-listen-port", str(free_port()), "--dashboard-agent-grpc-port", str(free_port()),
            "--metrics-export-port", str(free_port()), "--runtime-env-agent-port", str(free_port())]  # fmt: skip
    try:
        head = start_cli(["ray", "start", "--head", "--port", str(port), "--include-dashboard", "false",
                          "--temp-dir", str(tagged.ray_tmp), *node], env, tmp_path / "head.log")  # fmt: skip
        wait_until("the head's raylet", lambda: raylet_of(tagged, head.pid), head, tmp_path / "head.log", timeout=180)
        node[node.index("--dashboard-agent-listen-port") + 1] = str(free_port())  # the worker's own ports
        node[node.index("--dashboard-agent-grpc-port") + 1] = str(free_port())
        node[node.index("--metrics-export-port") + 1] = str(free_port())
        node[node.index("--runtime-env-agent-port") + 1] = str(free_port())
        worker = start_cli(["ray", "start", "--address", f"127.0.0.1:{port}", *node], env, tmp_path / "worker.log")
        wait_until("the worker's raylet", lambda: raylet_of(tagged, worker.pid), worker, tmp_path / "worker.log",
                   timeout=180)  # fmt: skip
        yield {"address": f"127.0.0.1:{port}", "env": env, "tagged": tagged, "head": head, "worker": worker}
    finally:
        tagged.cleanup()  # SIGKILL every process of this cluster (and of the search) by PID


def test_worker_node_killed_mid_trial(cluster: dict[str, Any], tmp_path: Path) -> None:
    tagged: Tagged = cluster["tagged"]
    requested = 4
    space = write_space(tmp_path / "space.yaml")
    run = tmp_path / "run"
    log = tmp_path / "train.jsonl"
    env = dict(cluster["env"], HYBRID_NAS_TRAIN_LOG=str(log))
    # Full-width proxies on the whole digits split: an epoch long enough that the kill lands while the
    # victim trains, before ASHA could stop it after its first epoch.
    args = search_args(run, space, trials=requested, epochs=2, concurrency=2, data_fraction=1.0,
                       proxy_width=1.0, extra=["--address", cluster["address"], "--max-failures", "2"])  # fmt: skip
    out = tmp_path / "search.log"
    started = time.monotonic()
    search = start_cli(nas_cmd(*args), env, out)
    worker_raylet, worker_node = raylet_of(tagged, cluster["worker"].pid)  # type: ignore[misc]
    head_node = raylet_of(tagged, cluster["head"].pid)[1]  # type: ignore[index]

    def training_on_worker() -> int | None:
        for row in train_log(log):
            if row["node_id"] == worker_node and time.time() - row["time"] > 0.5 and result_json(run, row["number"]) is None:
                return int(row["number"])
        return None

    victim = wait_until("a trial training on the worker node", training_on_worker, search, out, timeout=300)
    signal_sent = time.monotonic()
    __import__("os").kill(worker_raylet, signal.SIGKILL)
    assert search.wait(timeout=400) == 0, out.read_text()[-4000:]
    seconds = time.monotonic() - started
    recovery = time.monotonic() - signal_sent

    report = assert_consistent(run, requested)
    trials = study_trials(run)
    victim_trial = trials[victim]
    assert victim_trial.user_attrs["status"] in ("complete", "pruned"), victim_trial.user_attrs
    assert victim_trial.user_attrs.get("retries", 0) >= 1
    starts = [r for r in train_log(log) if r["number"] == victim]
    assert starts[0]["node_id"] == worker_node and starts[-1]["node_id"] == head_node, starts
    assert result_json(run, victim).get("node_id") in (None, head_node)
    after_kill = [r for r in train_log(log) if r["time"] > starts[0]["time"] + 0.5]
    assert all(r["node_id"] == head_node for r in after_kill), "a trial ran on the dead node"
    print(f"cluster fault: trial {victim} retried on the head; search {seconds:.1f}s, "
          f"{recovery:.1f}s from the kill to the end; counts {report}")
