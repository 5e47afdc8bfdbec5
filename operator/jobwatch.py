"""The worker Jobs of the namespace, kept current by one list and one watch (an informer).

kopf kept this index before (a kopf index and an event handler on Jobs). Each worker Job
sends five or more watch events (created, its pod created, pods ready, done, deleted), and kopf
took every one through its whole per-object machinery (a worker task per Job, a Body wrapper,
loggers, cause detection, a patch check); issue 17's profile put most of the operator's CPU on
a burst of uploads in kopf's handling of watch events. Here one thread reads the watch
stream, parses each line with :func:`json.loads` and hands each chunk's events to the event
loop at once; the index is updated before the driver hears of an event, so a woken step sees
the new Job.

A watch that ends is resumed from the last resourceVersion seen (bookmarks included); one that
is too old (410 Gone) lists again, and Jobs gone meanwhile count as deleted. Errors are
retried with the same backoffs as kopf's own requests
(:data:`~atproto_video.operator.handlers.API_ERROR_BACKOFFS`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Protocol

from atproto_video.core.kube import Gone
from atproto_video.operator.templates import LABEL_JOB_ID

log = logging.getLogger(__name__)

#: The watch asks the API server to end the stream after this long (kopf's setting was the
#: same); it is resumed at once from the last resourceVersion.
SERVER_TIMEOUT_S = 270

OnEvent = Callable[[str | None, dict[str, Any]], None]


class WatchAPI(Protocol):
    def list_jobs_versioned(
        self, namespace: str, selector: str
    ) -> tuple[list[dict[str, Any]], str]: ...

    def watch_jobs(
        self, namespace: str, selector: str, resource_version: str, *, timeout_s: int,
        opened: Callable[[Any], None] | None = None,
    ) -> Iterator[list[dict[str, Any]]]: ...


def _owner(body: Mapping[str, Any]) -> str:
    return str(((body.get("metadata") or {}).get("labels") or {}).get(LABEL_JOB_ID) or "")


def _name(body: Mapping[str, Any]) -> str:
    return str((body.get("metadata") or {}).get("name") or "")


class JobIndex(Mapping[str, list[dict[str, Any]]]):
    """Worker Jobs by the name of the VideoJob that owns them (their job-id label)."""

    def __init__(self) -> None:
        self._by_owner: dict[str, dict[str, dict[str, Any]]] = {}
        self._owner_of: dict[str, str] = {}

    def apply(self, kind: str | None, body: dict[str, Any]) -> None:
        name, owner = _name(body), _owner(body)
        if not name:
            return
        old = self._owner_of.pop(name, None)
        if old is not None:
            jobs = self._by_owner.get(old, {})
            jobs.pop(name, None)
            if not jobs:
                self._by_owner.pop(old, None)
        if kind == "DELETED" or not owner:
            return
        self._owner_of[name] = owner
        self._by_owner.setdefault(owner, {})[name] = body

    def names(self) -> set[str]:
        return set(self._owner_of)

    def body(self, name: str) -> dict[str, Any] | None:
        owner = self._owner_of.get(name)
        return None if owner is None else self._by_owner[owner].get(name)

    def __getitem__(self, owner: str) -> list[dict[str, Any]]:
        return list(self._by_owner[owner].values())

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_owner)

    def __len__(self) -> int:
        return len(self._by_owner)


class JobWatch:
    """List once, then watch; ``on_event`` hears of each change after :attr:`index` has it."""

    def __init__(self, kube: WatchAPI, namespace: str, on_event: OnEvent, *,
                 backoffs: Sequence[float], selector: str = LABEL_JOB_ID,
                 server_timeout_s: int = SERVER_TIMEOUT_S) -> None:
        self.kube = kube
        self.namespace = namespace
        self.selector = selector
        self.on_event = on_event
        self.backoffs = tuple(backoffs) or (1.0,)
        self.server_timeout_s = server_timeout_s
        self.index = JobIndex()
        #: Set once the first list is in the index: steps wait for it (kopf did the same).
        self.synced = asyncio.Event()
        self.lists = 0  # how many times it listed (tests, logs)
        self._stopped = threading.Event()
        self._resp: Any = None

    async def run(self, stop: asyncio.Event) -> None:
        """Until ``stop``; the reading thread ends with its stream."""
        loop = asyncio.get_running_loop()
        thread = threading.Thread(target=self._read, args=(loop,), name="job-watch",
                                  daemon=True)
        thread.start()
        try:
            await stop.wait()
        finally:
            self._stopped.set()
            resp = self._resp
            if resp is not None:
                with contextlib.suppress(Exception):
                    resp.shutdown()
            await asyncio.to_thread(thread.join, 5)

    # -- the reading thread ----------------------------------------------------------------

    def _read(self, loop: asyncio.AbstractEventLoop) -> None:
        version: str | None = None
        failures = 0
        while not self._stopped.is_set():
            try:
                if version is None:
                    items, version = self.kube.list_jobs_versioned(self.namespace,
                                                                   self.selector)
                    self.lists += 1
                    loop.call_soon_threadsafe(self._relisted, items)
                for events in self.kube.watch_jobs(self.namespace, self.selector, version,
                                                   timeout_s=self.server_timeout_s,
                                                   opened=self._opened):
                    failures = 0
                    for event in events:
                        rv = ((event.get("object") or {}).get("metadata") or {}).get(
                            "resourceVersion")
                        if rv:
                            version = str(rv)
                    loop.call_soon_threadsafe(self._received, events)
                    if self._stopped.is_set():
                        return
                failures = 0
            except Gone:
                version = None  # too old: list again
            except Exception as exc:  # the API server restarting, a reset connection, ...
                if self._stopped.is_set() or loop.is_closed():
                    return
                delay = self.backoffs[min(failures, len(self.backoffs) - 1)]
                failures += 1
                log.warning("the worker Job watch failed (%s); again in %s s", exc, delay)
                self._stopped.wait(delay)
            finally:
                self._resp = None

    def _opened(self, resp: Any) -> None:
        self._resp = resp
        if self._stopped.is_set():
            resp.shutdown()

    # -- on the event loop -------------------------------------------------------------------

    def _relisted(self, items: list[dict[str, Any]]) -> None:
        """A fresh list: what it lacks was deleted meanwhile."""
        listed = {_name(i) for i in items}
        for name in self.index.names() - listed:
            body = self.index.body(name)
            self.index.apply("DELETED", body or {"metadata": {"name": name}})
            if body is not None:
                self._tell("DELETED", body)
        for item in items:
            self.index.apply(None, item)
            self._tell(None, item)
        self.synced.set()

    def _received(self, events: list[dict[str, Any]]) -> None:
        for event in events:
            kind, body = event.get("type"), event.get("object") or {}
            if kind not in ("ADDED", "MODIFIED", "DELETED"):
                continue  # BOOKMARK: only its resourceVersion mattered
            self.index.apply(kind, body)
            self._tell(kind, body)

    def _tell(self, kind: str | None, body: dict[str, Any]) -> None:
        try:
            self.on_event(kind, body)
        except Exception:
            log.exception("handling a worker Job event failed", extra={"k8s_job": _name(body)})
