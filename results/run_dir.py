"""The run directory of a search: layout, study name, trial statuses, run.json, the lock, trial files.

This module is the one definition of the run directory format. `nas search` writes through it;
every reader (`results.run`, hence `nas status`, `runs`, `report`, `export`, `compare`) reads
through it. The settings stored in run.json are `settings.SearchSettings` (readers load them as
`settings.RunSettings`); the Pareto front rules are `results.pareto.run_front`.

Layout::

    RUN_DIR/run.json        command, versions, settings, status, counts
    RUN_DIR/space.yaml      the search space used (a copy)
    RUN_DIR/study.journal   Optuna JournalStorage, study STUDY_NAME (absent when run.json names a
                            database ``storage``: then the study is there, named ``study_name``;
                            `results.storage` opens either)
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
import stat
import sys
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from search_space import ArchConfig
from search_space.errors import UserError
from search_space.files import (
    append_atomic,
    check_regular,
    check_single_link,
    held_lock,
    make_dirs,
    read_json,
    read_text,
    write_atomic,
    write_json_atomic,
)

FORMAT = 1
STUDY_NAME = "search"
TRIAL_DIR_DIGITS = 5

# -- trial statuses ------------------------------------------------------------------------------
# Every trial of the study has one status, kept in its "status" user attr once it is finished:
#
#   complete    trained for every proxy epoch (Optuna COMPLETE); the only status whose accuracy is
#               comparable, hence the only one on a Pareto front (when feasible)
#   pruned      stopped early by ASHA (PRUNED); its accuracy is from partial training
#   failed      training raised, lost its worker or diverged (FAIL); also an architecture the
#               builder rejected (``trained: False``) and a trial a killed search left running
#               (``interrupted: True``, marked by ``nas search --resume``, which re-queues it)
#   infeasible  violates a constraint; told at once (COMPLETE, constraint > 0), never trained
#   duplicate   same architecture as an earlier trial; told its outcome, never trained
#   running     RUNNING in the study (being trained, or orphaned by a kill until --resume)
#   waiting     WAITING in the study (queued); counted under "running"
#
# "trained" (what --trials counts): complete, pruned or failed, except interrupted trials and
# architectures that never reached training.
STATUSES = ("complete", "pruned", "failed", "infeasible", "duplicate")
TRAINED_STATUSES = ("complete", "pruned", "failed")
COUNT_KEYS = ("complete", "pruned", "failed", "running", "infeasible", "duplicate")


def trial_status(state: str, attrs: Mapping[str, Any], constraints: Mapping[str, float]) -> str:
    """The status of a trial from its Optuna state name, user attrs and constraints."""
    if state in ("RUNNING", "WAITING"):
        return state.lower()  # a status attr set before training does not mean it finished
    status = attrs.get("status")
    if status in STATUSES:
        return str(status)
    # no status recorded (a study not written by nas search): read it off the state
    if state == "COMPLETE":
        return "complete" if is_feasible(constraints) else "infeasible"
    return "pruned" if state == "PRUNED" else "failed"


def is_feasible(constraints: Mapping[str, float]) -> bool:
    """Every recorded constraint <= 0 (Optuna's convention; none recorded counts as feasible)."""
    return all(v <= 0 for v in constraints.values())


def is_interrupted(attrs: Mapping[str, Any]) -> bool:
    return bool(attrs.get("interrupted"))


def counts_as_trained(status: str, attrs: Mapping[str, Any]) -> bool:
    """Whether a trial used up one of the --trials: trained (to the end, pruned, or failed while
    training), not told without training, not cut short by a killed search."""
    return status in TRAINED_STATUSES and not is_interrupted(attrs) and attrs.get("trained") is not False


def is_eligible(state: str, status: str, constraints: Mapping[str, float], attrs: Mapping[str, Any] | None = None) -> bool:
    """Measured, feasible and not a duplicate: the candidates of every Pareto front, ranking and
    export. Measured means trained to the top rung (COMPLETE), or stopped by ASHA at a lower rung
    whose accuracy it recorded (PRUNED with a ``rung`` attr); accuracies are compared only within
    a rung (`measured_rung`, `results.pareto.rung_front`)."""
    if not is_feasible(constraints):
        return False
    if state == "COMPLETE" and status == "complete":
        return True
    return state == "PRUNED" and status == "pruned" and _is_rung(attrs.get("rung") if attrs else None)


def measured_rung(status: str, attrs: Mapping[str, Any], rungs: int | None) -> int | None:
    """The fidelity rung a trial's accuracy was measured at (0: the lowest): the ``rung`` attr the
    search records, else the top rung for a complete trial (a run from before rungs had one
    rung: 0); None for a trial with no accuracy."""
    if _is_rung(attrs.get("rung")):
        return int(attrs["rung"])
    if status == "complete":
        return max(0, (rungs or 1) - 1)
    return None


def _is_rung(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def count_trials(trials: Iterable[tuple[str, Mapping[str, Any]]]) -> dict[str, int]:
    """Counts of (status, user attrs) pairs: one per COUNT_KEYS (waiting under running), plus
    ``total``, ``interrupted`` (part of failed) and ``trained`` (see `counts_as_trained`)."""
    counts = {k: 0 for k in COUNT_KEYS}
    interrupted = trained = 0
    for status, attrs in trials:
        counts["running" if status in ("running", "waiting") else status] += 1
        interrupted += status == "failed" and is_interrupted(attrs)
        trained += counts_as_trained(status, attrs)
    return {**counts, "total": sum(counts.values()), "interrupted": interrupted, "trained": trained}


def frozen_status(t: Any) -> str:
    """`trial_status` of an Optuna FrozenTrial."""
    return trial_status(t.state.name, t.user_attrs, t.constraints)


def count_frozen(trials: Iterable[Any]) -> dict[str, int]:
    """`count_trials` of Optuna FrozenTrials."""
    return count_trials((frozen_status(t), t.user_attrs) for t in trials)


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


# -- the architecture hash ---------------------------------------------------------------------------
# A search trains an architecture once: a candidate whose hash equals a trained (or training)
# trial's is a duplicate. The hash is versioned, the version written with it:
#
#   version 1  (no prefix; 40 hex digits) sha1 of the canonical config YAML without its name and
#              drop_path_rate: every StageConfig field, knobs the stage's block ignores included
#   version 2  "v2:" + sha1 of `arch_identity`: the network-level fields and, per stage, only the
#              fields its block type reads (`BlockType.read_fields`), so two configs that differ
#              in a knob their block ignores are one architecture
#
# Hashes are compared within one run, and a run may hold older versions than the code reading it
# (written before an upgrade, then resumed or read): compare `trial_arch_hash` of the trials, which
# recomputes an older-version hash from the trial's stored config. A sampled config leaves every
# knob its block ignores at its default, so versions 1 and 2 split a run's trials into the same
# groups. Bump ARCH_HASH_VERSION whenever `arch_identity` changes (a field added, a block type's
# knobs changed).
ARCH_HASH_VERSION = 2
_HASH_PREFIX = "v{}:"


def arch_identity(cfg: ArchConfig) -> dict[str, Any]:
    """What the current architecture hash covers: the config without its name and training-only
    fields (drop_path_rate), each stage reduced to the fields its block type reads."""
    from search_space.blocks import get_block

    data = cfg.to_dict()
    data.pop("name", None)
    data.pop("drop_path_rate", None)  # a training hyperparameter, not part of the architecture
    data["stages"] = [
        {name: raw[name] for name in get_block(stage.block).read_fields()}
        for stage, raw in zip(cfg.stages, data["stages"])
    ]
    return data


def arch_hash(cfg: ArchConfig, version: int = ARCH_HASH_VERSION) -> str:
    """The hash of ``cfg``'s architecture: equal architectures, equal hash (see above).

    Args:
        cfg: the architecture (its name and drop_path_rate do not count).
        version: which definition; the current one unless reproducing an older run's strings.
    """
    if version == 1:
        data = cfg.to_dict()
        data.pop("name", None)
        data.pop("drop_path_rate", None)
        return _sha1(data)
    if version == 2:
        return _HASH_PREFIX.format(version) + _sha1(arch_identity(cfg))
    raise ValueError(f"unknown architecture hash version {version!r} (this code writes {ARCH_HASH_VERSION})")


def _sha1(data: Any) -> str:
    return hashlib.sha1(yaml.safe_dump(data, sort_keys=True).encode()).hexdigest()


def arch_hash_version(value: str) -> int | None:
    """The version a stored hash string was written with (1: no prefix), or None for a string
    no version writes."""
    head, sep, digest = str(value).partition(":")
    if not sep:
        return 1 if _is_sha1(head) else None
    if head[:1] == "v" and head[1:].isdigit() and _is_sha1(digest):
        return int(head[1:])
    return None


def _is_sha1(text: str) -> bool:
    return len(text) == 40 and all(c in "0123456789abcdef" for c in text)


def trial_arch_hash(attrs: Mapping[str, Any], config: ArchConfig | None = None) -> str | None:
    """A trial's architecture hash in the current version, whatever version its run stored: the
    stored ``arch_hash`` when current, else recomputed from ``config`` (or the stored ``config``
    attr); the stored string as it is when there is no config to recompute from (None: no hash).

    Args:
        attrs: the trial's user attrs (``arch_hash``, ``config``), as the search stores them.
        config: the trial's config when the caller has parsed it already.
    """
    stored = attrs.get("arch_hash")
    if isinstance(stored, str) and arch_hash_version(stored) == ARCH_HASH_VERSION:
        return stored
    if config is None and isinstance(attrs.get("config"), Mapping):
        try:
            config = ArchConfig.from_dict(attrs["config"], source="stored trial config")
        except UserError:
            config = None
    if config is not None:
        return arch_hash(config)
    return stored if isinstance(stored, str) else None


def trained_arch_index(trials: Iterable[Any]) -> dict[str, int]:
    """Current-version architecture hash -> number of the first trial that trained it (or is
    training it): what a resumed search must not train again. ``trials``: Optuna FrozenTrials."""
    index: dict[str, int] = {}
    for t in trials:
        h = trial_arch_hash(t.user_attrs)
        if h and counts_as_trained(frozen_status(t), t.user_attrs):
            index.setdefault(h, t.number)
    return index


# what a run directory holds of its own: no other command's output may land on or inside these
RUN_RECORDS = ("run.json", "space.yaml", "study.journal", "tune", "trials", "pareto", "final", ".lock")


def refuse_run_records(out: str | Path, flag: str, *, allow: tuple[str, ...] = ()) -> None:
    """One line if output path ``out`` would overwrite one of a run's own records (``RUN/run.json``,
    ``RUN/pareto/...``, the run directory itself), seen through symbolic links too; ``allow``:
    records this command legitimately writes (``nas finalize``: final)."""
    out = Path(out)
    for candidate in {Path(os.path.abspath(out)), Path(os.path.realpath(out))}:
        for run in (candidate, *candidate.parents):
            try:
                is_run = (run / "run.json").is_file()
            except OSError:
                is_run = False
            if not is_run:
                continue
            parts = candidate.relative_to(run).parts
            if not parts:
                raise UserError(f"{flag} {out}: is the run directory {run} itself; choose another place")
            if parts[0] in RUN_RECORDS and parts[0] not in allow:
                raise UserError(f"{flag} {out}: would overwrite {run}'s own {parts[0]}; choose another place")


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
    def final_dir(self) -> Path:
        """Full trainings of chosen trials (`nas finalize`), one training directory per trial."""
        return self.path / "final"

    def final_trial_dir(self, number: int) -> Path:
        return self.final_dir / f"{number:0{TRIAL_DIR_DIGITS}d}"

    @property
    def pareto_dir(self) -> Path:
        return self.path / "pareto"

    @property
    def lock_file(self) -> Path:
        return self.path / ".lock"

    def trial_dir(self, number: int) -> Path:
        return self.trials_dir / f"{number:0{TRIAL_DIR_DIGITS}d}"

    def trial_config(self, number: int) -> Path:
        """A trial's architecture as the search wrote it (`write_trial_config`)."""
        return self.trial_dir(number) / "config.yaml"

    def storage(self, url: str | None = None, meta: dict[str, Any] | None = None) -> Any:
        """Where this run's study lives (`results.storage.RunStorage`, from run.json; ``url``:
        the run's database URL given again, for its password)."""
        from .storage import RunStorage

        return RunStorage.of_run(self, meta, url)

    # -- checks (no writes) -------------------------------------------------------------
    def is_run(self) -> bool:
        return self.run_json.is_file()

    def read_run_json(self, *, strict: bool = True, attempts: int = 5) -> dict[str, Any]:
        """run.json as a dict. ``strict`` (the search, `nas status`): it must be of this FORMAT
        and hold settings; readers of older or partial runs pass ``strict=False``. A file caught
        mid-write (by a writer that does not rename, e.g. a copy) is re-read a few times."""
        for attempt in range(attempts):
            data = read_json(self.run_json, "run.json", missing_ok=True, lenient=True)  # never a FIFO, never 1 GB
            if data is not None or not self.run_json.exists():
                break
            time.sleep(0.05 * (attempt + 1))
        else:
            raise UserError(f"{self.run_json}: unreadable run.json (not valid JSON)")
        if data is None:
            raise UserError(f"{self.path}: not a search run directory (no run.json)")
        if not isinstance(data, dict):
            raise UserError(f"{self.run_json}: unreadable run.json (not a JSON object)")
        problem = run_json_shape_problem(data)
        if problem:
            raise UserError(f"{self.run_json}: unreadable run.json ({problem})")
        if strict and (data.get("format") != FORMAT or "settings" not in data):
            raise UserError(f"{self.run_json}: not a run.json of format {FORMAT}")
        return data

    def check_new(self, *, locked: bool = False) -> None:
        """A new search may use a missing or empty directory, never one holding anything (but the
        lock file this search holds, when ``locked``)."""
        if self.path.exists() and not self.path.is_dir():
            raise UserError(f"{self.path}: exists and is not a directory")
        if self.path.is_symlink():
            raise UserError(f"{self.path}: is a symbolic link; give a real directory")
        own = {".lock"} if locked else set()
        if self.path.is_dir() and any(p.name not in own for p in self.path.iterdir()):
            hint = "use --resume to continue it" if self.is_run() else "choose another --out"
            raise UserError(f"{self.path}: directory exists and is not empty ({hint}; results are never overwritten)")
        parent = next((p for p in self.path.absolute().parents if p.exists()), None)
        if parent is not None and not parent.is_dir():
            raise UserError(f"{self.path}: {parent} is not a directory")

    def check_resumable(self) -> dict[str, Any]:
        if self.path.is_symlink() or not self.path.is_dir():
            raise UserError(f"{self.path}: no such run directory to resume")
        self.check_no_links()
        return self.read_run_json()

    def check_no_links(self) -> None:
        """Refuse a run holding symbolic links: every write in it would follow one out of the directory.
        (The one link an earlier version's Optuna lock could leave, ``study.journal.lock`` naming
        the journal, is no write target: it is removed when the journal is opened.)"""
        for root, dirs, files in os.walk(self.path, followlinks=False):
            for name in (*dirs, *files):
                path = Path(root) / name
                if path == self.stale_journal_lock and os.readlink(path) in (str(self.journal), self.journal.name):
                    continue
                if path.is_symlink():
                    raise UserError(f"{path}: a symbolic link inside the run directory; refusing to write through it")

    def recorded_trials(self, meta: Mapping[str, Any]) -> int:
        """How many trials the run recorded: run.json's counts or the trial folders, whichever is
        more (a study holding fewer than this is not the run's whole study)."""
        counts = meta.get("counts") if isinstance(meta.get("counts"), Mapping) else {}
        total = counts.get("total") if isinstance(counts.get("total"), int) else 0
        folders = 0
        if self.trials_dir.is_dir() and not self.trials_dir.is_symlink():
            numbers = [int(p.name) for p in self.trials_dir.iterdir()
                       if p.name.isdigit() and len(p.name) == TRIAL_DIR_DIGITS]  # fmt: skip
            folders = max(numbers) + 1 if numbers else 0
        return max(int(total), folders)

    def in_use(self) -> bool:
        """True while a search holds this directory's lock (never creates the lock file)."""
        if not self.lock_file.exists():
            return False
        try:
            fd = os.open(self.lock_file, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            return False
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return False  # a FIFO or device is no lock of ours (and must not be waited on)
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        return False

    def search_alive(self) -> bool:
        """Whether the search that wrote its pid into ``.lock`` still runs.

        Reads the pid only, never the lock itself, so looking at a run can never make a search
        that is starting up find its directory in use. No lock file or no pid: no search.
        """
        pid = _read_pid(self.lock_file)
        if pid is None:
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # exists, owned by someone else
            return True
        return True

    def shown_status(self, recorded: str) -> str:
        """run.json's status, except that a "running" run whose search is gone was interrupted."""
        return "interrupted" if recorded == "running" and not self.search_alive() else recorded

    # -- the lock -----------------------------------------------------------------------
    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the directory for one search; a second search is refused with one line.

        flock is released by the kernel when the process dies, even on SIGKILL, so a killed search
        never leaves a stale lock behind.
        """
        try:  # never through a planted link, never a FIFO or device, never another name's inode
            with held_lock(self.lock_file, root=self.path, content=f"{os.getpid()}\n".encode()):
                yield
        except BlockingIOError:
            holder = _read_pid(self.lock_file)
            who = f" (pid {holder})" if holder else ""
            raise UserError(f"{self.path}: run directory is in use by another nas search{who}") from None

    # -- run.json -----------------------------------------------------------------------
    def create(self, settings: dict[str, Any], space_text: str, storage: dict[str, Any] | None = None) -> dict[str, Any]:
        """run.json of a new run; ``storage``: `RunStorage.record()` (study name, database URL without password)."""
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
            "space_sha256": space_digest(space_text),  # a resume refuses an edited space.yaml
            **(storage or {}),
        }
        make_dirs(self.trials_dir, root=self.path)
        make_dirs(self.tune_dir, root=self.path)
        write_atomic(self.space_yaml, space_text, root=self.path)
        write_json_atomic(self.run_json, data, root=self.path)
        return data

    def update(self, **changes: Any) -> dict[str, Any]:
        data = self.read_run_json()
        data.update(changes)
        data["updated"] = now_iso()
        write_json_atomic(self.run_json, data, root=self.path)
        return data

    # -- per-trial files ----------------------------------------------------------------
    def write_trial_config(self, number: int, cfg: ArchConfig) -> None:
        write_atomic(self.trial_config(number), cfg.to_yaml(), root=self.path)

    def append_metrics(self, number: int, row: dict[str, Any]) -> None:
        """One JSON line per rung (per epoch in runs from before rungs); rung 0 starts the file
        afresh (a retried trial restarts).
        Rewritten whole each time (`append_atomic`): never written in place."""
        path = self.trial_dir(number) / "metrics.jsonl"
        line = json.dumps(row) + "\n"
        first = row.get("rung") == 0 if "rung" in row else int(row.get("epoch", 0)) <= 1  # older runs: per epoch
        if first:
            write_atomic(path, line, root=self.path)
        else:
            append_atomic(path, line, root=self.path, kind="metrics")

    def write_trial_result(self, number: int, result: dict[str, Any]) -> None:
        write_json_atomic(self.trial_dir(number) / "result.json", result, root=self.path)

    def read_trial_result(self, number: int) -> dict[str, Any] | None:
        """A trial's result.json; None when missing or caught half-written; a FIFO, device or
        oversized file is a one-line error."""
        data = read_json(self.trial_dir(number) / "result.json", "result", missing_ok=True, lenient=True)
        return data if isinstance(data, dict) else None

    def read_trial_metrics(self, number: int) -> list[dict[str, Any]]:
        """Per-epoch rows of a trial; a half-written last line (a trial still training) is skipped."""
        text = read_text(self.trial_dir(number) / "metrics.jsonl", "metrics", missing_ok=True) or ""
        rows = []
        for line in text.splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(row, dict):
                rows.append(row)
        return rows

    @property
    def stale_journal_lock(self) -> Path:
        """Optuna's default journal lock (a symbolic link to the journal), left by a SIGKILL of a
        search of an earlier version; searches now lock the journal in-process."""
        return self.path / (self.journal.name + ".lock")

    def prepare_journal(self) -> None:
        """Before Optuna appends to the journal by name (the run's flock held): a regular file within
        its cap, with one link (a ``cp -al`` backup is not grown by a resume), reached without links."""
        check_regular(self.journal, "journal")
        check_single_link(self.journal, root=self.path)
        if self.stale_journal_lock.is_symlink():
            self.stale_journal_lock.unlink()


# run.json's top-level keys and the JSON types they must have where present (and not null)
RUN_JSON_SHAPES: dict[str, tuple[type, ...]] = {
    "format": (int,), "status": (str,), "settings": (dict,), "command": (list,), "versions": (dict,),
    "counts": (dict,), "resources": (dict,), "pareto": (list,), "created": (str,), "updated": (str,),
    "error": (str,), "resumes": (list,), "space_sha256": (str,), "storage": (str,), "study_name": (str,),
}  # fmt: skip


def space_digest(space_text: str) -> str:
    return hashlib.sha256(space_text.encode("utf-8")).hexdigest()


def run_json_shape_problem(data: dict[str, Any]) -> str | None:
    """What is wrong with the shape of a parsed run.json (valid JSON of the wrong types), or None."""
    from .settings import settings_shape_problem

    for key, kinds in RUN_JSON_SHAPES.items():
        value = data.get(key)
        if value is not None and (not isinstance(value, kinds) or isinstance(value, bool)):
            return f"'{key}' is a {type(value).__name__}, expected {' or '.join(k.__name__ for k in kinds)}"
    if not all(isinstance(a, str) for a in data.get("command") or ()):
        return "'command' holds a non-string"
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (data.get("counts") or {}).values()):
        return "'counts' holds a non-integer"
    if data.get("settings") is not None:
        return settings_shape_problem(data["settings"])
    return None


def _read_pid(path: Path) -> int | None:
    try:
        text = (read_text(path, "lock", missing_ok=True) or "").strip()
    except UserError:  # a FIFO, device or oversized .lock holds no pid of ours
        return None
    return int(text) if text.isdigit() else None


def repair_journal(path: Path) -> bool:
    """Cut a half-written last line off an Optuna journal (a kill mid-append leaves one).

    Optuna skips a trailing partial line when reading, but the next append would glue a new record
    onto it and corrupt both. Returns True if something was cut.
    """
    from search_space.files import read_bytes

    data = read_bytes(path, "journal", missing_ok=True)
    if not data or data.endswith(b"\n"):
        return False
    write_atomic(path, data[: data.rfind(b"\n") + 1])  # a new file: never truncated in place
    return True
