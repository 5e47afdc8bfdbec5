"""Liveness never depends on the database; readiness does (a Postgres outage takes the API
out of its Service instead of restarting it mid-upload)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from psycopg import sql

from tests.support.didserver import DidServer
from tests.support.postgres import PostgresServer
from tests.support.service import ServiceProcess

pytestmark = pytest.mark.postgres


def test_liveness_survives_a_database_outage_and_readiness_does_not(
    tmp_path: Path, postgres: PostgresServer, dids: DidServer
) -> None:
    url = postgres.create_database()
    name = url.rsplit("/", 1)[1]
    svc = ServiceProcess(tmp_path, {"VIDEO_DID_PLC_URL": dids.url, "VIDEO_DB_URL": url}).start()
    try:
        assert httpx.get(f"{svc.url}/livez").status_code == 200
        assert httpx.get(f"{svc.url}/xrpc/_health").status_code == 200
        with postgres._admin() as admin:  # no new connections, and drop the open ones
            admin.execute(sql.SQL("ALTER DATABASE {} CONNECTION LIMIT 0").format(
                sql.Identifier(name)))
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                          "WHERE datname = %s", (name,))
        ready = httpx.get(f"{svc.url}/xrpc/_health", timeout=30)
        assert ready.status_code == 503 and ready.json()["error"] == "Service Unavailable"
        assert httpx.get(f"{svc.url}/livez", timeout=30).status_code == 200
        with postgres._admin() as admin:
            admin.execute(sql.SQL("ALTER DATABASE {} CONNECTION LIMIT -1").format(
                sql.Identifier(name)))
        assert httpx.get(f"{svc.url}/xrpc/_health", timeout=30).status_code == 200
    finally:
        svc.stop()
