"""Shared by the bad-input, security, reliability and cluster-fault tests.

* a tiny search space (trials train in about a second at 32 px),
* ``Tagged``: an environment for ``nas search`` / ``ray start`` subprocesses carrying a unique tag
  and a private Ray temp dir, so every process they start (Ray's GCS, raylets and workers included,
  which move to process groups of their own) can be found through ``/proc/PID/environ`` and ended
  by PID, never by name and never touching another test's (or person's) Ray,
* ``tree_digest``: a content hash of a whole directory tree ("byte-identical" checks),
* ``shared_search_run``: one real small search, run once per test session and reused read-only.

Linux only (``/proc``), like the CI.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TAG_VAR = "HYBRID_NAS_TEST_TAG"
COUNT_KEYS = ("complete", "pruned", "failed", "running", "infeasible", "duplicate")

# Four stages (the builder's total stride 32), 64 px deploy resolution, 0.7-9 M MACs, < 0.2 M params.
TINY_SPACE = """\
name: {name}
resolution: 64
num_classes: 10
downsampling: [cmt, van]
stem_channels: [8]
head_fc_dim: [0]
stages:
  - block: [van, cmt]
    depth: {{low: 1, high: 2}}
    width: [16, 24]
    mlp_ratio: [2.0]
    heads: [1]
    kv_reduction: [2]
    channel_attention: [none]
    attn_kernel: [3]
  - block: [van, cmt]
    depth: {{low: 1, high: 2}}
    width: [16, 32]
    mlp_ratio: [2.0]
    heads: [2]
    kv_reduction: [1]
    channel_attention: [none]
    attn_kernel: [3]
  - block: [van, cmt, acmix]
    depth: {{low: 1, high: 2}}
    width: [32, 48]
    mlp_ratio: [2.0]
    heads: [2]
    kv_reduction: [1]
    channel_attention: [none, se]
    attn_kernel: [3]
  - block: [van, cmt]
    depth: 1
    width: [32, 64]
    mlp_ratio: [2.0]
    heads: [2]
    kv_reduction: 1
    channel_attention: [none]
    attn_kernel: [3]
"""

TINY_BUDGET = "20M"  # above every architecture of TINY_SPACE: all candidates are feasible


def write_space(path: Path, name: str = "tiny") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(TINY_SPACE.format(name=json.dumps(name)))
    return path


# -- directory digests ------------------------------------------------------------------------


def tree_digest(root: Path) -> dict[str, str]:
    """Every entry under ``root`` (hidden ones too) -> sha256 of its bytes, "dir" or the link."""
    out: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(dirnames):
            p = Path(dirpath, name)
            out[p.relative_to(root).as_posix()] = f"link:{os.readlink(p)}" if p.is_symlink() else "dir"
        for name in sorted(filenames):
            p = Path(dirpath, name)
            rel = p.relative_to(root).as_posix()
            out[rel] = f"link:{os.readlink(p)}" if p.is_symlink() else hashlib.sha256(p.read_bytes()).hexdigest()
    return out


# -- processes of one test, by tag ---------------------------------------------------------------


def _pids() -> Iterable[int]:
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            yield int(entry)


def _environ_has(pid: int, marker: bytes) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as fh:
            return marker in fh.read().split(b"\0")
    except OSError:
        return False


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def listening_sockets(pid: int) -> list[tuple[str, int]]:
    """(address, port) of the TCP sockets ``pid`` listens on (IPv4 and IPv6)."""
    inodes = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    except OSError:
        return []
    found = []
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            if len(parts) < 10 or parts[3] != "0A" or parts[9] not in inodes:  # 0A: LISTEN
                continue
            hex_ip, hex_port = parts[1].split(":")
            found.append((_decode_ip(hex_ip, width), int(hex_port, 16)))
    return found


def _decode_ip(hex_ip: str, width: int) -> str:
    import ipaddress

    raw = bytes.fromhex(hex_ip)
    # /proc/net/tcp* stores each 32-bit word in host (little-endian) order
    raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return str(ipaddress.ip_address(raw))


@dataclass
class Tagged:
    """Environment and bookkeeping for the subprocesses of one test."""

    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    # Ray puts unix sockets under its temp dir; their paths must stay under 108 bytes, so a short
    # directory in /tmp rather than pytest's long tmp_path.
    ray_tmp: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="nr", dir="/tmp")))

    def env(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        for key in ("RAY_ADDRESS", "PYTEST_CURRENT_TEST"):
            env.pop(key, None)
        env.update(
            {
                TAG_VAR: self.tag,
                "RAY_TMPDIR": str(self.ray_tmp),  # a private Ray session directory
                "RAY_USAGE_STATS_ENABLED": "0",
                "PYTHONUNBUFFERED": "1",
                "OMP_NUM_THREADS": "1",
            }
        )
        env.update(extra)
        return env

    def pids(self) -> list[int]:
        marker = f"{TAG_VAR}={self.tag}".encode()
        me = os.getpid()
        return [p for p in _pids() if p != me and _environ_has(p, marker) and not _is_zombie(p)]

    def wait_gone(self, timeout: float) -> list[int]:
        """Wait until none of this test's processes is alive; returns those still alive."""
        deadline = time.monotonic() + timeout
        alive = self.pids()
        while alive and time.monotonic() < deadline:
            time.sleep(0.5)
            alive = self.pids()
        return alive

    def kill_all(self) -> list[int]:
        """SIGKILL every process carrying this tag (by PID), wait for them; returns what was killed."""
        killed = []
        for _ in range(5):  # a dying raylet may still fork a worker: repeat until none is left
            alive = self.pids()
            if not alive:
                break
            for pid in alive:
                try:
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                except ProcessLookupError:
                    pass
            time.sleep(0.5)
        return killed

    def cleanup(self) -> None:
        self.kill_all()
        shutil.rmtree(self.ray_tmp, ignore_errors=True)


# -- running the CLIs ----------------------------------------------------------------------------


def nas_cmd(*args: Any) -> list[str]:
    return [sys.executable, "-m", "nas.cli", *[str(a) for a in args]]


def run_cli(cmd: Sequence[str], env: dict[str, str], timeout: float, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(list(cmd), env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)


def start_cli(cmd: Sequence[str], env: dict[str, str], log: Path, cwd: Path | None = None) -> subprocess.Popen:
    """Start in a process group of its own (``start_new_session``), output to ``log``."""
    with open(log, "w") as fh:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(list(cmd), env=env, cwd=cwd, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)


def status_json(run_dir: Path, env: dict[str, str] | None = None) -> dict[str, Any]:
    """`nas status RUN_DIR --json`, in-process (it never starts Ray)."""
    import contextlib
    import io

    from nas.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["status", str(run_dir), "--json"])
    assert code == 0, f"nas status {run_dir} exited {code}"
    return json.loads(out.getvalue())


def search_args(run_dir: Path, space: Path, *, trials: int, epochs: int = 1, concurrency: int = 1,
                data_fraction: float = 0.15, proxy_width: float = 0.5, budget: str = TINY_BUDGET,
                extra: Sequence[str] = ()) -> list[str]:  # fmt: skip
    return [
        "search", "--budget", budget, "--space", str(space), "--trials", str(trials), "--epochs", str(epochs),
        "--data-fraction", str(data_fraction), "--batch-size", "32", "--concurrency", str(concurrency),
        "--threads", "1", "--seed", "0", "--data", "digits", "--out", str(run_dir),
        # The fault tests' timing (a kill lands while a trial trains) is sized with an explicit proxy
        # width, so that a cheaper default proxy cannot finish a trial before the fault lands.
        "--proxy-width", str(proxy_width), *extra,
    ]  # fmt: skip


# -- reading a run and checking it ------------------------------------------------------------


def study_trials(run_dir: Path) -> dict[int, Any]:
    """The trials of a run's study (read-only), by number."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    from results.run_dir import STUDY_NAME

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    storage = JournalStorage(JournalFileBackend(str(run_dir / "study.journal")))
    study = optuna.load_study(study_name=STUDY_NAME, storage=storage)
    return {t.number: t for t in study.get_trials(deepcopy=True)}


def snapshot(run_dir: Path, where: Path) -> dict[int, Any]:
    """The study as a kill left it, read from a copy of the journal (the original is not touched)."""
    where.mkdir(parents=True)
    shutil.copy(run_dir / "study.journal", where / "study.journal")
    return study_trials(where)


def train_log(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def trained(t: Any) -> bool:
    """Counts against --trials (the one rule: results.run_dir.counts_as_trained)."""
    from results.run_dir import counts_as_trained, frozen_status

    return counts_as_trained(frozen_status(t), t.user_attrs)


def result_json(run_dir: Path, number: int) -> dict[str, Any] | None:
    path = run_dir / "trials" / f"{number:05d}" / "result.json"
    return json.loads(path.read_text()) if path.exists() else None


def wait_until(what: str, condition: Callable[[], Any], proc: subprocess.Popen, log: Path, timeout: float = 240) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        assert proc.poll() is None, f"the search ended (exit {proc.returncode}) before {what}:\n{log.read_text()[-3000:]}"
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}:\n{log.read_text()[-3000:]}")


def kill_group(proc: subprocess.Popen, tagged: Tagged) -> None:
    """SIGKILL the search's whole process group; then every process it started must go away."""
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    left = tagged.wait_gone(45)
    assert not left, f"processes outlived the killed search: {left}"


def assert_consistent(run_dir: Path, requested: int) -> dict[str, Any]:
    """A finished run: no RUNNING trial, counts that add up, the requested number trained, every
    trained architecture distinct."""
    trials = study_trials(run_dir)
    report = status_json(run_dir)
    from optuna.trial import TrialState

    assert not [n for n, t in trials.items() if t.state == TrialState.RUNNING], "a trial was left RUNNING"
    assert report["running"] == 0
    assert sum(report[k] for k in COUNT_KEYS) == report["total"] == len(trials)
    assert report["trained"] == report["complete"] + report["pruned"] + report["failed"] - report["interrupted"]
    assert report["trained"] == requested, report
    assert report["status"] == "finished"
    hashes = [t.user_attrs["arch_hash"] for t in trials.values() if trained(t)]
    assert len(hashes) == requested and len(set(hashes)) == len(hashes), "an architecture was trained twice"
    for t in trials.values():
        if t.user_attrs.get("status") == "complete":
            assert t.state == TrialState.COMPLETE and t.values is not None
            assert result_json(run_dir, t.number)["status"] == "complete"
    return report


# -- one real search, shared by the modules that only read it ------------------------------------


@dataclass
class SharedRun:
    run_dir: Path
    workspace: Path  # the run directory's parent: nothing may be written here but the run
    before: dict[str, str]  # digest of the workspace's parent before the search (escape checks)
    parent: Path
    returncode: int
    output: str
    seconds: float
    processes: list[dict[str, Any]]  # snapshots of the search's processes taken while it ran


_SHARED: dict[str, SharedRun] = {}


def shared_search_run(base: Path) -> SharedRun:
    """A finished real search on TINY_SPACE, whose space is named ``../../evil`` (a name that must
    never become a path). Run once per session; callers must not modify it."""
    key = str(base)
    if key in _SHARED:
        return _SHARED[key]
    parent = base / "shared"
    workspace = parent / "a" / "b"
    workspace.mkdir(parents=True)
    space = write_space(workspace / "space.yaml", name="../../evil")
    before = tree_digest(parent)
    run_dir = workspace / "run"
    tagged = Tagged()
    started = time.monotonic()
    procs: dict[int, dict[str, Any]] = {}
    try:
        proc = start_cli(nas_cmd(*search_args(run_dir, space, trials=3, epochs=2, concurrency=2)), tagged.env(),
                         base / "shared_search.log")  # fmt: skip
        while proc.poll() is None:
            for pid in tagged.pids():
                cmd = cmdline(pid)
                if not cmd:
                    continue
                entry = procs.setdefault(pid, {"pid": pid, "cmdline": cmd, "listen": []})
                for sock in listening_sockets(pid):  # sockets open after start: keep looking
                    if list(sock) not in entry["listen"]:
                        entry["listen"].append(list(sock))
            time.sleep(0.3)
        seconds = time.monotonic() - started
        output = (base / "shared_search.log").read_text()
    finally:
        tagged.cleanup()
    _SHARED[key] = SharedRun(run_dir, workspace, before, parent, proc.returncode, output, seconds, list(procs.values()))
    return _SHARED[key]
