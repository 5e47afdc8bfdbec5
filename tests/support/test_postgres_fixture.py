"""The throwaway Postgres fixture: real server, loopback only, password auth, nothing left."""

from __future__ import annotations

import os
import pwd
from pathlib import Path

import psycopg
import pytest

from .postgres import PostgresError, PostgresServer, find_postgres_bindir

pytestmark = pytest.mark.postgres


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry.name))
    return out


def _url_parts(url: str) -> tuple[str, str, str, int, str]:
    scheme, rest = url.split("://", 1)
    cred, rest = rest.split("@", 1)
    user, password = cred.split(":", 1)
    hostport, dbname = rest.split("/", 1)
    host, port = hostport.rsplit(":", 1)
    assert scheme == "postgresql+psycopg"
    return user, password, host, int(port), dbname


def test_start_connect_create_table_stop_leaves_nothing() -> None:
    pg = PostgresServer()
    pg.start()
    try:
        pid, data_dir, port = pg.pid, pg.data_dir, pg.port
        user, password, host, url_port, dbname = _url_parts(pg.url)
        assert (host, url_port, user, dbname) == ("127.0.0.1", port, "video", "video")
        assert _alive(pid)
        # postgres refuses root: as root, the fixture runs it as the 'postgres' user
        uid = int(
            next(
                ln
                for ln in Path(f"/proc/{pid}/status").read_text().splitlines()
                if ln.startswith("Uid:")
            ).split()[1]
        )
        assert uid == (pwd.getpwnam("postgres").pw_uid if os.geteuid() == 0 else os.geteuid())
        backends_seen: list[int] = []
        with psycopg.connect(pg.conninfo()) as conn:
            backends_seen = _children(pid)
            conn.execute("CREATE TABLE jobs (id text PRIMARY KEY, state text NOT NULL)")
            conn.execute("INSERT INTO jobs VALUES ('j1', 'JOB_STATE_CREATED')")
            conn.commit()
            assert conn.execute("SELECT state FROM jobs WHERE id = 'j1'").fetchone() == (
                "JOB_STATE_CREATED",
            )
            me = conn.execute(
                "SELECT current_user, rolsuper FROM pg_roles WHERE rolname = current_user"
            ).fetchone()
            assert me == ("video", False)
            # fsync=off etc. are in force (speed, not durability)
            assert conn.execute("SHOW fsync").fetchone() == ("off",)
            assert conn.execute("SHOW listen_addresses").fetchone() == ("127.0.0.1",)
        assert backends_seen, "postmaster should have backend/aux children while running"
    finally:
        pg.stop()
    assert not _alive(pid)
    assert not [c for c in backends_seen if _alive(c)]
    assert not data_dir.exists()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(
            host="127.0.0.1",
            port=port,
            user="video",
            password=password,
            dbname="video",
            connect_timeout=2,
        )
    pg.stop()  # idempotent


def test_password_is_required_over_tcp_and_only_loopback_listens() -> None:
    with PostgresServer() as pg:
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            psycopg.connect(
                host="127.0.0.1",
                port=pg.port,
                user="video",
                password="wrong",
                dbname="video",
                connect_timeout=5,
            )
        listening = Path("/proc/net/tcp").read_text().splitlines()[1:]
        ours = [ln.split() for ln in listening if ln.split()[1].endswith(f":{pg.port:04X}")]
        assert ours, "server port not found in /proc/net/tcp"
        for fields in ours:
            if fields[3] == "0A":  # LISTEN
                assert fields[1].split(":")[0] == "0100007F"  # 127.0.0.1
        # The unix socket is private to the temp dir, not /var/run/postgresql.
        assert (pg.socket_dir / f".s.PGSQL.{pg.port}").exists()
        assert not Path(f"/var/run/postgresql/.s.PGSQL.{pg.port}").exists()


def test_create_database_is_isolated() -> None:
    with PostgresServer() as pg:
        a_url = pg.create_database("tenant_a")
        b_url = pg.create_database()
        assert a_url.endswith("/tenant_a")
        assert b_url != a_url and b_url.rsplit("/", 1)[1].startswith("test_")
        conninfo = {name: pg.conninfo(name) for name in ("tenant_a", b_url.rsplit("/", 1)[1])}
        with psycopg.connect(conninfo["tenant_a"]) as conn:
            conn.execute("CREATE TABLE t (x int)")
            conn.execute("INSERT INTO t VALUES (1)")
        other = next(v for k, v in conninfo.items() if k != "tenant_a")
        with psycopg.connect(other) as conn:
            assert conn.execute("SELECT to_regclass('public.t')").fetchone() == (None,)
        pg.drop_database("tenant_a")
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(conninfo["tenant_a"], connect_timeout=5)
        with pytest.raises(ValueError):
            pg.create_database("bad; DROP DATABASE video")


def test_two_servers_side_by_side_get_distinct_ports() -> None:
    with PostgresServer() as a, PostgresServer() as b:
        assert a.port != b.port
        for pg in (a, b):
            with psycopg.connect(pg.conninfo()) as conn:
                assert conn.execute("SELECT 1").fetchone() == (1,)


def test_bindir_found_and_not_running_errors() -> None:
    bindir = find_postgres_bindir()
    assert (bindir / "initdb").is_file()
    pg = PostgresServer()
    with pytest.raises(PostgresError):
        _ = pg.url
