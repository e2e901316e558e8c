"""The run directory of a search: layout, run.json, the lock, the per-trial files.

Layout (the contract `nas status`, `results` and `nas report/export` read)::

    RUN_DIR/run.json        command, versions, settings, status, counts
    RUN_DIR/space.yaml      the search space used (a copy)
    RUN_DIR/study.journal   Optuna JournalStorage, study "search"
    RUN_DIR/tune/           Ray Tune experiment state (one experiment per search invocation)
    RUN_DIR/trials/NNNNN/   config.yaml, metrics.jsonl (trained trials only), result.json
    RUN_DIR/pareto/         <name>.yaml + <name>.md of the final Pareto front
    RUN_DIR/.lock           flock'ed while a search runs here

Only the driver process writes here (trial workers report through Ray), so a search on a
multi-node cluster needs no shared file system for its run directory.
"""

from __future__ import annotations

import datetime as _dt
import fcntl
import hashlib
import json
import os
import platform
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from search_space import ArchConfig
from search_space.errors import UserError

FORMAT = 1
STUDY_NAME = "search"
STATUSES = ("complete", "pruned", "failed", "infeasible", "duplicate")
COUNT_KEYS = ("complete", "pruned", "failed", "running", "infeasible", "duplicate")


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).astimezone().isoformat(timespec="seconds")


def default_run_dir() -> Path:
    return Path("runs") / f"search-{_dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"


def versions() -> dict[str, str]:
    from importlib import metadata

    def version(dist: str) -> str:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return "not installed"

    return {
        "hybrid_nas": version("hybrid-nas"),
        "python": platform.python_version(),
        "torch": version("torch"),
        "optuna": version("optuna"),
        "ray": version("ray"),
    }


def arch_hash(cfg: ArchConfig) -> str:
    """sha1 of the canonical config YAML without its name: equal architectures, equal hash."""
    data = cfg.to_dict()
    data.pop("name", None)
    return hashlib.sha1(yaml.safe_dump(data, sort_keys=True).encode()).hexdigest()


def write_json_atomic(path: Path, data: Any) -> None:
    """Write-then-rename, so a reader (or a kill) never sees half a file."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)


def write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


@dataclass(frozen=True)
class RunDir:
    path: Path

    # -- layout -------------------------------------------------------------------------
    @property
    def run_json(self) -> Path:
        return self.path / "run.json"

    @property
    def space_yaml(self) -> Path:
        return self.path / "space.yaml"

    @property
    def journal(self) -> Path:
        return self.path / "study.journal"

    @property
    def tune_dir(self) -> Path:
        return self.path / "tune"

    @property
    def trials_dir(self) -> Path:
        return self.path / "trials"

    @property
    def pareto_dir(self) -> Path:
        return self.path / "pareto"

    @property
    def lock_file(self) -> Path:
        return self.path / ".lock"

    def trial_dir(self, number: int) -> Path:
        return self.trials_dir / f"{number:05d}"

    # -- checks (no writes) -------------------------------------------------------------
    def is_run(self) -> bool:
        return self.run_json.is_file()

    def read_run_json(self) -> dict[str, Any]:
        try:
            data = json.loads(self.run_json.read_text())
        except FileNotFoundError:
            raise UserError(f"{self.path}: not a search run directory (no run.json)") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise UserError(f"{self.run_json}: unreadable run.json ({type(exc).__name__})") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT or "settings" not in data:
            raise UserError(f"{self.run_json}: not a run.json of format {FORMAT}")
        return data

    def check_new(self) -> None:
        """A new search may use a missing or empty directory, never one holding anything."""
        if self.path.exists() and not self.path.is_dir():
            raise UserError(f"{self.path}: exists and is not a directory")
        if self.path.is_dir() and any(p.name != ".lock" for p in self.path.iterdir()):
            hint = "use --resume to continue it" if self.is_run() else "choose another --out"
            raise UserError(f"{self.path}: directory exists and is not empty ({hint}; results are never overwritten)")

    def check_resumable(self) -> dict[str, Any]:
        if not self.path.is_dir():
            raise UserError(f"{self.path}: no such run directory to resume")
        return self.read_run_json()

    def in_use(self) -> bool:
        """True while a search holds this directory's lock (never creates the lock file)."""
        if not self.lock_file.exists():
            return False
        try:
            fd = os.open(self.lock_file, os.O_RDONLY)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        return False

    # -- the lock -----------------------------------------------------------------------
    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the directory for one search; a second search is refused with one line.

        flock is released by the kernel when the process dies, even on SIGKILL, so a killed search
        never leaves a stale lock behind.
        """
        self.path.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            holder = _read_pid(self.lock_file)
            who = f" (pid {holder})" if holder else ""
            raise UserError(f"{self.path}: run directory is in use by another nas search{who}") from None
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    # -- run.json -----------------------------------------------------------------------
    def create(self, settings: dict[str, Any], space_text: str) -> dict[str, Any]:
        stamp = now_iso()
        data = {
            "format": FORMAT,
            "command": list(sys.argv),
            "created": stamp,
            "updated": stamp,
            "status": "running",
            "versions": versions(),
            "settings": settings,
            "counts": {k: 0 for k in COUNT_KEYS},
            "resumes": [],
        }
        self.trials_dir.mkdir(parents=True, exist_ok=True)
        self.tune_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomic(self.space_yaml, space_text)
        write_json_atomic(self.run_json, data)
        return data

    def update(self, **changes: Any) -> dict[str, Any]:
        data = self.read_run_json()
        data.update(changes)
        data["updated"] = now_iso()
        write_json_atomic(self.run_json, data)
        return data

    # -- per-trial files ----------------------------------------------------------------
    def write_trial_config(self, number: int, cfg: ArchConfig) -> None:
        d = self.trial_dir(number)
        d.mkdir(parents=True, exist_ok=True)
        write_text_atomic(d / "config.yaml", cfg.to_yaml())

    def append_metrics(self, number: int, row: dict[str, Any]) -> None:
        """One JSON line per epoch; epoch 1 starts the file afresh (a retried trial restarts)."""
        d = self.trial_dir(number)
        d.mkdir(parents=True, exist_ok=True)
        mode = "w" if int(row.get("epoch", 0)) <= 1 else "a"
        with open(d / "metrics.jsonl", mode) as fh:
            fh.write(json.dumps(row) + "\n")

    def write_trial_result(self, number: int, result: dict[str, Any]) -> None:
        d = self.trial_dir(number)
        d.mkdir(parents=True, exist_ok=True)
        write_json_atomic(d / "result.json", result)

    def read_trial_result(self, number: int) -> dict[str, Any] | None:
        try:
            return json.loads((self.trial_dir(number) / "result.json").read_text())
        except (OSError, json.JSONDecodeError):
            return None


def counts_as_trained(attrs: dict[str, Any]) -> bool:
    """Whether a trial used up one of the --trials: trained (to the end, pruned, or failed while
    training), not told without training, not cut short by a killed search."""
    if attrs.get("interrupted") or attrs.get("trained") is False:
        return False
    return attrs.get("status") in ("complete", "pruned", "failed")


def _read_pid(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
        return int(text) if text.isdigit() else None
    except OSError:
        return None


def repair_journal(path: Path) -> bool:
    """Cut a half-written last line off an Optuna journal (a kill mid-append leaves one).

    Optuna skips a trailing partial line when reading, but the next append would glue a new record
    onto it and corrupt both. Returns True if something was cut.
    """
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return False
    if size == 0:
        return False
    with open(path, "rb+") as fh:
        fh.seek(-1, os.SEEK_END)
        if fh.read(1) == b"\n":
            return False
        data = fh.seek(0) or fh.read()
        keep = data.rfind(b"\n") + 1
        fh.truncate(keep)
    return True
