"""A wake-up queue: which objects need a step now or later, at most one step per object at once.

Watch events wake an object at once; a step asks for its own next wake (progress poll, stuck
check, safety resync). Wakes coalesce: a burst of events for one object while it waits or runs
costs one more step, not one each. This replaced a kopf timer per VideoJob, whose ticks (and
kopf's handling of each) were most of the operator's CPU on a burst of uploads.

Two lanes: an *urgent* wake (a new VideoJob whose worker Jobs are still to be created) runs
before any due ordinary one, and while urgent steps are waiting or running, ordinary steps
(status patches, database writes) wait too, for at most :data:`MAX_DEFER_S`. On a burst of
uploads the API server's time then goes to creating the next VideoJobs' Jobs first.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import time
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)

#: A step that raised is retried this much later (kopf's timer used the same backoff).
ERROR_RETRY_S = 2.0
#: The longest an ordinary step waits behind urgent ones: a steady stream of new VideoJobs
#: never starves the status of the running ones.
MAX_DEFER_S = 3.0

Step = Callable[[str], Awaitable[float | None]]


class WakeQueue:
    """Run ``step(name)`` when ``name`` is due; ``step`` returns its next delay or None."""

    def __init__(self, step: Step, *, workers: int = 16,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._step = step
        self._workers = workers
        self._clock = clock
        #: The single source of truth for when each name is due; heap entries are lazy.
        self._due: dict[str, float] = {}
        self._heap: list[tuple[float, int, str]] = []
        self._seq = itertools.count()
        self._running: dict[str, asyncio.Task[None]] = {}
        #: Due while its step ran: back on the heap when that step ends.
        self._parked: set[str] = set()
        self._dropped: set[str] = set()
        self._changed = asyncio.Event()
        #: Urgent names in the order they were woken (due now; see the module docstring).
        self._urgent: dict[str, None] = {}
        self._urgent_running: set[str] = set()
        self.steps = 0  # how many steps ran (tests, logs)

    def wake(self, name: str, delay: float = 0.0, *, urgent: bool = False) -> None:
        """Due in ``delay`` seconds, unless already due sooner; ``urgent``: now, first."""
        if urgent:
            self._urgent[name] = None
            self._changed.set()
            return
        when = self._clock() + max(0.0, delay)
        current = self._due.get(name)
        if current is not None and current <= when:
            return
        self._due[name] = when
        heapq.heappush(self._heap, (when, next(self._seq), name))
        self._changed.set()

    def due(self, name: str) -> float | None:
        """Seconds until ``name`` is due (None: not scheduled)."""
        when = self._due.get(name)
        return None if when is None else max(0.0, when - self._clock())

    def running(self, name: str) -> bool:
        return name in self._running

    @property
    def urgent_pending(self) -> bool:
        """Urgent steps waiting or running: ordinary work holds back (bounded)."""
        return bool(self._urgent or self._urgent_running)

    async def forget(self, name: str) -> None:
        """No more steps for ``name``; waits for one in progress to end."""
        self._due.pop(name, None)
        self._urgent.pop(name, None)
        self._parked.discard(name)
        task = self._running.get(name)
        if task is not None:
            self._dropped.add(name)
            with contextlib.suppress(Exception):
                await asyncio.shield(task)
            self._dropped.discard(name)
        self._due.pop(name, None)

    async def run(self, stop: asyncio.Event) -> None:
        """Until ``stop``; steps in flight are cancelled then."""
        slots = asyncio.Semaphore(self._workers)
        stopping = asyncio.create_task(stop.wait())
        try:
            while not stop.is_set():
                await slots.acquire()  # first a slot, then a name: a name taken always runs
                name = None
                while name is None and not stop.is_set():
                    name = await self._next(stopping)
                if name is None:
                    slots.release()
                    break
                if name in self._urgent:
                    del self._urgent[name]
                    self._urgent_running.add(name)
                self._running[name] = asyncio.create_task(self._one(name, slots),
                                                          name=f"step-{name}")
        finally:
            stopping.cancel()
            for task in list(self._running.values()):
                task.cancel()

    async def _next(self, stopping: asyncio.Task[bool]) -> str | None:
        """The first urgent name not running, else the earliest due name not running, once
        it is due (and not held back by urgent work); None if woken for nothing."""
        for name in self._urgent:
            if name not in self._running:
                return name
        now = self._clock()
        timeout: float | None = None
        while self._heap:
            when, _, name = self._heap[0]
            if self._due.get(name) != when:
                heapq.heappop(self._heap)  # superseded by an earlier wake, or forgotten
                continue
            if name in self._running:
                heapq.heappop(self._heap)
                self._parked.add(name)
                continue
            if when > now:
                timeout = when - now
                break
            if self.urgent_pending and now < when + MAX_DEFER_S:
                timeout = when + MAX_DEFER_S - now  # or sooner, when the urgent work ends
                break
            heapq.heappop(self._heap)
            del self._due[name]
            return name
        self._changed.clear()
        changed = asyncio.create_task(self._changed.wait())
        try:
            await asyncio.wait({changed, stopping}, timeout=timeout,
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            changed.cancel()
        return None

    async def _one(self, name: str, slots: asyncio.Semaphore) -> None:
        delay: float | None = ERROR_RETRY_S
        try:
            self.steps += 1
            delay = await self._step(name)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("reconcile step failed; retrying in %s s", ERROR_RETRY_S,
                          extra={"videojob": name})
        finally:
            slots.release()
            del self._running[name]
            self._urgent_running.discard(name)
            self._changed.set()  # held-back ordinary steps may go now
        if name in self._dropped:
            return
        if name in self._parked:
            self._parked.discard(name)
            when = self._due.get(name)
            if when is not None:
                heapq.heappush(self._heap, (when, next(self._seq), name))
        if delay is not None:
            self.wake(name, delay)
        self._changed.set()
