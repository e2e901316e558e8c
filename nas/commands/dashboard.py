"""`nas dashboard RUN_DIR | --storage URL`: optuna-dashboard on a run's study, live while it searches.

The server is optuna-dashboard's own WSGI application (`optuna_dashboard.wsgi`) on the standard
library's threaded WSGI server, as optuna-dashboard's own command serves it. The run's study is
opened where run.json says it lives (`results.storage`): its journal file through Optuna's
JournalStorage, or its database. Every request reads the storage afresh, so a search in progress
shows its new trials on reload. Bound to 127.0.0.1 unless ``--host`` says otherwise: the
dashboard has no login, and anyone who reaches it can also edit (notes) or delete studies.

optuna-dashboard 0.21 reads a trial's constraints from the single list Optuna 4 stored; Optuna 5
stores named constraints (``trial.set_constraint``, what the search writes), which it would show
as none. `show_named_constraints` hands it Optuna's own reading of them (``trial.constraints``),
so an infeasible candidate's violations show on its page.
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from typing import Any

from search_space.errors import UserError
from search_space.text import printable

DEFAULT_PORT = 8080
DEFAULT_HOST = "127.0.0.1"


def port_arg(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a port number") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port {value} is not in 0..65535 (0: any free port)")
    return value


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "dashboard",
        help="serve optuna-dashboard on a run's study (live while the search runs)",
        description="Serve optuna-dashboard on the study of a search run (its journal file, or the database it "
        "was given with --storage), or on every study of a database (--storage URL alone). Trials show their "
        "MACs, params, blocks and proxy settings as user attributes. Listens on 127.0.0.1 unless --host says "
        "otherwise (the dashboard has no login). Ctrl-C stops it.",
    )
    p.add_argument("run_dir", nargs="?", type=Path, metavar="RUN_DIR", help="a directory written by nas search")
    p.add_argument("--storage", metavar="URL",
                   help="a database (sqlite:///PATH or postgresql+psycopg://USER[:PASSWORD]@HOST[:PORT]/DB): its "
                        "studies; with RUN_DIR, the run's own URL given again for its password")  # fmt: skip
    p.add_argument("--port", type=port_arg, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0: any free port)")
    p.add_argument("--host", default=DEFAULT_HOST,
                   help=f"address to listen on (default {DEFAULT_HOST}; another address exposes the dashboard, "
                        "which has no login)")  # fmt: skip
    p.set_defaults(func=run)


def open_target(run_dir: Path | None, url: str | None) -> tuple[Any, str | None, str]:
    """(storage, the run's study name or None, what is served, in words)."""
    from results.run_dir import RunDir
    from results.storage import open_database, parse_url

    if run_dir is None:
        if url is None:
            raise UserError("give a run directory (nas dashboard RUN_DIR) or a database (--storage URL)")
        db = parse_url(url)
        return open_database(db, create_tables=False), None, f"the studies in {db.shown}"
    rd = RunDir(run_dir)
    if not rd.path.is_dir():
        raise UserError(f"{run_dir}: no such run directory")
    where = rd.storage(url, rd.read_run_json(strict=False))
    storage = where.open_for_reading()
    if storage is None:
        raise UserError(f"{run_dir}: no study yet in {where.describe()} (the search has not started its first trial)")
    if where.is_database:  # writable like the journal (notes); still no table is ever created
        storage = open_database(where.url, create_tables=False)
    try:
        storage.get_study_id_from_name(where.study_name)
    except KeyError:
        raise UserError(f"{run_dir}: no study '{where.study_name}' yet in {where.describe()}") from None
    return storage, where.study_name, f"study '{where.study_name}' of {run_dir} ({where.describe()})"


def make_server(app: Any, host: str, port: int) -> Any:
    """optuna-dashboard's own server set-up (a threaded wsgiref server), with quiet request logs."""
    from socketserver import ThreadingMixIn
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer
    from wsgiref.simple_server import make_server as wsgi_server

    class ThreadedWSGIServer(ThreadingMixIn, WSGIServer):
        daemon_threads = True

    class QuietHandler(WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
            pass

    try:
        return wsgi_server(host, port, app, server_class=ThreadedWSGIServer, handler_class=QuietHandler)
    except OSError as exc:
        raise UserError(f"cannot listen on {host}:{port} ({exc.strerror or exc})") from None


def show_named_constraints() -> None:
    """Let optuna-dashboard's trial serializer see Optuna 5's named constraints (module docstring)."""
    from optuna_dashboard import _serializer  # its study serializer looks the name up there

    plain = _serializer.serialize_frozen_trial
    if getattr(plain, "named_constraints", False):
        return

    def serialize(study_id: int, trial: Any, study_system_attrs: dict[str, Any]) -> dict[str, Any]:
        out = plain(study_id, trial, study_system_attrs)
        if not out.get("constraints") and trial.constraints:
            out["constraints"] = [float(v) for v in trial.constraints.values()]
        return out

    serialize.named_constraints = True  # type: ignore[attr-defined]
    _serializer.serialize_frozen_trial = serialize


def run(args: argparse.Namespace) -> int:
    from results.storage import redact

    sys.argv[:] = [redact(a) for a in sys.argv]
    try:
        import optuna_dashboard
    except ImportError:
        raise UserError("optuna-dashboard is not installed (pip install optuna-dashboard)") from None
    storage, study_name, what = open_target(args.run_dir, args.storage)
    show_named_constraints()
    server = make_server(optuna_dashboard.wsgi(storage), args.host, args.port)
    host, port = server.server_address[:2]
    page = "/dashboard"
    if study_name is not None:
        page += f"/studies/{storage.get_study_id_from_name(study_name)}"
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: listening on {printable(args.host)}: anyone who can reach it can read and edit these studies "
              "(the dashboard has no login)", file=sys.stderr)  # fmt: skip
    print(f"dashboard of {printable(what)}: http://{host}:{port}{page}  (Ctrl-C stops it)", flush=True)

    def stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("dashboard stopped", file=sys.stderr)
    finally:
        server.server_close()
    return 0
