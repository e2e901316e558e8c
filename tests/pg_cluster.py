"""A throwaway PostgreSQL cluster for the storage and dashboard tests.

``initdb`` refuses to run as root (and CI runs as root), so as root the cluster belongs to the
``postgres`` system user (created if missing) and every server command runs through
``runuser -u postgres --``; as another user it runs directly. The cluster lives in a fresh
directory under /tmp (pytest's tmp_path sits below root's 0700 folders, which ``postgres``
cannot enter), listens on 127.0.0.1 only, on a free port, with its unix socket inside the
directory, and asks every TCP client for a password (scram-sha-256): the tests can tell a
wrong password from a right one. `stop` ends the server by its data directory (never by name)
and removes the directory.

Run as a script it starts a cluster and prints its URL (for trying things by hand); Ctrl-C or
SIGTERM stops it.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

USER = "nas"
SYSTEM_USER = "postgres"


def find_bindir() -> Path | None:
    """PostgreSQL's server binaries: `pg_config --bindir`, else Debian's versioned folder."""
    candidates: list[Path] = []
    if shutil.which("pg_config"):
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, check=False)
        if out.returncode == 0 and out.stdout.strip():
            candidates.append(Path(out.stdout.strip()))
    root = Path("/usr/lib/postgresql")
    if root.is_dir():
        candidates += sorted((p / "bin" for p in root.iterdir()), key=lambda p: p.parent.name, reverse=True)
    for d in candidates:
        if (d / "initdb").is_file() and (d / "pg_ctl").is_file():
            return d
    for name in ("initdb", "pg_ctl"):
        if not shutil.which(name):
            return None
    return Path(shutil.which("initdb")).resolve().parent  # type: ignore[arg-type]


def missing_tool(reason: str) -> None:
    """Skip where a tool is missing, but FAIL under CI=true (install.sh --test installs it)."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true: {reason} (scripts/install.sh --test installs it)")
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PgCluster:
    bindir: Path
    root: Path  # the temp dir; data in root/data, socket and log in root
    port: int
    password: str
    as_postgres: bool

    def url(self, db: str = "postgres", *, password: str | None = None, user: str = USER) -> str:
        auth = f"{user}:{password}" if password else user
        return f"postgresql+psycopg://{auth}@127.0.0.1:{self.port}/{db}"

    def _run(self, *cmd: str, timeout: float = 60) -> subprocess.CompletedProcess:
        full = [str(self.bindir / cmd[0]), *cmd[1:]]
        if self.as_postgres:
            full = ["runuser", "-u", SYSTEM_USER, "--", *full]
        return subprocess.run(full, capture_output=True, text=True, timeout=timeout, check=False)

    def connect(self, db: str = "postgres"):  # type: ignore[no-untyped-def]
        import psycopg

        return psycopg.connect(host="127.0.0.1", port=self.port, user=USER, password=self.password, dbname=db,
                               autocommit=True, connect_timeout=10)  # fmt: skip

    def create_database(self, name: str) -> str:
        with self.connect() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return name

    def studies(self, db: str) -> list[str]:
        """Names of the Optuna studies in ``db`` (read with plain SQL, not through Optuna)."""
        with self.connect(db) as conn:
            exists = conn.execute("SELECT to_regclass('public.studies')").fetchone()[0]
            if exists is None:
                return []
            return [r[0] for r in conn.execute("SELECT study_name FROM studies ORDER BY study_id")]

    def table_count(self, db: str) -> int:
        with self.connect(db) as conn:
            return int(conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone()[0])

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.root / "data"), "-m", "immediate", "-w", "stop", timeout=60)
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


def start_cluster() -> PgCluster:
    """initdb + pg_ctl start (about 2-3 s); raises RuntimeError with the server's words on failure."""
    import importlib.util

    if importlib.util.find_spec("psycopg") is None:
        missing_tool("psycopg is not installed (pip install 'psycopg[binary]')")
    bindir = find_bindir()
    if bindir is None:
        missing_tool("PostgreSQL server binaries (initdb, pg_ctl) not found: apt-get install -y postgresql")
    as_postgres = os.geteuid() == 0
    if as_postgres:
        if shutil.which("runuser") is None:
            missing_tool("runuser not found (util-linux), needed to run PostgreSQL as a non-root user")
        try:
            pwd.getpwnam(SYSTEM_USER)
        except KeyError:
            subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SYSTEM_USER],
                           check=True, capture_output=True)  # fmt: skip
    root = Path(tempfile.mkdtemp(prefix="pg", dir="/tmp"))  # short: the unix socket path must stay < 108 bytes
    password = secrets.token_hex(8)
    (root / "pw").write_text(password + "\n")
    if as_postgres:
        entry = pwd.getpwnam(SYSTEM_USER)
        for p in (root, root / "pw"):
            os.chown(p, entry.pw_uid, entry.pw_gid)
    os.chmod(root, 0o700)
    cluster = PgCluster(bindir, root, free_port(), password, as_postgres)
    try:
        init = cluster._run("initdb", "-D", str(root / "data"), "-U", USER, "--auth-local=trust",
                            "--auth-host=scram-sha-256", f"--pwfile={root / 'pw'}", "-E", "UTF8", "--no-sync",
                            timeout=120)  # fmt: skip
        if init.returncode != 0:
            raise RuntimeError(f"initdb failed: {init.stderr[-2000:]}")
        opts = f"-p {cluster.port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=100"
        start = cluster._run("pg_ctl", "-D", str(root / "data"), "-o", opts, "-l", str(root / "log"), "-w", "-t", "60",
                             "start", timeout=90)  # fmt: skip
        if start.returncode != 0:
            log = (root / "log").read_text() if (root / "log").exists() else ""
            raise RuntimeError(f"pg_ctl start failed: {start.stderr[-1000:]} {log[-1000:]}")
    except BaseException:
        cluster.stop()
        raise
    return cluster


if __name__ == "__main__":
    import signal

    signal.signal(signal.SIGTERM, lambda signum, frame: (_ for _ in ()).throw(KeyboardInterrupt()))
    c = start_cluster()
    print(c.url(password=c.password), flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        c.stop()
