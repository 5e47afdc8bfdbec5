"""A throwaway PostgreSQL server for tests: real Postgres, private data dir, loopback only.

``initdb`` and ``postgres`` refuse to run as root, and CI runs as root: the server then runs
as the ``postgres`` system user (created by Debian's package) through ``setpriv``, in a temp
dir owned by that user. It listens on 127.0.0.1 on a free port (never a fixed one: tests run
beside developers' own servers), with its unix socket inside the temp dir, and trades
durability for speed (``fsync=off``...). ``stop()`` shuts down the postmaster by PID and
removes everything.

Usage::

    with PostgresServer() as pg:
        engine = sqlalchemy.create_engine(pg.url)
        other_url = pg.create_database("isolated_test_db")
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pwd
import re
import secrets
import shutil
import signal
import subprocess
from pathlib import Path
from types import TracebackType
from typing import Any

import psycopg
from psycopg import sql

from .tempdirs import make_owned_dir
from .waiting import free_port, wait_for

__all__ = ["PostgresError", "PostgresServer", "find_postgres_bindir"]

_SERVICE_USER = "postgres"
_SUPERUSER = "postgres"
_IDENT_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")

_DEFAULT_SETTINGS: dict[str, str] = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "wal_level": "minimal",
    "max_wal_senders": "0",
    "max_connections": "100",
    "shared_buffers": "64MB",
    "checkpoint_timeout": "30min",
    "max_wal_size": "1GB",
    "logging_collector": "off",
    "log_min_messages": "warning",
    "log_line_prefix": "'%m [%p] %q%u@%d '",
    "timezone": "'UTC'",
}


class PostgresError(RuntimeError):
    """The server could not be set up, started or stopped."""


def find_postgres_bindir() -> Path:
    """The directory holding initdb/postgres/pg_ctl.

    ``$VIDEO_TEST_PG_BINDIR`` wins; then the newest Debian ``/usr/lib/postgresql/<ver>/bin``
    (not on PATH there); then whatever ``initdb`` is on PATH.
    """
    override = os.environ.get("VIDEO_TEST_PG_BINDIR")
    candidates: list[Path] = [Path(override)] if override else []
    debian = Path("/usr/lib/postgresql")
    if debian.is_dir():
        versions = [p for p in debian.iterdir() if re.fullmatch(r"\d+(\.\d+)?", p.name)]
        versions.sort(key=lambda p: tuple(int(x) for x in p.name.split(".")), reverse=True)
        candidates += [v / "bin" for v in versions]
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).parent)
    for c in candidates:
        if all((c / exe).is_file() for exe in ("initdb", "postgres", "pg_ctl")):
            return c
    raise PostgresError(
        "PostgreSQL server binaries not found (looked in $VIDEO_TEST_PG_BINDIR, "
        "/usr/lib/postgresql/*/bin, PATH): run scripts/install-test-deps.sh"
    )


class PostgresServer:
    """A private PostgreSQL server; see the module docstring.

    ``url`` is a SQLAlchemy URL ``postgresql+psycopg://USER:PASSWORD@127.0.0.1:PORT/DBNAME``
    for a password-authenticated, non-superuser role (with CREATEDB) owning ``dbname``.
    """

    def __init__(
        self,
        *,
        user: str = "video",
        password: str | None = None,
        dbname: str = "video",
        host: str = "127.0.0.1",
        bindir: str | Path | None = None,
        base_dir: str | Path | None = None,
        settings: dict[str, str] | None = None,
        start_timeout: float = 60.0,
    ) -> None:
        for ident in (user, dbname):
            if not _IDENT_RE.match(ident):
                raise ValueError(f"not a plain SQL identifier: {ident!r}")
        self.user = user
        self.password = password or secrets.token_urlsafe(18)
        self.dbname = dbname
        self.host = host
        self._bindir = Path(bindir) if bindir else None
        self._base_dir = Path(base_dir) if base_dir else None
        self._settings = {**_DEFAULT_SETTINGS, **(settings or {})}
        self._start_timeout = start_timeout
        self._dir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._port: int | None = None
        self._log: Any = None

    # ------------------------------------------------------------------ properties
    @property
    def url(self) -> str:
        """SQLAlchemy URL of the main database (``postgresql+psycopg://...``)."""
        return self.url_for(self.dbname)

    @property
    def port(self) -> int:
        self._require_running()
        assert self._port is not None
        return self._port

    @property
    def pid(self) -> int:
        """PID of the postmaster."""
        self._require_running()
        assert self._proc is not None
        return self._proc.pid

    @property
    def data_dir(self) -> Path:
        self._require_running()
        assert self._dir is not None
        return self._dir / "data"

    @property
    def socket_dir(self) -> Path:
        self._require_running()
        assert self._dir is not None
        return self._dir / "sock"

    @property
    def log_path(self) -> Path:
        """The server log (kept until ``stop()``): read it when a test fails."""
        if self._dir is None:
            raise PostgresError("server not started")
        return self._dir / "postgres.log"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def url_for(self, dbname: str) -> str:
        """SQLAlchemy URL of another database on this server, as the password user."""
        return f"postgresql+psycopg://{self.user}:{self.password}@{self.host}:{self.port}/{dbname}"

    def conninfo(self, dbname: str | None = None) -> str:
        """libpq conninfo (for ``psycopg.connect``) over TCP as the password user."""
        return psycopg.conninfo.make_conninfo(
            host=self.host,
            port=self.port,
            user=self.user,
            password=self.password,
            dbname=dbname or self.dbname,
        )

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> PostgresServer:
        """initdb, start, create the role and database. Returns self."""
        if self._proc is not None:
            raise PostgresError("already started")
        bindir = self._bindir or find_postgres_bindir()
        self._bindir = bindir
        self._dir = make_owned_dir("atproto-video-pg-", self._base_dir)
        atexit.register(self.stop)
        try:
            os.chmod(self._dir, 0o700)
            (self._dir / "sock").mkdir(mode=0o700)
            if os.geteuid() == 0:
                pw = pwd.getpwnam(_SERVICE_USER)
                for p in (self._dir, self._dir / "sock"):
                    os.chown(p, pw.pw_uid, pw.pw_gid)
            self._initdb(bindir)
            self._start_postmaster(bindir)
            self._bootstrap()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Fast shutdown of the postmaster (by PID), then remove the data dir. Idempotent."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            assert self._bindir is not None and self._dir is not None
            # pg_ctl reads the PID from postmaster.pid and sends SIGINT (fast shutdown).
            with contextlib.suppress(subprocess.SubprocessError, OSError):
                self._run(
                    [
                        str(self._bindir / "pg_ctl"),
                        "stop",
                        "-D",
                        str(self._dir / "data"),
                        "-m",
                        "fast",
                        "-w",
                        "-t",
                        "30",
                    ],
                    timeout=40,
                    check=False,
                )
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                # Last resort: SIGKILL the postmaster's PID and its backends.
                for child in _children(proc.pid):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(child, signal.SIGKILL)
                proc.kill()
                proc.wait(timeout=10)
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
        self._port = None
        atexit.unregister(self.stop)

    def halt(self) -> None:
        """Stop the postmaster (fast shutdown: sessions are cut) but keep its data and port:
        a database outage, ended by :meth:`resume`."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            raise PostgresError("server not running")
        assert self._bindir is not None and self._dir is not None
        self._run([str(self._bindir / "pg_ctl"), "stop", "-D", str(self._dir / "data"),
                   "-m", "fast", "-w", "-t", "30"], timeout=40)
        proc.wait(timeout=30)
        self._proc = None

    def resume(self) -> None:
        """Start the halted server again, on the same port with the same data."""
        if self._proc is not None or self._port is None or self._bindir is None:
            raise PostgresError("server not halted")
        assert self._dir is not None and self._log is not None
        proc = subprocess.Popen(
            self._as_service_user([str(self._bindir / "postgres"), "-D",
                                   str(self._dir / "data")], pdeathsig=True),
            env=self._env(), cwd=self._dir, stdin=subprocess.DEVNULL, stdout=self._log,
            stderr=subprocess.STDOUT, start_new_session=True,
        )
        if not self._wait_ready(proc):
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait()
            raise PostgresError(f"postgres did not restart:\n{self.log_path.read_text()[-2000:]}")
        self._proc = proc

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ------------------------------------------------------------------ databases
    def create_database(self, name: str | None = None) -> str:
        """Create an empty database owned by the password user; return its SQLAlchemy URL.

        ``name`` defaults to a random ``test_<hex>`` so tests get isolated databases.
        """
        name = name or f"test_{secrets.token_hex(6)}"
        if not _IDENT_RE.match(name):
            raise ValueError(f"not a plain SQL identifier: {name!r}")
        with self._admin() as conn:
            conn.execute(
                sql.SQL("CREATE DATABASE {} OWNER {}").format(
                    sql.Identifier(name), sql.Identifier(self.user)
                )
            )
        return self.url_for(name)

    def drop_database(self, name: str) -> None:
        """Drop a database, disconnecting its sessions."""
        with self._admin() as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )

    # ------------------------------------------------------------------ internals
    def _require_running(self) -> None:
        if not self.running:
            raise PostgresError("server not running")

    def _admin(self) -> psycopg.Connection[Any]:
        """Superuser connection over the private unix socket (trust auth)."""
        return psycopg.connect(
            host=str(self.socket_dir),
            port=self.port,
            user=_SUPERUSER,
            dbname="postgres",
            autocommit=True,
        )

    def _as_service_user(self, argv: list[str], pdeathsig: bool = False) -> list[str]:
        if os.geteuid() != 0:
            return argv
        pre = ["setpriv", f"--reuid={_SERVICE_USER}", f"--regid={_SERVICE_USER}", "--init-groups"]
        if pdeathsig:
            # If the test process dies without stop(), the postmaster gets a fast shutdown.
            pre.append("--pdeathsig=INT")
        return [*pre, "--", *argv]

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        assert self._dir is not None
        env.update(HOME=str(self._dir), LC_ALL="C", LANG="C", TZ="UTC")
        return env

    def _run(
        self, argv: list[str], timeout: float = 120, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        res = subprocess.run(
            self._as_service_user(argv),
            env=self._env(),
            cwd=self._dir,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and res.returncode != 0:
            raise PostgresError(f"{Path(argv[0]).name} failed ({res.returncode}): {res.stderr}")
        return res

    def _initdb(self, bindir: Path) -> None:
        assert self._dir is not None
        self._run(
            [
                str(bindir / "initdb"),
                "-D",
                str(self._dir / "data"),
                "-U",
                _SUPERUSER,
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "--no-locale",
                "-E",
                "UTF8",
                "--no-sync",
                "--no-instructions",
            ]
        )

    def _write_conf(self, port: int) -> None:
        assert self._dir is not None
        conf = dict(self._settings)
        conf.update(
            listen_addresses=f"'{self.host}'",
            port=str(port),
            unix_socket_directories=f"'{self._dir / 'sock'}'",
        )
        text = "".join(f"{k} = {v}\n" for k, v in conf.items())
        # postgresql.auto.conf is read last and owned by the server user already.
        auto = self._dir / "data" / "postgresql.auto.conf"
        auto.write_text(text)

    def _start_postmaster(self, bindir: Path) -> None:
        assert self._dir is not None
        last_error = ""
        for _attempt in range(5):
            port = free_port(self.host)
            self._write_conf(port)
            self._log = open(self._dir / "postgres.log", "ab")  # noqa: SIM115 (closed in stop)
            proc = subprocess.Popen(
                self._as_service_user(
                    [str(bindir / "postgres"), "-D", str(self._dir / "data")], pdeathsig=True
                ),
                env=self._env(),
                cwd=self._dir,
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            if self._wait_ready(proc):
                self._proc, self._port = proc, port
                return
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait()
            self._log.close()
            self._log = None
            last_error = (self._dir / "postgres.log").read_text(errors="replace")[-2000:]
            if "could not bind" not in last_error and "already in use" not in last_error:
                break
        raise PostgresError(f"postgres did not start:\n{last_error}")

    def _wait_ready(self, proc: subprocess.Popen[bytes]) -> bool:
        """Wait until postmaster.pid says ``ready`` (what ``pg_ctl -w`` checks)."""
        assert self._dir is not None
        pidfile = self._dir / "data" / "postmaster.pid"

        def state() -> str | None:
            if proc.poll() is not None:
                return "exited"
            with contextlib.suppress(FileNotFoundError, PermissionError):
                lines = pidfile.read_text().splitlines()
                if len(lines) >= 8 and lines[7].strip() == "ready":
                    return "ready"
            return None

        try:
            return wait_for(state, timeout=self._start_timeout, interval=0.02) == "ready"
        except AssertionError:
            return False

    def _bootstrap(self) -> None:
        with self._admin() as conn:
            conn.execute(
                sql.SQL("CREATE ROLE {} LOGIN CREATEDB PASSWORD {}").format(
                    sql.Identifier(self.user), sql.Literal(self.password)
                )
            )
            conn.execute(
                sql.SQL("CREATE DATABASE {} OWNER {}").format(
                    sql.Identifier(self.dbname), sql.Identifier(self.user)
                )
            )


def _children(pid: int) -> list[int]:
    """PIDs whose parent is ``pid`` (the postmaster's backends)."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                stat = (entry / "stat").read_text()
                if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                    out.append(int(entry.name))
    return out
