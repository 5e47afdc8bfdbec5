"""Polling and loopback ports: the one place tests wait for something to happen."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable
from typing import TypeVar

import httpx

T = TypeVar("T")


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now (the caller binds it soon after)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_for(
    check: Callable[[], T | None],
    *,
    timeout: float,
    interval: float = 0.1,
    what: str | Callable[[], str] = "condition",
) -> T:
    """Call ``check`` until it returns something truthy, and return that.

    ``check`` runs at least once, even after the deadline, so a slow machine still gets one
    look; it may raise to give up early. After ``timeout`` seconds: AssertionError naming
    ``what`` (a callable is only evaluated then, e.g. to attach a log tail).
    """
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() >= deadline:
            detail = what() if callable(what) else what
            raise AssertionError(f"not within {timeout:g}s: {detail}")
        time.sleep(interval)


def wait_healthy(
    proc: subprocess.Popen[bytes],
    url: str,
    *,
    timeout: float,
    logs: Callable[[], str],
    interval: float = 0.1,
) -> None:
    """Until ``url`` answers 200. RuntimeError with the log tail if ``proc`` exits first or
    the time runs out (then ``proc`` is killed, so no half-started server is left behind)."""

    def healthy() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited {proc.returncode}: {logs()[-3000:]}")
        try:
            return httpx.get(url, timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(healthy, timeout=timeout, interval=interval, what=url)
    except AssertionError:
        proc.kill()
        proc.wait()
        raise RuntimeError(f"{url} not healthy in {timeout:g}s: {logs()[-3000:]}") from None
