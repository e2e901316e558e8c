"""The local Ray of ``nas search``: reachable from this machine only, and gone soon after the search.

Whoever reaches one of Ray's ports can ask it to run code; its token authentication (on by default
in ray 2.60, docs/reliability.md "What listens where") is the only guard. Two things, measured with ray 2.60 on
Linux, make a plain ``ray.init(_node_ip_address="127.0.0.1")`` unsafe:

* **Listening addresses.** ``ray.init`` passes ``_node_ip_address`` through
  ``ray._private.services.resolve_ip_for_localhost``, which replaces a loopback address by the
  machine's external one unless ``ray._private.ray_constants.ENABLE_RAY_CLUSTER`` is false (it is
  read from ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER`` when Ray is imported; true on Linux). Every
  listener then follows that node IP: gcs_server, the raylet (node manager and object manager),
  the driver's and every worker's gRPC server bind all interfaces (``*:PORT``) unless the node IP
  is loopback, and the runtime-env agent binds the node IP itself. With the node IP really
  127.0.0.1 all of them bind 127.0.0.1 (shown by ``ss`` as ``[::ffff:127.0.0.1]``: an IPv6
  socket bound to the IPv4 loopback). The dashboard agent of ``include_dashboard=False`` is
  "minimal" and listens on nothing (no gRPC, HTTP or metrics-export server). So the flag is
  turned off around ``ray.init``, and the node IP Ray ended up with is checked afterwards: if it is
  not loopback (a later Ray that no longer reads the flag), Ray is shut down and the search refused.
* **Leftovers after SIGKILL.** gcs_server, the raylet and Ray's helper processes die with the
  driver (``PR_SET_PDEATHSIG``) and the workers follow the raylet within ~3 s, but the dashboard
  and runtime-env agents, on seeing the raylet gone without a "SIGTERM" line in raylet.out, first
  publish an error to the (dead) GCS with a fixed 60 s timeout
  (``ray._private.utils.publish_error_to_driver``), listening all the while. No Ray setting
  shortens that (``gcs_rpc_server_reconnect_timeout_s`` does not). So `start_local_ray` starts a
  small watchdog process (this file, run as a script) that ends the session's processes as soon
  as the driver is gone.

This module imports only the standard library at the top: the watchdog runs it as a script.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import select
import signal
import subprocess
import sys
import time
from typing import Any

LOOPBACK = "127.0.0.1"
SCAN_INTERVAL_S = 1.0  # how often the watchdog looks for new processes of the session (workers)
GRACE_S = 2.0  # after Ray shut down by itself: time its processes get to exit before SIGKILL

# (watchdog, write end of its stdin pipe): the driver holds the write end open; EOF tells the watchdog it died
_watchdogs: list[tuple[subprocess.Popen, int]] = []


def is_loopback(host: str) -> bool:
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return host == "localhost"
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def start_local_ray(object_store_memory: int, **quiet: Any) -> None:
    """Start a private local Ray bound to 127.0.0.1, with no dashboard, fenced by a watchdog.

    ``address="local"``: never join a cluster named by ``$RAY_ADDRESS`` behind the user's back.
    Raises what ``ray.init`` raises, or RuntimeError if Ray would listen beyond loopback.
    """
    import ray
    from ray._private import ray_constants

    before = set(_children(os.getpid()))
    saved = getattr(ray_constants, "ENABLE_RAY_CLUSTER", True)
    ray_constants.ENABLE_RAY_CLUSTER = False  # keep 127.0.0.1 as the node IP (see the module doc)
    try:
        ray.init(address="local", include_dashboard=False, _node_ip_address="127.0.0.1",
                 object_store_memory=object_store_memory, **quiet)  # fmt: skip
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved  # a later ray.init(address=CLUSTER) resolves normally
    if not ray.is_initialized():
        return
    node_ip = ray.util.get_node_ip_address()
    if not is_loopback(node_ip):
        ray.shutdown()
        raise RuntimeError(f"this Ray version would listen on {node_ip}, not only on {LOOPBACK}; refusing to start it")
    ray_dir = os.path.dirname(ray.__file__)
    roots = [pid for pid in _children(os.getpid()) if pid not in before and ray_dir in _cmdline(pid)]
    if sys.platform.startswith("linux") and roots:
        _start_watchdog(roots)


# -- the watchdog ----------------------------------------------------------------------------------


def _start_watchdog(roots: list[int]) -> None:
    """A tiny process that SIGKILLs this Ray session's processes (``roots``: gcs_server, raylet,
    Ray's helpers, and every process they start) once the driver is gone, or, after Ray shut down
    on its own, whatever of them is left a few seconds later; then it exits."""
    for done in [w for w in _watchdogs if w[0].poll() is not None]:  # those of earlier Ray sessions
        _watchdogs.remove(done)
        os.close(done[1])
    read_end, write_end = os.pipe()  # both close-on-exec: no Ray process inherits the write end
    marks = [f"{pid}:{_start_time(pid)}" for pid in roots]
    try:
        watchdog = subprocess.Popen(
            [sys.executable, "-I", os.path.abspath(__file__), "--watch", str(os.getpid()), *marks],
            stdin=read_end, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C or killpg of the search's group must not stop the cleanup
        )  # fmt: skip
    except BaseException:
        os.close(write_end)
        raise
    finally:
        os.close(read_end)
    _watchdogs.append((watchdog, write_end))


def _watch(driver: int, marks: list[str]) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    tracked: dict[int, int] = {}  # pid -> start time (a reused pid is not ours)
    for mark in marks:
        pid, start = mark.split(":")
        tracked[int(pid)] = int(start)
    roots = set(tracked)
    driver_gone = False
    while True:
        _add_descendants(tracked)
        readable, _, _ = select.select([0], [], [], SCAN_INTERVAL_S)
        if readable and not os.read(0, 4096):
            driver_gone = True  # EOF: the driver's write end closed (it exited or was killed)
        if os.getppid() != driver:
            driver_gone = True
        if driver_gone or not any(_alive(pid, tracked[pid]) for pid in roots):
            break
    if not driver_gone:  # Ray was shut down (or crashed) while the driver lives: let it finish
        deadline = time.monotonic() + GRACE_S
        while time.monotonic() < deadline and any(_alive(p, s) for p, s in tracked.items()):
            _add_descendants(tracked)
            time.sleep(0.2)
    for _ in range(10):  # a process may still fork while its parent is killed: repeat
        _add_descendants(tracked)
        alive = [pid for pid, start in tracked.items() if _alive(pid, start)]
        if not alive:
            return
        for pid in alive:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.2)


def _add_descendants(tracked: dict[int, int]) -> None:
    children: dict[int, list[int]] = {}
    for pid in _all_pids():
        stat = _stat(pid)
        if stat is not None:
            children.setdefault(int(stat[1]), []).append(pid)
    todo = [pid for pid, start in tracked.items() if _alive(pid, start)]
    while todo:
        for child in children.get(todo.pop(), ()):
            if child not in tracked:
                start = _start_time(child)
                if start:
                    tracked[child] = start
                    todo.append(child)


# -- /proc -------------------------------------------------------------------------------------------


def _all_pids() -> list[int]:
    try:
        return [int(e) for e in os.listdir("/proc") if e.isdigit()]
    except OSError:
        return []


def _stat(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name: [state, ppid, ...]."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _start_time(pid: int) -> int:
    stat = _stat(pid)
    return int(stat[19]) if stat and len(stat) > 19 else 0


def _alive(pid: int, start: int) -> bool:
    stat = _stat(pid)
    return stat is not None and stat[0] != "Z" and len(stat) > 19 and int(stat[19]) == start


def _children(pid: int) -> list[int]:
    return [p for p in _all_pids() if (_stat(p) or ["", ""])[1] == str(pid)]


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


if __name__ == "__main__" and sys.argv[1:2] == ["--watch"]:
    _watch(int(sys.argv[2]), sys.argv[3:])
