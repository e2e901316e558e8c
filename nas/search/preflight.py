"""The pre-flight check of a run before a resume: everything it needs, before Ray or any write.

A resume trusts the run directory it continues. So, before Ray starts and before a byte is
written, the run is checked against its own run.json:

* the settings are well-formed values (an ``objectives`` edited by hand, a negative budget),
  not only of the right JSON types;
* the record directories (the run itself, ``trials/``, ``tune/``, ``pareto/`` when present) exist,
  are directories reached without symbolic links, and can be written (a probe file is created and
  removed: the only honest test on a read-only mount or as another user);
* the study exists and holds the trials run.json recorded: a deleted journal must not make the
  resume start a new study and overwrite the finished trials' files.

Each finding is one `UserError` line naming the file and what to do.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from search_space.errors import UserError
from search_space.files import check_regular

from results.run_dir import RunDir
from .settings import DEVICES, SAMPLERS, SearchSettings, parse_objectives


def check_settings(settings: SearchSettings, where: Path) -> None:
    """The stored settings hold values a search can run with (types are `settings_shape_problem`'s)."""

    def need(ok: bool, what: str) -> None:
        if not ok:
            raise UserError(f"{where}: settings.{what}; not a run.json nas search wrote (restore it)")

    try:
        parse_objectives(",".join(settings.objectives))
    except UserError as exc:
        raise UserError(f"{where}: settings.objectives {list(settings.objectives)}: {exc}") from None
    need(settings.budget_macs > 0, f"budget_macs {settings.budget_macs} is not positive")
    need(settings.max_params is None or settings.max_params > 0, f"max_params {settings.max_params} is not positive")
    need(settings.latency_ms is None or (math.isfinite(settings.latency_ms) and settings.latency_ms > 0),
         f"latency_ms {settings.latency_ms} is not a positive number")  # fmt: skip
    need(settings.sampler in SAMPLERS, f"sampler {settings.sampler!r} is not one of {', '.join(SAMPLERS)}")
    need(settings.device in DEVICES, f"device {settings.device!r} is not one of {', '.join(DEVICES)}")
    for name in ("trials", "epochs", "batch_size"):
        need(getattr(settings, name) >= 1, f"{name} {getattr(settings, name)} is below 1")
    for name in ("concurrency", "threads"):
        value = getattr(settings, name)
        need(value is None or value >= 1, f"{name} {value} is below 1")
    need(settings.max_failures >= 0, f"max_failures {settings.max_failures} is negative")
    need(settings.proxy_resolution >= 32 and settings.proxy_resolution % 32 == 0,
         f"proxy_resolution {settings.proxy_resolution} is not a positive multiple of 32")  # fmt: skip
    need(math.isfinite(settings.proxy_width) and 0 < settings.proxy_width <= 4,
         f"proxy_width {settings.proxy_width} is not in (0, 4]")  # fmt: skip
    need(math.isfinite(settings.data_fraction) and 0 < settings.data_fraction <= 1,
         f"data_fraction {settings.data_fraction} is not in (0, 1]")  # fmt: skip
    share = settings.low_rung_val_fraction
    need(math.isfinite(share) and 0 < share <= 1, f"low_rung_val_fraction {share} is not in (0, 1]")


def check_record_dirs(rd: RunDir) -> None:
    """The run's record directories exist, are real directories and can be written."""
    needed = [rd.path, rd.trials_dir, rd.tune_dir]
    optional = [rd.pareto_dir, rd.final_dir]
    for path in needed + [p for p in optional if os.path.lexists(p)]:
        if path.is_symlink():
            raise UserError(f"{path}: is a symbolic link inside the run directory; refusing to write through it")
        if not path.exists():
            raise UserError(f"{path}: missing from the run directory; its records are gone (restore it from a "
                            "copy of the run, or start a new run)")  # fmt: skip
        if not path.is_dir():
            raise UserError(f"{path}: not a directory")
        _probe_writable(path)


# the kind of guarded read (`search_space.files.READ_LIMITS`) of each record file the search reads back
RECORD_KINDS = {"result.json": "result", "metrics.jsonl": "metrics", "config.yaml": "yaml"}


def check_record_files(rd: RunDir) -> None:
    """Every trial record the search will read back is a regular file within its size cap (a FIFO
    there would hang the search after Ray started; a sparse giant would exhaust its memory)."""
    if not rd.trials_dir.is_dir():
        return
    for trial in rd.trials_dir.iterdir():
        if not trial.is_dir() or trial.is_symlink():
            continue
        for name, kind in RECORD_KINDS.items():
            check_regular(trial / name, kind)


def _probe_writable(directory: Path) -> None:
    probe = directory / f".nas-write-probe-{os.getpid()}"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except OSError as exc:
        raise UserError(f"{directory}: cannot write in the run directory ({exc.strerror}); a resume must "
                        "write its trials there") from None  # fmt: skip
    os.close(fd)
    os.unlink(probe)


def check_study(rd: RunDir, meta: Mapping[str, Any], study: Any, where: str) -> None:
    """The study (``study``, None when absent) holds the trials the run recorded."""
    recorded = rd.recorded_trials(meta)
    if recorded == 0:
        return
    if study is None:
        raise UserError(f"{where}: the run's study is missing, though the run recorded {recorded} trial(s); restore "
                        "it (a resume would start a new study and overwrite their records)")  # fmt: skip
    held = len(study.get_trials(deepcopy=False))
    if held < recorded:
        raise UserError(f"{where}: the study holds {held} trial(s) but the run recorded {recorded}; is it the "
                        "run's own study? (restore it before resuming)")  # fmt: skip


def check_resume(rd: RunDir, meta: Mapping[str, Any], settings: SearchSettings) -> None:
    """Settings and record directories (the study is checked once the storage is reachable)."""
    check_settings(settings, rd.run_json)
    check_record_dirs(rd)
    check_record_files(rd)
