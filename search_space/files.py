"""The one guarded writer and reader of the project's files.

Writing. Every file the project creates, replaces or appends lives under a directory the user
named (a run directory, an ``--out`` or ``--save`` folder, the latency cache): its *root*. Below
the root every path component is reached through directory file descriptors opened with
``O_NOFOLLOW | O_DIRECTORY``, so a symbolic link planted anywhere below the root (``RUN/report``
-> elsewhere) is refused, not followed. Files are replaced by write-new-then-rename in the same
directory (`write_atomic`): a reader, a kill or a full disk never leaves half a file, and a file
with several hard links is never written in place (the rename gives the name a new inode; the
other links keep the old content). The few files that must keep their inode (a lock file, a
journal a library appends to) get an inode of their own first (`held_lock`, `check_single_link`).

Reading. `read_bytes` (and `read_text`, `read_json`) opens regular files only (a FIFO would block
forever, ``/dev/zero`` never ends) and reads at most a cap per kind of file (`READ_LIMITS`), so a
1 GB sparse run.json costs one ``fstat``, not gigabytes of memory. Every problem is one line.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .errors import DiskFullError, UserError


def _umask() -> int:
    current = os.umask(0o022)
    os.umask(current)
    return current


# temporary files are created 0600; outputs get the usual permissions instead
FILE_MODE = 0o666 & ~_umask()
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)

# Most bytes read from each kind of file: orders of magnitude above what the project writes
# (a run.json is a few KB, a trial result under 1 KB, a journal ~5 KB per trial).
READ_LIMITS: dict[str, int] = {
    "run.json": 8 << 20,
    "result": 4 << 20,  # a trial's or a training's result.json, a training's settings
    "metrics": 32 << 20,  # a trial's metrics.jsonl, a training's history.json
    "lock": 64,  # a pid and a newline
    "journal": 1 << 30,  # an Optuna journal: ~200,000 trials
    "latency table": 64 << 20,
    "yaml": 1 << 20,  # a model config ~1 KB, a search space ~2 KB
    "weights": 16 << 30,  # safetensors, training state
    "data": 512 << 20,  # a compressed data file (Fashion-MNIST's largest: 26 MB)
    "text": 8 << 20,
}


# -- walking below a root ----------------------------------------------------------------------


def _parts_below(root: Path, path: Path) -> tuple[str, ...]:
    """The components of ``path`` below ``root`` (both as given, made absolute lexically)."""
    root_abs, path_abs = Path(os.path.abspath(root)), Path(os.path.abspath(path))
    try:
        rel = path_abs.relative_to(root_abs)
    except ValueError:
        raise UserError(f"{path}: outside {root}; refusing to write there") from None
    parts = rel.parts
    if any(p in ("", ".", "..") for p in parts):
        raise UserError(f"{path}: not a plain path below {root}")
    return parts


def _name_too_long(exc: OSError) -> bool:
    return exc.errno == errno.ENAMETOOLONG


def _os_problem(exc: OSError, path: Path | str, doing: str) -> UserError:
    """One line for an OSError; a full disk becomes `DiskFullError` with the free space."""
    if exc.errno == errno.ELOOP or (exc.errno == errno.ENOTDIR and Path(path).is_symlink()):
        return UserError(f"{path}: is a symbolic link; refusing to {doing} through it")
    if _name_too_long(exc):
        return UserError(f"{path}: a file name is too long ({exc.strerror})")
    kind = DiskFullError if is_disk_full(exc) else UserError
    parent = Path(path).parent
    return kind(f"cannot {doing} {path} ({exc.strerror}{free_space_note(exc, parent)})")


def _open_root(root: Path, create: bool) -> int:
    """The root directory itself (the user named it: a link there is the user's choice)."""
    if create:
        try:
            root.mkdir(parents=True, exist_ok=True)
        except FileExistsError:
            raise UserError(f"{root}: exists and is not a directory") from None
        except OSError as exc:
            raise _os_problem(exc, root, "create") from None
    try:
        return os.open(root, os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise UserError(f"{root}: no such directory") from None
    except NotADirectoryError:
        raise UserError(f"{root}: exists and is not a directory") from None
    except OSError as exc:
        raise _os_problem(exc, root, "open") from None


@contextmanager
def open_dir(root: str | Path, path: str | Path | None = None, *, create: bool = True) -> Iterator[int]:
    """A file descriptor of directory ``path`` (``root`` itself when None), reached from ``root``
    one component at a time without following a symbolic link; missing ones are created when
    ``create``. Errors are one line."""
    root = Path(root)
    target = Path(path) if path is not None else root
    parts = _parts_below(root, target)
    fd = _open_root(root, create)
    here = root
    try:
        for part in parts:
            here = here / part
            if create:
                try:
                    os.mkdir(part, 0o777, dir_fd=fd)
                except FileExistsError:
                    pass
                except OSError as exc:
                    raise _os_problem(exc, here, "create") from None
            try:
                child = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                raise UserError(f"{here}: no such directory") from None
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR) and _is_link_at(fd, part):
                    raise UserError(f"{here}: is a symbolic link; refusing to write through it") from None
                if exc.errno == errno.ENOTDIR:
                    raise UserError(f"{here}: exists and is not a directory") from None
                raise _os_problem(exc, here, "open") from None
            os.close(fd)
            fd = child
        yield fd
    finally:
        os.close(fd)


def _is_link_at(dir_fd: int, name: str) -> bool:
    try:
        return stat.S_ISLNK(os.lstat(name, dir_fd=dir_fd).st_mode)
    except OSError:
        return False


def make_dirs(path: str | Path, *, root: str | Path | None = None) -> Path:
    """Create directory ``path`` (and its parents below ``root``) without following links."""
    path = Path(path)
    with open_dir(root if root is not None else path, path):
        pass
    return path


def _root_of(path: Path, root: str | Path | None) -> Path:
    return Path(root) if root is not None else (path.parent if str(path.parent) else Path("."))


# -- writing -----------------------------------------------------------------------------------


def write_atomic(path: str | Path, data: str | bytes, *, root: str | Path | None = None) -> None:
    """Write ``data`` to ``path`` whole or not at all: a new file, then a rename over the name.

    ``root``: the directory the user named; no component of ``path`` below it may be a symbolic
    link (default: the file's own directory, so only the name itself is checked). Errors are
    one-line `UserError`s (`DiskFullError` for a full disk)."""
    path = Path(path)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    with open_dir(_root_of(path, root), path.parent) as dfd:
        _replace_at(dfd, path, payload)


def _replace_at(dfd: int, path: Path, payload: bytes) -> None:
    name = path.name
    try:
        st = os.lstat(name, dir_fd=dfd)
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise _os_problem(exc, path, "write") from None
    if st is not None and stat.S_ISLNK(st.st_mode):
        raise UserError(f"{path}: is a symbolic link; refusing to write through it")
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise UserError(f"{path}: is a directory; refusing to replace it with a file")
    tmp = f".{name[:200]}.{os.getpid()}.{os.urandom(4).hex()}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=dfd)
    except OSError as exc:
        raise _os_problem(exc, path, "write") from None
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), FILE_MODE)
            fh.write(payload)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
    except OSError as exc:
        _unlink_quietly(tmp, dfd)
        raise _os_problem(exc, path, "write") from None
    except BaseException:  # a signal mid-write: no temporary file left behind
        _unlink_quietly(tmp, dfd)
        raise


def _unlink_quietly(name: str, dir_fd: int) -> None:
    try:
        os.unlink(name, dir_fd=dir_fd)
    except OSError:
        pass


def write_json_atomic(path: str | Path, data: Any, indent: int = 2, *, root: str | Path | None = None) -> None:
    write_atomic(path, json.dumps(data, indent=indent) + "\n", root=root)


def append_atomic(path: str | Path, line: str, *, root: str | Path | None = None, kind: str = "metrics") -> None:
    """Append ``line`` to a small text file by rewriting it whole (read, add, write-then-rename):
    never written in place, so neither a hard link nor a kill mid-write can damage it."""
    path = Path(path)
    old = read_text(path, kind, missing_ok=True) or ""
    if old and not old.endswith("\n"):
        old = old[: old.rfind("\n") + 1]  # a half-written last line (a kill) is dropped
    write_atomic(path, old + line, root=root)


def _break_link(dfd: int, path: Path) -> None:
    """Give ``path`` an inode of its own: copy it, then rename the copy over the name."""
    src = os.open(path.name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dfd)
    try:
        chunks = []
        while chunk := os.read(src, 1 << 20):
            chunks.append(chunk)
    finally:
        os.close(src)
    _replace_at(dfd, path, b"".join(chunks))


@contextmanager
def held_lock(path: str | Path, *, root: str | Path | None = None, blocking: bool = False,
              content: bytes = b"") -> Iterator[int]:  # fmt: skip
    """Hold an exclusive ``flock`` on lock file ``path`` (created if missing), then write
    ``content`` (a pid) into it. Raises BlockingIOError when another process holds it and not
    ``blocking``. The file is reached without following links below ``root``; a FIFO or device
    is refused; a lock file with several hard links (``cp -al`` of a run) gets an inode of its
    own, replaced only while its old inode is held, so two processes never both hold "the" lock."""
    import fcntl

    path = Path(path)
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    with open_dir(_root_of(path, root), path.parent) as dfd:
        for _ in range(100):
            try:
                fd = os.open(path.name, flags, 0o644, dir_fd=dfd)
            except OSError as exc:
                if exc.errno == errno.ELOOP or _is_link_at(dfd, path.name):
                    raise UserError(f"{path}: is a symbolic link; refusing to write through it") from None
                raise _os_problem(exc, path, "open") from None
            try:
                st = os.fstat(fd)
                if not stat.S_ISREG(st.st_mode):
                    raise UserError(f"{path}: not a regular file (a pipe, device or socket)")
                fcntl.flock(fd, fcntl.LOCK_EX if blocking else fcntl.LOCK_EX | fcntl.LOCK_NB)
                try:
                    now = os.lstat(path.name, dir_fd=dfd)
                except FileNotFoundError:
                    now = None
                if now is None or (now.st_ino, now.st_dev) != (st.st_ino, st.st_dev):
                    continue  # replaced while we waited: lock the file that has the name now
                if os.fstat(fd).st_nlink > 1:
                    fd = _own_lock_inode(dfd, path, fd)
                os.ftruncate(fd, 0)
                if content:
                    os.pwrite(fd, content, 0)
                yield fd
                return
            finally:
                if fd >= 0:
                    os.close(fd)  # closing releases the flock
        raise UserError(f"{path}: the lock file keeps being replaced")


def _own_lock_inode(dfd: int, path: Path, held: int) -> int:
    """A new, locked lock file renamed over ``path`` while the old one (``held``) is locked."""
    import fcntl

    tmp = f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp"
    fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644, dir_fd=dfd)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.replace(tmp, path.name, src_dir_fd=dfd, dst_dir_fd=dfd)
    os.close(held)
    return fd


def check_single_link(path: str | Path, *, root: str | Path | None = None) -> None:
    """Make sure a file a library will append to by name (an Optuna journal) is a regular file
    with one link, reached without symbolic links below ``root`` (a missing file is fine)."""
    path = Path(path)
    with open_dir(_root_of(path, root), path.parent, create=False) as dfd:
        try:
            st = os.lstat(path.name, dir_fd=dfd)
        except FileNotFoundError:
            return
        if stat.S_ISLNK(st.st_mode):
            raise UserError(f"{path}: is a symbolic link; refusing to write through it")
        if not stat.S_ISREG(st.st_mode):
            raise UserError(f"{path}: not a regular file (a pipe, device or socket)")
        if st.st_nlink > 1:
            _break_link(dfd, path)


def make_output_dir(path: str | Path, what: str = "output directory", flag: str = "") -> Path:
    """``path`` as a directory to write into (created with its parents), or a one-line error."""
    out = Path(path)
    label = f"{flag} " if flag else ""
    if out.is_symlink() and not out.is_dir():
        raise UserError(f"{label}{out}: a symbolic link to nothing; give a directory")
    if out.exists() and not out.is_dir():
        raise UserError(f"{label}{out}: exists and is not a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        problem = "a name is too long" if _name_too_long(exc) else exc.strerror
        raise UserError(f"{label}{out}: cannot create the {what} ({problem})") from None
    return out


# -- reading -----------------------------------------------------------------------------------


def read_bytes(path: str | Path, kind: str, *, missing_ok: bool = False, limit: int | None = None,
               what: str | None = None, error: type[UserError] = UserError) -> bytes | None:  # fmt: skip
    """The bytes of regular file ``path``, at most ``READ_LIMITS[kind]`` (or ``limit``) of them.

    A missing file is None when ``missing_ok``; a directory, FIFO, device, socket, an oversized
    file or an unreadable one is a one-line ``error`` naming the file and the problem (``what``:
    how the message names the file, default "<kind> file")."""
    path = Path(path)
    cap = limit if limit is not None else READ_LIMITS[kind]
    what = what or f"{kind} file"
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer (fstat then refuses it)
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        if missing_ok:
            return None
        raise error(f"{path}: no such {what}") from None
    except IsADirectoryError:
        raise error(f"{path}: is a directory, expected a {what}") from None
    except OSError as exc:
        if _name_too_long(exc):
            raise error(f"{path}: a file name is too long ({exc.strerror})") from None
        raise error(f"{path}: cannot read ({exc.strerror})") from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise error(f"{path}: is a directory, expected a {what}")
        if not stat.S_ISREG(st.st_mode):
            raise error(f"{path}: not a regular file (a pipe, device or socket); expected a {what}")
        if st.st_size > cap:
            raise error(f"{path}: larger than {_size(cap)}; not a {what}")
        chunks, total = [], 0
        while total <= cap:
            try:
                chunk = os.read(fd, min(1 << 20, cap + 1 - total))
            except OSError as exc:
                raise error(f"{path}: cannot read ({exc.strerror})") from None
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        if total > cap:  # grew while being read
            raise error(f"{path}: larger than {_size(cap)}; not a {what}")
        return b"".join(chunks)
    finally:
        os.close(fd)


def _size(n: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:g} {unit}"
    return f"{n} bytes"


def read_text(path: str | Path, kind: str, *, missing_ok: bool = False) -> str | None:
    """`read_bytes` decoded as UTF-8 (one line if it is not text)."""
    raw = read_bytes(path, kind, missing_ok=missing_ok)
    if raw is None:
        return None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{path}: not a text file (binary content)") from None


def read_json(path: str | Path, kind: str, *, missing_ok: bool = False, lenient: bool = False) -> Any:
    """The parsed JSON of a file read by `read_text`. ``lenient``: half-written or malformed JSON
    (a file caught mid-copy) is None instead of an error; an unsafe file is an error either way."""
    text = read_text(path, kind, missing_ok=missing_ok)
    if text is None:
        return None
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError; so is a 5,000-digit integer
        if lenient:
            return None
        why = "" if isinstance(exc, json.JSONDecodeError) else (
            " (nested too deeply)" if isinstance(exc, RecursionError) else " (a number too long to read)")
        raise UserError(f"{path}: not valid JSON{why}") from None


def check_regular(path: str | Path, kind: str, *, missing_ok: bool = True) -> None:
    """A file another library will open by name (a journal, weights) is regular and within the
    cap of its kind: checked by `fstat`, nothing read."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        if missing_ok:
            return
        raise UserError(f"{path}: no such file") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror})") from None
    try:
        st = os.fstat(fd)
    finally:
        os.close(fd)
    if not stat.S_ISREG(st.st_mode):
        raise UserError(f"{path}: not a regular file (a pipe, device or socket); expected a {kind} file")
    if st.st_size > READ_LIMITS[kind]:
        raise UserError(f"{path}: larger than {_size(READ_LIMITS[kind])}; not a {kind} file")


# -- disk space ----------------------------------------------------------------------------------


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
