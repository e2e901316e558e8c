"""Where a run's Optuna study lives, and how to open it: the one place that knows.

A run keeps its study in one of two places:

* the journal file ``RUN_DIR/study.journal`` (the default; study name ``search``, as every run
  before database storage), through Optuna's ``JournalStorage``;
* a database given with ``nas search --storage URL`` (``sqlite:///PATH`` or
  ``postgresql+psycopg://USER[:PASSWORD]@HOST[:PORT]/DB``), through Optuna's ``RDBStorage`` with
  heartbeats. Several runs may share one database, so each gets its own study name
  (``search-<run dir name>-<6 hex digits>``, or ``--study-name``). The run directory then holds no
  journal; run.json records ``storage`` (the URL **without** its password) and ``study_name``.

The password never reaches a file, a log or an error message: it comes from ``PGPASSWORD``,
``~/.pgpass`` (libpq reads both) or the URL given again with ``--storage``, which the search
hands to the readers it runs itself (`RunStorage` objects, in memory only).

Heartbeats: the search driver records one for every trial it has asked for and not yet told
(`Heartbeats`); a trial left RUNNING whose heartbeat is older than ``GRACE_PERIOD_S`` belongs to
a search that is gone. ``nas search --resume`` waits for the heartbeats of RUNNING trials to lapse
(`wait_for_lapsed_heartbeats`) before it marks them interrupted and re-queues them, exactly as a
journal run's resume does; a heartbeat that keeps being renewed means another search is driving
the study (e.g. on another machine), and the resume is refused.

Losing the database mid-search (the server stopped, the network gone): whichever part of the
driver meets it first (the searcher inside Tune's callbacks, the heartbeat thread, the runner)
notes it on one `Outage` instead of raising or logging; Tune is stopped, and the search ends with
`DatabaseLost`: one line naming the database (`database_lost`), run.json ``interrupted``, exit
status 2. `connection_error` tells such errors from others, through the whole exception chain.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from search_space.errors import UserError
from search_space.files import check_regular

from .run_dir import STUDY_NAME, repair_journal

if TYPE_CHECKING:
    from .run_dir import RunDir

log = logging.getLogger(__name__)

SUPPORTED = "sqlite:///PATH or postgresql+psycopg://USER[:PASSWORD]@HOST[:PORT]/DB"
HEARTBEAT_INTERVAL_S = 5  # the driver renews each running trial's heartbeat this often
SCHEMA_RACE_ATTEMPTS = 5  # concurrent first searches on one fresh database
GRACE_PERIOD_S = 15  # a heartbeat older than this: the search that ran the trial is gone
CONNECT_TIMEOUT_S = 10
SQLITE_BUSY_TIMEOUT_S = 30  # several searches may share one SQLite file
STUDY_NAME_MAX = 200  # Optuna's column holds 512; keep names readable
PASSWORD_HINT = "give the password in PGPASSWORD, ~/.pgpass or the --storage URL"

_USERINFO = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*://[^:/@\s]*):[^@\s]*@")


def redact(text: str) -> str:
    """``text`` with the password of every URL in it removed (``scheme://user:pw@`` -> ``scheme://user@``)."""
    return _USERINFO.sub(r"\1@", text)


# -- URLs --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StorageURL:
    """A checked database URL. ``full`` may hold a password: never print, log or store it."""

    full: str = field(repr=False)
    shown: str  # the same URL without its password: what run.json records and messages quote
    dialect: str  # "sqlite" | "postgresql"
    path: Path | None = None  # the SQLite file

    @property
    def has_password(self) -> bool:
        return self.full != self.shown


def parse_url(text: str, what: str = "--storage") -> StorageURL:
    """A `StorageURL` from user input, or a one-line `UserError` (the password never quoted)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    raw = str(text).strip()
    shown_raw = redact(raw)[:200]
    if "://" not in raw:
        raise UserError(f"malformed {what} '{shown_raw}' (expected {SUPPORTED})")
    try:
        url = make_url(raw)
    except (ArgumentError, ValueError, TypeError):
        raise UserError(f"malformed {what} '{shown_raw}' (expected {SUPPORTED})") from None
    scheme = url.drivername
    if scheme == "sqlite":
        if not url.database or url.database == ":memory:" or url.host or url.username or url.port:
            raise UserError(f"{what} '{shown_raw}': an SQLite storage is a file: sqlite:///PATH (three slashes, then "
                            "the path; four for an absolute path)")  # fmt: skip
        if url.query:
            raise UserError(f"{what} '{shown_raw}': an SQLite storage URL takes no query (?...)")
        path = Path(url.database).expanduser().absolute()
        url = url.set(database=str(path))
        dialect: str = "sqlite"
    elif scheme in ("postgresql", "postgresql+psycopg"):
        url = url.set(drivername="postgresql+psycopg")  # psycopg 3: the driver the project installs
        if not url.database:
            raise UserError(f"{what} '{shown_raw}' names no database (expected {SUPPORTED})")
        if any(k.lower() == "password" for k in url.query):
            raise UserError(f"{what}: no password=... in the query; {PASSWORD_HINT}")
        path, dialect = None, "postgresql"
    else:
        raise UserError(f"unknown storage scheme '{scheme}' in {what} (supported: {SUPPORTED})")
    full = url.render_as_string(hide_password=False)
    shown = url._replace(password=None).render_as_string(hide_password=False)  # URL.set() skips None
    return StorageURL(full=full, shown=shown, dialect=dialect, path=path)


def check_study_name(name: str) -> str:
    if not name or name != name.strip() or len(name) > STUDY_NAME_MAX or not name.isprintable():
        raise UserError(f"--study-name '{name[:60]}': give 1 to {STUDY_NAME_MAX} printable characters, no surrounding "
                        "spaces")  # fmt: skip
    return name


def derived_study_name(run_dir: Path) -> str:
    """A study name of its own for a run in a shared database: ``search-<run dir name>-<6 hex>``."""
    base = re.sub(r"[^A-Za-z0-9._-]+", "-", run_dir.name).strip("-")[:80] or "run"
    return f"search-{base}-{secrets.token_hex(3)}"


# -- the storage of one run ----------------------------------------------------------------------


def journal_lock() -> Any:
    """The lock Optuna takes around each append to a run's journal: a lock of this process.

    Only the search's driver writes the journal, and it holds the run directory's ``flock`` (a
    second search is refused), so the appends need no lock between processes. Optuna's default
    lock is a symbolic link next to the journal, which a SIGKILL leaves behind: the next resume
    would find a link inside the run directory (and Optuna would wait out its grace period)."""
    import threading

    from optuna.storages.journal._file import BaseJournalFileLock  # not re-exported by optuna 5 (tests/test_private_api.py)

    class _ProcessLock(BaseJournalFileLock):
        def __init__(self) -> None:
            self._lock = threading.Lock()

        def acquire(self) -> bool:
            self._lock.acquire()
            return True

        def release(self) -> None:
            self._lock.release()

    return _ProcessLock()


@dataclass(frozen=True)
class RunStorage:
    """The study of one run: where it is, its name, and how the search and the readers open it."""

    run_dir: RunDir
    study_name: str = STUDY_NAME
    url: StorageURL | None = None  # None: the run's journal file

    # -- which --------------------------------------------------------------------------
    @classmethod
    def for_new_run(cls, run_dir: RunDir, url: str | None, study_name: str | None) -> RunStorage:
        """A new search's storage from its options (parsed, not opened)."""
        name = check_study_name(study_name) if study_name is not None else None
        if url is None:
            return cls(run_dir, name or STUDY_NAME)
        return cls(run_dir, name or derived_study_name(run_dir.path), parse_url(url))

    @classmethod
    def of_run(cls, run_dir: RunDir, meta: Mapping[str, Any] | None = None, url: str | None = None) -> RunStorage:
        """The storage a run directory records in run.json (``meta``: run.json already read).

        ``url``: the URL given again (``--storage``) for its password; it must name the run's storage.
        """
        if meta is None:
            meta = run_dir.read_run_json(strict=False) if run_dir.run_json.is_file() else {}
        name = meta.get("study_name") or STUDY_NAME
        recorded = meta.get("storage")
        if not recorded:
            if url is not None:
                raise UserError(f"{run_dir.path}: this run keeps its study in {run_dir.journal.name}, not in a "
                                "database; leave out --storage")  # fmt: skip
            return cls(run_dir, name)
        stored = parse_url(recorded, what=f"{run_dir.run_json} storage")
        if url is not None:
            given = parse_url(url)
            if given.shown != stored.shown:
                raise UserError(f"--storage {given.shown} is not this run's storage ({stored.shown}); give the run's "
                                "own URL (only its password may be added)")  # fmt: skip
            return cls(run_dir, name, given)
        return cls(run_dir, name, stored)  # the password, if any, from PGPASSWORD or ~/.pgpass

    @property
    def is_database(self) -> bool:
        return self.url is not None

    @property
    def journal(self) -> Path:
        return self.run_dir.journal

    def describe(self) -> str:
        return self.url.shown if self.url is not None else str(self.journal)

    def record(self) -> dict[str, Any]:
        """What run.json keeps about the storage (never a password)."""
        return {"study_name": self.study_name, **({"storage": self.url.shown} if self.url is not None else {})}

    # -- opening ------------------------------------------------------------------------
    def open_for_search(self) -> Any:
        """The storage the search writes (journal repaired first; database tables created if new)."""
        if self.url is None:
            from optuna.storages import JournalStorage
            from optuna.storages.journal import JournalFileBackend

            self.run_dir.prepare_journal()  # regular, one link, no links on the way; no stale Optuna lock
            repair_journal(self.journal)
            return JournalStorage(JournalFileBackend(str(self.journal), lock_obj=journal_lock()))
        return self._rdb(create_tables=True)

    def open_for_reading(self) -> Any | None:
        """The storage for a reader, or None when there is no study yet. Creates nothing: no
        journal file, no SQLite file, no database table."""
        if self.url is None:
            if not self.journal.exists():
                return None
            check_regular(self.journal, "journal")  # never a FIFO (Optuna would wait forever) or 1 TB
            from optuna.storages import JournalStorage
            from optuna.storages.journal import JournalFileBackend

            return JournalStorage(JournalFileBackend(str(self.journal), lock_obj=journal_lock()))
        if self.url.dialect == "sqlite" and not self.url.path.is_file():  # type: ignore[union-attr]
            raise UserError(f"{self.run_dir.path}: the run's SQLite storage {self.url.path} is missing")
        if not {"studies", "alembic_version"} <= self._tables():
            return None
        return self._rdb(create_tables=False, read_only=True)

    def load_study(self) -> Any | None:
        """The run's study for a reader, or None when there is none yet (one-line errors)."""
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        try:
            storage = self.open_for_reading()  # a journal is read end to end here
            return None if storage is None else optuna.load_study(study_name=self.study_name, storage=storage)
        except UserError:
            raise
        except KeyError:  # no such study (yet)
            return None
        except (ValueError, json.JSONDecodeError, UnicodeDecodeError) as exc:
            if self.url is None:
                raise UserError(f"{self.journal}: corrupt Optuna journal ({str(exc).splitlines()[0][:120]})") from None
            raise database_error(self.url, exc) from None
        except OSError as exc:
            if self.url is None:
                raise UserError(f"{self.journal}: cannot read ({exc.strerror})") from None
            raise database_error(self.url, exc) from None
        except Exception as exc:  # noqa: BLE001 - database errors of any driver: one line
            if self.url is None:
                raise
            raise database_error(self.url, exc) from None

    def _rdb(self, *, create_tables: bool, read_only: bool = False) -> Any:
        assert self.url is not None
        return open_database(self.url, create_tables=create_tables, read_only=read_only)

    def _tables(self) -> set[str]:
        assert self.url is not None
        return database_tables(self.url)

    # -- checks before a search (no writes) ---------------------------------------------
    def check_new(self) -> None:
        """A new search may use this storage: reachable, and its study name is not taken."""
        if self.url is None:
            return
        if self.url.dialect == "sqlite":
            path = self.url.path
            assert path is not None
            if path.exists() and not path.is_file():
                raise UserError(f"--storage {self.url.shown}: {path} is not a file")
            parent = path.parent
            if not path.exists() and not parent.is_dir() and parent.resolve() != self.run_dir.path.resolve():
                raise UserError(f"--storage {self.url.shown}: no such directory {parent}")
        tables = self._tables()
        if not tables:
            return  # an empty database: Optuna creates its tables when the search starts
        if "studies" not in tables:
            raise UserError(f"cannot use the storage {self.url.shown}: it holds tables that are not Optuna's "
                            f"({', '.join(sorted(tables)[:5])}); give an empty database or one of Optuna's")  # fmt: skip
        storage = self._rdb(create_tables=False, read_only=True)
        try:
            storage.get_study_id_from_name(self.study_name)
        except KeyError:
            return
        raise UserError(f"study name '{self.study_name}' is already used by a different search in {self.url.shown} "
                        "(choose another --study-name)")  # fmt: skip

    def check_resume(self, meta: Mapping[str, Any], say: Callable[[str], None]) -> Any | None:
        """A resume may go on: the study reads end to end; in a database it is there (unless the
        run never got to create it) and no other search is driving it (`wait_for_lapsed_heartbeats`).
        Returns the study as read (None when there is none); `preflight.check_study` compares it
        with what the run recorded."""
        study = self.load_study()  # a damaged journal or an unreachable database is refused now
        if self.url is None:
            return study
        if study is None:
            total = (meta.get("counts") or {}).get("total") or 0
            if total:
                raise UserError(f"study '{self.study_name}' is not in {self.url.shown}, though the run recorded "
                                f"{total} trial(s): is that the run's database?")  # fmt: skip
            return None
        import optuna

        # writable (no tables created): a trial killed before its first heartbeat is given one
        study = optuna.load_study(study_name=self.study_name, storage=self._rdb(create_tables=False))
        alive = wait_for_lapsed_heartbeats(study, say)
        if alive:
            raise UserError(
                f"study '{self.study_name}' in {self.url.shown} is being run by another search: trial(s) "
                f"{', '.join(map(str, alive))} keep a live heartbeat (a search killed less than {GRACE_PERIOD_S} s ago "
                "would have stopped); stop that search first"
            )
        return study


# -- databases -------------------------------------------------------------------------------------


def _engine_kwargs(url: StorageURL) -> dict[str, Any]:
    if url.dialect == "sqlite":
        return {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_S}}
    return {"connect_args": {"connect_timeout": CONNECT_TIMEOUT_S, "application_name": "hybrid-nas"},
            "pool_pre_ping": True}  # fmt: skip


def _read_only(url: StorageURL) -> str:
    """An SQLite URL that never creates or changes the file."""
    return f"sqlite:///file:{url.path}?mode=ro&uri=true"


def open_database(url: StorageURL, *, create_tables: bool, read_only: bool = False) -> Any:
    """Optuna's RDBStorage with heartbeats. ``create_tables=False``: no table is created (readers,
    checks, the dashboard); ``read_only``: an SQLite file is opened read-only (readers)."""
    import warnings

    import optuna
    from optuna.storages import RDBStorage

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    # trials are asked and told by the searcher, not Study.optimize; their heartbeats are ours (`Heartbeats`)
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used", category=UserWarning)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    target = _read_only(url) if read_only and url.dialect == "sqlite" else url.full
    for attempt in range(SCHEMA_RACE_ATTEMPTS):
        try:
            return RDBStorage(target, engine_kwargs=_engine_kwargs(url), skip_table_creation=not create_tables,
                              heartbeat_interval=HEARTBEAT_INTERVAL_S, grace_period=GRACE_PERIOD_S)  # fmt: skip
        except ImportError:
            raise UserError(f"{url.shown}: the database driver is not installed (pip install 'psycopg[binary]')") from None
        except Exception as exc:  # noqa: BLE001 - connection, authentication, schema: one line
            # Two searches starting on a fresh database both create Optuna's tables; PostgreSQL
            # lets one win and the other fail on its catalog. The tables then exist: try again.
            racing = "duplicate key value violates unique constraint" in str(exc) or "already exists" in str(exc)
            if create_tables and racing and attempt + 1 < SCHEMA_RACE_ATTEMPTS:
                time.sleep(0.2 * (attempt + 1))
                continue
            raise database_error(url, exc) from exc  # the cause: the runner tells a lost database by it
    raise AssertionError("unreachable")


def database_tables(url: StorageURL) -> set[str]:
    """The tables of the database (connecting is the check: server, password, database); an SQLite
    file that does not exist has none (and is not created)."""
    import sqlalchemy

    if url.dialect == "sqlite" and not url.path.is_file():  # type: ignore[union-attr]
        return set()
    try:
        engine = sqlalchemy.create_engine(_read_only(url) if url.dialect == "sqlite" else url.full, **_engine_kwargs(url))
    except ImportError:
        raise UserError(f"{url.shown}: the database driver is not installed (pip install 'psycopg[binary]')") from None
    try:
        with engine.connect() as conn:
            return set(sqlalchemy.inspect(conn).get_table_names())
    except Exception as exc:  # noqa: BLE001
        raise database_error(url, exc) from None
    finally:
        engine.dispose()


def _driver_detail(url: StorageURL, exc: BaseException) -> str:
    """The first line of the driver's own words about ``exc`` (the database error in its chain,
    when there is one), never the password."""
    exc = connection_error(exc) or exc
    orig = getattr(exc, "orig", None) or exc
    lines = [ln.strip() for ln in str(orig).splitlines() if ln.strip()]
    detail = lines[0] if lines else type(orig).__name__
    detail = re.sub(r"^connection failed: ", "", detail)
    detail = re.sub(r"^\(\S+\) ", "", detail)
    password = url.full.split("://", 1)[1].split("@", 1)[0].partition(":")[2] if url.has_password else ""
    if password:
        detail = detail.replace(password, "***")
    return redact(detail)[:300]


def database_error(url: StorageURL, exc: BaseException) -> UserError:
    """A database error as one line: the driver's own words, never the password."""
    detail = _driver_detail(url, exc)
    low = detail.lower()
    hint = ""
    if "password authentication failed" in low or "no password supplied" in low:
        hint = f" ({PASSWORD_HINT})"
    elif "does not exist" in low and "database" in low:
        hint = " (create it first, e.g. createdb)"
    elif "connection refused" in low or "could not connect" in low or "timeout expired" in low:
        hint = " (is the server running and reachable?)"
    elif "file is not a database" in low:
        hint = " (not an SQLite file)"
    return UserError(f"cannot use the storage {url.shown}: {detail}{hint}")


# -- losing the database mid-search ---------------------------------------------------------------

# A driver's or SQLAlchemy's "cannot reach or use the database now" (DB-API OperationalError and
# InterfaceError: a refused or dropped connection, a server shutting down, a timeout, a locked
# SQLite file); psycopg's own classes derive from these. Not IntegrityError, DataError or
# ProgrammingError: those are about what was written, and a resume would meet them again.
_LOST_IN_TEXT = re.compile(
    r"^(?:sqlalchemy\.exc\.(?:OperationalError|InterfaceError|DisconnectionError)|psycopg2?\.(?:OperationalError|"
    r"InterfaceError)|psycopg\.errors\.(?:AdminShutdown|CrashShutdown|CannotConnectNow|ConnectionException|"
    r"ConnectionFailure|ConnectionDoesNotExist|SqlclientUnableToEstablishSqlconnection)|sqlite3\.OperationalError): (.+)$",
    re.MULTILINE,
)
_CHAIN_LIMIT = 64

# the driver's words -> what the one line says (first match); anything else: the driver's words
_OUTAGE_PHRASES = (
    ("connection refused", "connection refused"),
    ("terminating connection due to administrator command", "the server ended the connection"),
    ("the database system is shutting down", "the server is shutting down"),
    ("the database system is starting up", "the server is starting up"),
    ("the database system is in recovery mode", "the server is in recovery"),
    ("server closed the connection unexpectedly", "the server closed the connection"),
    ("timeout expired", "connection timed out"),
    ("timed out", "connection timed out"),
    ("no route to host", "no route to host"),
    ("network is unreachable", "network unreachable"),
    ("could not translate host name", "host name not found"),
    ("name or service not known", "host name not found"),
    ("the connection is closed", "connection lost"),
    ("the connection is lost", "connection lost"),
    ("consuming input failed", "connection lost"),
    ("ssl syscall error", "connection lost"),
    ("database is locked", "database is locked"),
)


class _TextError(Exception):
    """A database error known only from the text of a traceback (a `TuneError` carries one)."""


def _is_connection_type(exc: BaseException) -> bool:
    import sqlite3

    from sqlalchemy import exc as sa

    if isinstance(exc, (sa.OperationalError, sa.InterfaceError, sa.DisconnectionError)):
        return True
    if isinstance(exc, sa.DBAPIError) and exc.connection_invalidated:
        return True
    if isinstance(exc, (sqlite3.OperationalError, sqlite3.InterfaceError, _TextError)):
        return True
    try:
        import psycopg
    except ImportError:
        return False
    return isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError))


def connection_error(exc: BaseException | None) -> BaseException | None:
    """The error in ``exc``'s chain saying that the database cannot be reached or used right now
    (`_is_connection_type`), or None. Walks ``__cause__``, ``__context__``, SQLAlchemy's ``orig``
    and exception groups: Optuna re-raises a failed commit as ``StorageInternalError`` from the
    SQLAlchemy error, and Tune wraps a searcher's error in a ``TuneError`` raised while handling it
    (or, where only its text survives, quoting it: that text is read too)."""
    todo: list[BaseException | None] = [exc]
    seen: set[int] = set()
    while todo and len(seen) < _CHAIN_LIMIT:
        e = todo.pop(0)
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if _is_connection_type(e):
            return e
        orig = getattr(e, "orig", None)
        todo += [orig if isinstance(orig, BaseException) else None, e.__cause__, e.__context__]
        group = getattr(e, "exceptions", None)  # an ExceptionGroup (Python 3.11+)
        if isinstance(group, (list, tuple)):
            todo += [g for g in group if isinstance(g, BaseException)]
        if type(e).__name__ in ("TuneError", "_TuneStopTrialError"):  # a traceback as text
            found = _LOST_IN_TEXT.findall(str(e))
            if found:
                return _TextError(found[-1])
    return None


def outage_detail(url: StorageURL, exc: BaseException) -> str:
    """What happened to the database, in a few words (never the password)."""
    raw = _driver_detail(url, exc)
    m = re.search(r"connection to server (?:at|on socket) .*? failed: (.+)$", raw)
    words = m.group(1) if m else raw
    low = words.lower()
    for needle, phrase in _OUTAGE_PHRASES:
        if needle in low:
            return phrase
    return words[:160]


class DatabaseLost(UserError):
    """The study's database became unreachable mid-search: the run is interrupted (it resumes
    once the database is back). ``short``: the same without the advice, for run.json."""

    def __init__(self, message: str, short: str) -> None:
        super().__init__(message)
        self.short = short


def database_lost(where: RunStorage, exc: BaseException) -> DatabaseLost:
    """The one line a search ends with when its database went away (`connection_error`)."""
    assert where.url is not None
    short = f"lost the study's database {where.describe()} ({outage_detail(where.url, exc)})"
    return DatabaseLost(f"{short}; the run is interrupted: continue with nas search --resume --out "
                        f"{where.run_dir.path} once it is reachable", short)  # fmt: skip


class Outage:
    """The first sign that the study's database is gone, noted by whichever part of the driver
    meets it (Tune's callbacks into the searcher, the heartbeat thread, a log record): from then
    on nothing more is asked of the database, Tune is stopped and the runner ends the search with
    `database_lost`. Falsy until then."""

    def __init__(self) -> None:
        self.cause: BaseException | None = None  # the database error itself (`connection_error`)

    def note(self, exc: BaseException) -> bool:
        """Whether ``exc`` says the database is gone (then the first such error is kept)."""
        cause = connection_error(exc)
        if cause is None:
            return False
        if self.cause is None:
            self.cause = cause
        return True

    def __bool__(self) -> bool:
        return self.cause is not None

    def __reduce__(self) -> Any:  # Tune pickles its configuration: never an exception's traceback
        return (Outage, ())


# -- heartbeats --------------------------------------------------------------------------------


def has_heartbeat(storage: Any) -> bool:
    """Whether ``storage`` keeps trial heartbeats (an RDBStorage opened by `RunStorage`)."""
    getter = getattr(storage, "get_heartbeat_interval", None)
    return callable(getter) and getter() is not None


def live_trials(study: Any) -> dict[int, int]:
    """RUNNING trials of ``study`` whose heartbeat has not lapsed (or that have none yet): trial id -> number."""
    from optuna.trial import TrialState

    storage = study._storage
    running = {t._trial_id: t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
    if not running or not has_heartbeat(storage):
        return {}
    stale = set(storage._get_stale_trial_ids(study._study_id))
    return {tid: n for tid, n in running.items() if tid not in stale}


def wait_for_lapsed_heartbeats(study: Any, say: Callable[[str], None], *, poll_s: float = 1.0) -> list[int]:
    """Wait until no RUNNING trial of ``study`` has a live heartbeat; returns the numbers of those
    still alive after waiting ([] when every one lapsed: the search that ran them is gone).

    A trial whose search was killed right after asking for it has no heartbeat at all, and such a
    trial would never lapse: after a first wait, every trial still live gets one heartbeat from
    here, then lapses within the grace period unless its search renews it.
    """
    live = live_trials(study)
    if not live:
        return []
    window = GRACE_PERIOD_S + HEARTBEAT_INTERVAL_S + 1
    say(f"resume: waiting up to {2 * window} s for the heartbeats of trial(s) {', '.join(map(str, sorted(live.values())))} "
        "to lapse (a search killed moments ago, or one still running elsewhere)")  # fmt: skip
    for attempt in (1, 2):
        deadline = time.monotonic() + window
        while live and time.monotonic() < deadline:
            time.sleep(poll_s)
            live = live_trials(study)
        if not live:
            return []
        if attempt == 1:
            for trial_id in live:
                study._storage.record_heartbeat(trial_id)
    return sorted(live.values())


class Heartbeats:
    """The driver's heartbeat thread: renews the heartbeat of every trial ``trial_ids()`` names,
    every ``HEARTBEAT_INTERVAL_S``, while the search runs (Optuna's own trial heartbeats, for
    trials that Ray Tune trains rather than ``study.optimize``). A database that cannot be reached
    is noted on ``outage`` (the search then stops), not logged; the thread ends."""

    def __init__(self, storage: Any, trial_ids: Callable[[], Iterable[int]], outage: Outage | None = None) -> None:
        self.storage, self.trial_ids, self.outage = storage, trial_ids, outage
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, name="nas-heartbeats", daemon=True)
        self.failures = 0

    def __enter__(self) -> Heartbeats:
        if has_heartbeat(self.storage):
            self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop_event.set()
        if self.thread.is_alive():
            self.thread.join(timeout=30)

    def _run(self) -> None:
        while not self.stop_event.wait(HEARTBEAT_INTERVAL_S):
            if self.outage:
                return
            for trial_id in list(self.trial_ids()):
                try:
                    self.storage.record_heartbeat(trial_id)
                except Exception as exc:  # noqa: BLE001 - a lost beat is retried next round
                    if self.outage is not None and self.outage.note(exc):
                        return  # the database is gone: the search stops and says so, once
                    self.failures += 1
                    if self.failures == 1:
                        log.warning("could not record a trial heartbeat: %s", redact(str(exc).splitlines()[0][:200]))
