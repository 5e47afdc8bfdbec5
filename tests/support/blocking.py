"""Catching blocking file-system work done on an event loop's thread."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import Iterator
from typing import Any

import pytest


@contextlib.contextmanager
def no_blocking_rmtree(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """``shutil.rmtree`` raises if called on a thread that runs an event loop.

    Yields the paths removed (from worker threads), so a test can check removal happened.
    """
    real = shutil.rmtree
    calls: list[str] = []

    def guarded(path: Any, *args: Any, **kwargs: Any) -> None:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            calls.append(str(path))
            real(path, *args, **kwargs)
            return
        raise AssertionError(f"rmtree({path}) blocked the event loop")

    monkeypatch.setattr(shutil, "rmtree", guarded)
    try:
        yield calls
    finally:
        monkeypatch.setattr(shutil, "rmtree", real)
