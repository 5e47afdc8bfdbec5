"""Background passes beside kopf's handlers (creating missing VideoJobs, expiring old ones)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)


async def every(interval_s: float, stop: asyncio.Event, once: Callable[[], Any],
                failure: str) -> None:
    """``once()`` in a thread every ``interval_s`` until ``stop``; a failed pass is logged
    (``failure``) and retried at the next interval, never fatal."""
    while not stop.is_set():
        try:
            await asyncio.to_thread(once)
        except Exception as exc:
            log.warning("%s: %s", failure, exc)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval_s)
