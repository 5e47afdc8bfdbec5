"""Shared fixtures: a real Postgres server for the session, and databases of both kinds."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from atproto_video.core.db import make_engine
from atproto_video.core.migrate import upgrade
from tests.support.cluster import (  # noqa: F401  (session fixtures shared by every tier)
    cluster,
    cluster_postgres_image,
    cluster_worker_image,
    docker_host,
    worker_image,
)
from tests.support.didserver import DidServer
from tests.support.postgres import PostgresServer
from tests.support.s3 import S3Server, aws_env, running_s3


@pytest.fixture
def anyio_backend() -> str:
    """``anyio`` tests run on asyncio only, the loop the service runs on (trio is not used)."""
    return "asyncio"


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    server = PostgresServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty database URL: the embedded SQLite file and a real Postgres database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'video.sqlite3'}"
    server: PostgresServer = request.getfixturevalue("postgres")
    return server.create_database()


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    eng = make_engine(db_url)
    upgrade(eng)
    try:
        yield eng
    finally:
        eng.dispose()


@pytest.fixture(scope="session")
def helm() -> str:
    """The helm binary, built once from the Go module proxy (scripts/install-tools.sh)."""
    out = subprocess.run(
        ["bash", str(Path(__file__).resolve().parents[1] / "scripts" / "install-tools.sh"),
         "--print-helm"],
        capture_output=True, text=True, check=True, timeout=1800,
    )  # fmt: skip
    return out.stdout.strip()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """One real S3 server (SeaweedFS) on loopback for the whole run; buckets are per test."""
    with running_s3(tmp_path_factory.mktemp("s3")) as server:
        yield server


@pytest.fixture
def s3_bucket(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh bucket, with the server's credentials in the environment (boto3's chain)."""
    aws_env(monkeypatch, s3_server)
    return s3_server.new_bucket()


@pytest.fixture(scope="session")
def dids() -> Iterator[DidServer]:
    """One loopback DID server (PLC and did:web) for a whole run; identities are unique."""
    server = DidServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def did_server() -> Iterator[DidServer]:
    server = DidServer().start()
    try:
        yield server
    finally:
        server.stop()
