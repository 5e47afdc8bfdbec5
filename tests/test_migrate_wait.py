"""``atproto-video migrate --wait``: the chart's migrate init container waits for a Postgres
that is still starting (the quickstart StatefulSet initdb's on its first boot) instead of
failing at once, and gives up, exit 1 with the reason, after the bound."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from atproto_video.core.migrate import head_revision
from tests.support.postgres import PostgresServer
from tests.support.waiting import free_port


def migrate(url: str, *args: str, cwd: Path) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIDEO_")}
    env |= {"VIDEO_SERVICE_DID": "did:web:video.test", "VIDEO_DB_URL": url}
    return subprocess.Popen(
        [sys.executable, "-m", "atproto_video.cli", "migrate", *args],
        env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def with_port(url: str, port: int) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit(":", 1)[0] + f":{port}"
    return urlunsplit(parts._replace(netloc=netloc))


@contextmanager
def late_proxy(port: int, target: int, delay: float) -> Iterator[None]:
    """Nothing listens on ``port`` for ``delay`` seconds; then it forwards to ``target``."""
    stop = threading.Event()

    def pipe(src: socket.socket, dst: socket.socket) -> None:
        with suppress(OSError):
            while chunk := src.recv(65536):
                dst.sendall(chunk)
        with suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    def serve() -> None:
        if stop.wait(delay):
            return
        with socket.create_server(("127.0.0.1", port)) as srv:
            srv.settimeout(0.2)
            while not stop.is_set():
                try:
                    client, _ = srv.accept()
                except TimeoutError:
                    continue
                upstream = socket.create_connection(("127.0.0.1", target))
                for a, b in ((client, upstream), (upstream, client)):
                    threading.Thread(target=pipe, args=(a, b), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)


@pytest.mark.postgres
def test_migrate_waits_for_a_database_that_starts_late(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    url = postgres.create_database()
    port = free_port()
    with late_proxy(port, postgres.port, delay=3):
        t0 = time.monotonic()
        proc = migrate(with_port(url, port), "--wait", "60", cwd=tmp_path)
        out, err = proc.communicate(timeout=90)
    assert proc.returncode == 0, err
    assert head_revision() in out
    assert time.monotonic() - t0 >= 3
    assert "waiting for the database" in err


def test_migrate_gives_up_after_the_wait(tmp_path: Path) -> None:
    url = f"postgresql://video:secret@127.0.0.1:{free_port()}/video"
    t0 = time.monotonic()
    proc = migrate(url, "--wait", "2", cwd=tmp_path)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert 2 <= time.monotonic() - t0 < 30
    last = err.strip().splitlines()[-1]
    assert "database not reachable after 2s" in last and "127.0.0.1" in last, err


def test_migrate_without_wait_fails_at_once(tmp_path: Path) -> None:
    url = f"postgresql://video:secret@127.0.0.1:{free_port()}/video"
    proc = migrate(url, cwd=tmp_path)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode != 0 and "waiting for the database" not in err
