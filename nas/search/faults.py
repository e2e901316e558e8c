"""Fault-injection hooks for the reliability tests (off unless the environment asks for them).

A search's promises under faults (nothing lost after a SIGKILL at any moment, failing trials
recorded and retried, ...) are only worth something if a test can hit those moments on purpose,
not by luck of timing. Two environment variables of the ``nas search`` process turn the hooks on:

``HYBRID_NAS_FAULT``: comma-separated ``ACTION@WHERE:N`` items:

* ``pause@sample:N``: the driver stops for good right after trial N was sampled (asked from
  Optuna, costs computed, config written), before Ray receives it; it says so on stderr.
* ``pause@checkpoint:N``: the driver stops for good half-way through writing the searcher's
  state file of Tune's N-th experiment checkpoint (the file is left half written).
* ``raise@trial:N``: every training attempt of trial N raises ``RuntimeError``.
* ``flaky@trial:N``: the first attempt of trial N raises; a retry trains normally.
* ``oom@trial:N``: every attempt of trial N runs out of memory (simulated ``torch.OutOfMemoryError``).
* ``nan@trial:N``: trial N trains on NaN inputs, so its loss is non-finite and the trainer's guard ends it.

``HYBRID_NAS_TRAIN_LOG``: a file to which every training attempt appends one JSON line
``{"number", "attempt", "arch_hash", "node_id", "pid", "time"}`` when it starts (tests use it to
prove that no architecture is trained twice and to see where a trial runs).

The driver reads the variables and hands them to the trials with their parameters, so the hooks
also reach workers of an existing cluster (``--address``), whose environment is not the driver's.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from typing import Any

from search_space.errors import UserError

FAULT_VAR = "HYBRID_NAS_FAULT"
TRAIN_LOG_VAR = "HYBRID_NAS_TRAIN_LOG"
ACTIONS = {"sample": ("pause",), "checkpoint": ("pause",), "trial": ("raise", "flaky", "oom", "nan")}


@dataclass(frozen=True)
class Fault:
    action: str
    where: str
    n: int


def parse_faults(text: str | None) -> tuple[Fault, ...]:
    faults = []
    for item in (text or "").split(","):
        item = item.strip()
        if not item:
            continue
        try:
            action, rest = item.split("@", 1)
            where, n = rest.split(":", 1)
            fault = Fault(action.strip(), where.strip(), int(n))
        except ValueError:
            raise UserError(f"{FAULT_VAR}: {item!r} is not ACTION@WHERE:N") from None
        if fault.action not in ACTIONS.get(fault.where, ()):
            raise UserError(f"{FAULT_VAR}: unknown fault {item!r}")
        faults.append(fault)
    return tuple(faults)


def hooks_from_env() -> dict[str, Any]:
    """What the driver passes to every trial (empty when no hook is on)."""
    hooks: dict[str, Any] = {}
    if os.environ.get(FAULT_VAR):
        parse_faults(os.environ[FAULT_VAR])  # a typo is an error of the driver, not of each trial
        hooks["fault"] = os.environ[FAULT_VAR]
    if os.environ.get(TRAIN_LOG_VAR):
        hooks["train_log"] = os.environ[TRAIN_LOG_VAR]
    return hooks


def _pause_forever(message: str) -> None:
    print(f"fault hook: paused at {message}", file=sys.stderr, flush=True)
    while True:  # until the test kills the process group
        time.sleep(3600)


class DriverFaults:
    """The driver-side hooks (sampling and checkpoint moments)."""

    def __init__(self, text: str | None = None) -> None:
        self.faults = parse_faults(os.environ.get(FAULT_VAR) if text is None else text)
        self.checkpoints = 0

    def after_sample(self, number: int) -> None:
        if any(f.where == "sample" and f.n == number for f in self.faults):
            _pause_forever(f"sample of trial {number}")

    def during_checkpoint(self, path: str, payload: bytes) -> bool:
        """Called with the searcher state about to be written; True if it wrote (and paused)."""
        self.checkpoints += 1
        if not any(f.where == "checkpoint" and f.n == self.checkpoints for f in self.faults):
            return False
        with open(path, "wb") as fh:
            fh.write(payload[: max(1, len(payload) // 2)])
            fh.flush()
            os.fsync(fh.fileno())
        _pause_forever(f"checkpoint {self.checkpoints} ({path})")
        return True


# -- trial side (runs in Ray workers) ----------------------------------------------------------

_attempts_here: dict[int, int] = {}  # per process, when no train log is kept


def _previous_attempts(log: str | None, number: int) -> int:
    if log and os.path.exists(log):
        with open(log) as fh:
            return sum(json.loads(line).get("number") == number for line in fh if line.strip())
    return _attempts_here.get(number, 0)


def start_attempt(hooks: dict[str, Any], number: int, arch: Any, node_id: str | None) -> int:
    """Log the attempt of training ``arch`` (an ArchConfig; when asked) and return its 1-based index."""
    log = hooks.get("train_log")
    attempt = _previous_attempts(log, number) + 1
    _attempts_here[number] = attempt
    if log:
        from results.run_dir import arch_hash

        row = {"number": number, "attempt": attempt, "arch_hash": arch_hash(arch), "node_id": node_id,
               "pid": os.getpid(), "time": time.time()}  # fmt: skip
        # one write of one line with O_APPEND: lines from concurrent workers do not interleave
        fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (json.dumps(row) + "\n").encode())
        finally:
            os.close(fd)
    return attempt


def before_training(hooks: dict[str, Any], number: int, attempt: int, data: Any) -> Any:
    """Raise the injected error of this attempt, or return the data the trial trains on."""
    for f in parse_faults(hooks.get("fault")):
        if f.where != "trial" or f.n != number:
            continue
        if f.action == "raise" or (f.action == "flaky" and attempt == 1):
            raise RuntimeError(f"injected failure of trial {number} (attempt {attempt})")
        if f.action == "oom":
            import torch

            raise torch.OutOfMemoryError(f"simulated: CUDA out of memory in trial {number} (attempt {attempt})")
        if f.action == "nan":
            return _with_nan_inputs(data)
    return data


def _with_nan_inputs(data: Any) -> Any:
    import dataclasses

    import torch
    from torch.utils.data import TensorDataset

    images, labels = data.train.tensors
    return dataclasses.replace(data, train=TensorDataset(torch.full_like(images, float("nan")), labels))
