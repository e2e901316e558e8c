"""A plain `nas search` (no ``--address``) starts a local Ray that only this machine can reach, and
that does not outlive the search when the search is killed (``nas/search/ray_local.py``).

Ray has no login: a port of it reachable from the network lets anyone run code here. Both tests run
a real small search on the bundled digits data and look at every process it started, Ray's
included, while trials train:

* every TCP socket they listen on and every UDP socket they have bound must be on loopback;
* after a SIGKILL of the search (the driver alone), every one of them must be gone within 10 s,
  and none of their ports still listening.

The processes are found by walking the search's descendants and by the test's tag in their
environment, again and again, and remembered by (PID, start time) once seen (`Session`): Ray's
agents are re-parented when the raylet dies, and their ``/proc/PID/environ`` need not show the tag
(setproctitle overwrites the start of that area). Linux only (``/proc``), like the CI.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fault_helpers import (
    Tagged,
    _decode_ip,
    cmdline,
    listening_sockets,
    nas_cmd,
    result_json,
    search_args,
    start_cli,
    train_log,
    wait_until,
    write_space,
)

pytestmark = pytest.mark.slow

GONE_WITHIN_S = 10.0
Socket = tuple[int, str, str, str, int]  # pid, process, protocol, address, port


@pytest.fixture
def tagged() -> Iterator[Tagged]:
    t = Tagged()
    yield t
    t.cleanup()  # SIGKILL by PID whatever a failed test left behind (and carries the tag)


# -- processes and their sockets, from /proc ------------------------------------------------------


def _stat(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name ([state, ppid, ...]); None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] in ("Z", "X") else fields


def _descendants(roots: set[int]) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (fields := _stat(int(entry))) is not None:
            children.setdefault(int(fields[1]), []).append(int(entry))
    found, todo = set(), list(roots)
    while todo:
        for child in children.get(todo.pop(), ()):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


class Session:
    """Every process of one search, remembered by (PID, start time) from the moment it is seen."""

    def __init__(self, proc: Any, tagged: Tagged) -> None:
        self.proc, self.tagged = proc, tagged
        self.known: dict[int, str] = {}  # pid -> start time (a reused PID is not ours)

    @staticmethod
    def _started(pid: int) -> str | None:
        fields = _stat(pid)
        return fields[19] if fields is not None and len(fields) > 19 else None

    def alive(self) -> set[int]:
        """The live processes of the search (itself included while it runs), new ones included."""
        live = {pid for pid, start in self.known.items() if self._started(pid) == start}
        roots = live | ({self.proc.pid} if self.proc.poll() is None else set())
        for pid in roots | set(self.tagged.pids()) | _descendants(roots):
            if pid not in self.known and (start := self._started(pid)) is not None:
                self.known[pid] = start
                live.add(pid)
        return live

    def kill(self) -> None:
        for _ in range(5):  # a dying parent may still fork: repeat
            for pid in self.alive():
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.2)


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
    return inodes


def _udp_bound(pid: int) -> list[tuple[str, int]]:
    """(address, port) of the UDP sockets of ``pid`` not connected to a peer (they receive from
    anyone: UDP's "listening")."""
    inodes = _socket_inodes(pid)
    found = []
    for table, width in (("/proc/net/udp", 8), ("/proc/net/udp6", 32)):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                parts = line.split()
                if len(parts) > 9 and parts[9] in inodes and int(parts[2].split(":")[1], 16) == 0:
                    hex_ip, hex_port = parts[1].split(":")
                    found.append((_decode_ip(hex_ip, width), int(hex_port, 16)))
    return found


def _all_listening() -> set[tuple[str, int]]:
    """(address, port) of every listening TCP socket of this machine (its network namespace)."""
    found = set()
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        for line in Path(table).read_text().splitlines()[1:]:
            parts = line.split()
            if len(parts) > 3 and parts[3] == "0A":  # LISTEN
                hex_ip, hex_port = parts[1].split(":")
                found.add((_decode_ip(hex_ip, width), int(hex_port, 16)))
    return found


def _name(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as fh:
            comm = fh.read().strip()
    except OSError:
        comm = "?"
    return f"{comm} [{cmdline(pid)[:70]}]" if comm.startswith("python") else comm


def _sockets(pids: set[int]) -> set[Socket]:
    """Every listening TCP socket and bound, unconnected UDP socket of ``pids``."""
    seen = set()
    for pid in pids:
        name = _name(pid)
        seen |= {(pid, name, "tcp", a, p) for a, p in listening_sockets(pid)}
        seen |= {(pid, name, "udp", a, p) for a, p in _udp_bound(pid)}
    return seen


def _loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:  # ::ffff:127.0.0.1
        ip = ip.ipv4_mapped
    return ip.is_loopback


def _shown(s: Socket) -> str:
    pid, name, proto, address, port = s
    ip = ipaddress.ip_address(address)
    mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
    where = f"[::ffff:{mapped}]" if mapped else f"[{ip}]" if ip.version == 6 else str(ip)
    return f"{proto} {where}:{port}  pid {pid} {name}"


# -- the search --------------------------------------------------------------------------------------


@pytest.fixture
def training_search(tmp_path: Path, tagged: Tagged) -> Iterator[Session]:
    """A `nas search` started in the background, handed over once a trial is in the middle of
    training; whatever of it is left at the end is SIGKILLed by PID."""
    space = write_space(tmp_path / "space.yaml")
    train = tmp_path / "train.jsonl"
    out = tmp_path / "search.log"
    # long trials (the search is killed long before it could finish): Ray is up and busy throughout
    argv = search_args(tmp_path / "run", space, trials=8, epochs=30, concurrency=2, data_fraction=0.3)
    proc = start_cli(nas_cmd(*argv), tagged.env(HYBRID_NAS_TRAIN_LOG=str(train)), out)
    session = Session(proc, tagged)
    try:
        wait_until("a trial training", lambda: any(result_json(tmp_path / "run", row["number"]) is None
                                                   for row in train_log(train)), proc, out)  # fmt: skip
        session.alive()
        yield session
    finally:
        session.kill()
        proc.wait(timeout=30)


def test_local_search_listens_on_loopback_only(training_search: Session) -> None:
    seen: set[Socket] = set()
    deadline = time.monotonic() + 4  # sockets open at different moments (agents, workers): keep looking
    while time.monotonic() < deadline:
        seen |= _sockets(training_search.alive())
        time.sleep(0.3)
    assert training_search.proc.poll() is None, "the search ended while its sockets were listed"

    print("\nlistening sockets of the search's processes:\n  " + "\n  ".join(map(_shown, sorted(seen, key=lambda s: s[1:]))))
    names = {s[1] for s in seen}
    # not vacuous: the sockets of Ray's core processes were seen
    assert {"gcs_server", "raylet"} <= names, f"Ray's GCS or raylet not seen listening: {sorted(seen)}"
    assert len({(s[3], s[4]) for s in seen}) >= 4, f"too few listening sockets seen: {sorted(seen)}"
    exposed = sorted(s for s in seen if not _loopback(s[3]))
    assert not exposed, "reachable beyond loopback:\n  " + "\n  ".join(map(_shown, exposed))


def test_killed_search_leaves_no_ray_process_behind(training_search: Session) -> None:
    proc = training_search.proc
    before = training_search.alive()
    names = {pid: _name(pid) for pid in before}
    ports = {(s[3], s[4]) for s in _sockets(before) if s[2] == "tcp"}
    assert {"gcs_server", "raylet"} <= set(names.values()), f"Ray's processes not found: {names}"
    assert len(ports) >= 3, f"too few listening sockets seen before the kill: {ports}"

    os.kill(proc.pid, signal.SIGKILL)  # the driver alone, as the OOM killer or `kill -9 PID` would
    killed = time.monotonic()
    proc.wait(timeout=30)
    left = training_search.alive()
    while left and time.monotonic() - killed < 100:  # past the limit too, to report the real time
        time.sleep(0.1)
        left = training_search.alive()
    seconds = time.monotonic() - killed
    still = {pid: names.get(pid) or _name(pid) for pid in left}
    print(f"\n{len(before)} processes of the search at the kill ({sorted(set(names.values()))}); all gone "
          f"{seconds:.1f} s after SIGKILL" + (f"; still alive then: {still}" if still else ""))  # fmt: skip
    assert not left, f"still alive {seconds:.0f} s after the search was killed: {still}"
    assert seconds <= GONE_WITHIN_S, f"Ray's processes took {seconds:.1f} s to go (limit {GONE_WITHIN_S:g} s)"
    listening = _all_listening()
    assert not ports & listening, f"ports of the killed search still listening: {sorted(ports & listening)}"
