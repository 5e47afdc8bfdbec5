"""The wake-up queue: wakes coalesce, one step per name at a time, steps schedule themselves."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from atproto_video.operator import wakeups
from atproto_video.operator.wakeups import WakeQueue


async def until(cond: Callable[[], bool], what: str, rounds: int = 2000) -> None:
    """Yield to the loop until ``cond`` holds (bounded by rounds, not by a clock)."""
    for _ in range(rounds):
        if cond():
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"never: {what}")


def running(queue: WakeQueue, body: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    async def main() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(queue.run(stop))
        try:
            await body(stop)
        finally:
            stop.set()
            await task

    asyncio.run(main())


def test_wakes_coalesce_and_a_name_never_steps_twice_at_once() -> None:
    calls: list[str] = []
    active: set[str] = set()
    overlap: list[str] = []
    release = asyncio.Event()

    async def step(name: str) -> float | None:
        if name in active:
            overlap.append(name)
        active.add(name)
        calls.append(name)
        await release.wait()
        active.discard(name)
        return None

    queue = WakeQueue(step, workers=4)

    async def body(stop: asyncio.Event) -> None:
        for _ in range(50):
            queue.wake("a")
        queue.wake("b")
        await until(lambda: sorted(calls) == ["a", "b"], "a and b stepping")
        # Woken again while running: one more step each, after the first ends.
        for _ in range(20):
            queue.wake("a")
        await asyncio.sleep(0.05)
        assert calls.count("a") == 1, "a stepped again while its step ran"
        release.set()
        await until(lambda: calls.count("a") == 2, "a's second step")
        await asyncio.sleep(0.05)
        assert calls.count("a") == 2 and calls.count("b") == 1, calls

    running(queue, body)
    assert overlap == []


def test_a_step_schedules_its_next_wake_and_none_ends_it() -> None:
    left = {"a": 3}

    async def step(name: str) -> float | None:
        left[name] -= 1
        return 0.01 if left[name] > 0 else None

    queue = WakeQueue(step)

    async def body(stop: asyncio.Event) -> None:
        queue.wake("a")
        await until(lambda: left["a"] == 0, "three steps")
        await asyncio.sleep(0.05)
        assert queue.due("a") is None and queue.steps == 3

    running(queue, body)


def test_an_earlier_wake_wins_over_a_later_one() -> None:
    steps: list[str] = []

    async def step(name: str) -> float | None:
        steps.append(name)
        return None

    queue = WakeQueue(step)

    async def body(stop: asyncio.Event) -> None:
        queue.wake("late", 3600)
        queue.wake("late", 7200)  # later: ignored
        due = queue.due("late")
        assert due is not None and 3500 < due <= 3600
        queue.wake("late")  # an event: now
        await until(lambda: steps == ["late"], "the woken step")
        assert queue.due("late") is None

    running(queue, body)


def test_a_failing_step_is_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wakeups, "ERROR_RETRY_S", 0.01)
    attempts: list[int] = []

    async def step(name: str) -> float | None:
        attempts.append(1)
        if len(attempts) < 3:
            raise RuntimeError("transient")
        return None

    queue = WakeQueue(step)

    async def body(stop: asyncio.Event) -> None:
        queue.wake("a")
        await until(lambda: len(attempts) == 3, "two retries")

    running(queue, body)


def test_forget_waits_for_the_step_in_flight_and_drops_the_rest() -> None:
    entered = asyncio.Event()
    release = asyncio.Event()
    finished: list[str] = []

    async def step(name: str) -> float | None:
        entered.set()
        await release.wait()
        finished.append(name)
        return 0.0  # would run again at once

    queue = WakeQueue(step)

    async def body(stop: asyncio.Event) -> None:
        queue.wake("a")
        await entered.wait()
        queue.wake("a")
        forgetting = asyncio.create_task(queue.forget("a"))
        await asyncio.sleep(0.02)
        assert not forgetting.done(), "forget returned while a step was in flight"
        release.set()
        await forgetting
        assert finished == ["a"]
        await asyncio.sleep(0.05)
        assert finished == ["a"] and queue.due("a") is None and not queue.running("a")

    running(queue, body)


def test_urgent_wakes_go_first_and_hold_ordinary_steps_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """New VideoJobs' dispatch steps before any due status step, which waits while they run."""
    order: list[str] = []
    release = asyncio.Event()

    async def step(name: str) -> float | None:
        order.append(name)
        if name.startswith("new"):
            await release.wait()
        return None

    queue = WakeQueue(step, workers=8)

    async def body(stop: asyncio.Event) -> None:
        for name in ("old1", "old2"):
            queue.wake(name)
        for i in range(3):
            queue.wake(f"new{i}", urgent=True)
        await until(lambda: len(order) == 3, "the urgent steps started")
        assert order == ["new0", "new1", "new2"]
        assert queue.urgent_pending
        await asyncio.sleep(0.1)
        assert len(order) == 3, "an ordinary step ran while urgent ones were running"
        release.set()
        await until(lambda: len(order) == 5, "the ordinary steps")
        assert sorted(order[3:]) == ["old1", "old2"] and not queue.urgent_pending

    running(queue, body)


def test_ordinary_steps_wait_for_urgent_ones_only_so_long(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(wakeups, "MAX_DEFER_S", 0.05)
    order: list[str] = []
    release = asyncio.Event()

    async def step(name: str) -> float | None:
        order.append(name)
        if name == "new":
            await release.wait()
        return None

    queue = WakeQueue(step)

    async def body(stop: asyncio.Event) -> None:
        queue.wake("new", urgent=True)
        await until(lambda: order == ["new"], "the urgent step")
        queue.wake("old")
        await until(lambda: order == ["new", "old"], "the ordinary step, deferred no longer")
        assert queue.urgent_pending
        release.set()

    running(queue, body)
