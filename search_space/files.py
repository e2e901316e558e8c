"""Writing files safely: atomically (write a temporary file, then rename) and never through a symlink.

Every package writes its outputs through `write_atomic` so that a reader, a kill or a full disk
never leaves half a file where a whole one was, and a symlink planted where an output goes is
refused instead of followed (a rename would replace the link, but the caller asked for a file).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from .errors import DiskFullError, UserError


def _umask() -> int:
    current = os.umask(0o022)
    os.umask(current)
    return current


# mkstemp creates 0600 files; outputs get the usual permissions instead
FILE_MODE = 0o666 & ~_umask()


def write_atomic(path: str | Path, data: str | bytes) -> None:
    """Write ``data`` to ``path`` whole or not at all. Errors are one-line `UserError`s."""
    path = Path(path)
    if path.is_symlink():
        raise UserError(f"{path}: is a symbolic link; refusing to write through it")
    payload = data.encode("utf-8") if isinstance(data, str) else data
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise UserError(f"cannot write {path} ({exc.strerror})") from None
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), FILE_MODE)
            fh.write(payload)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        with _ignored():
            os.unlink(tmp)
        kind = DiskFullError if is_disk_full(exc) else UserError
        raise kind(f"cannot write {path} ({exc.strerror}{free_space_note(exc, path.parent)})") from None
    except BaseException:  # a signal mid-write: no temporary file left behind
        with _ignored():
            os.unlink(tmp)
        raise


def make_output_dir(path: str | Path, what: str = "output directory", flag: str = "") -> Path:
    """``path`` as a directory to write into (created with its parents), or a one-line error."""
    out = Path(path)
    label = f"{flag} " if flag else ""
    if out.exists() and not out.is_dir():
        raise UserError(f"{label}{out}: exists and is not a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"{label}{out}: cannot create the {what} ({exc.strerror})") from None
    return out


def is_disk_full(exc: BaseException) -> bool:
    """No space left, or the quota used up: our own `DiskFullError` or the system's OSError."""
    return isinstance(exc, DiskFullError) or (isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT))


def free_space(directory: str | Path) -> str | None:
    """"N MiB free in DIR", or None when the file system cannot be asked."""
    try:
        free = shutil.disk_usage(directory).free
    except OSError:
        return None
    return f"{free / 2**20:.1f} MiB free in {directory}"


def free_space_note(exc: OSError, directory: str | Path) -> str:
    """", N MiB free in DIR" for a full disk or quota (what a user needs to act on), else ""."""
    free = free_space(directory) if is_disk_full(exc) else None
    return f", {free}" if free else ""


def write_json_atomic(path: str | Path, data: Any, indent: int = 2) -> None:
    write_atomic(path, json.dumps(data, indent=indent) + "\n")


class _ignored:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return isinstance(exc[1], OSError)
