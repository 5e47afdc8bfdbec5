"""When a VideoJob is reconciled: on its own watch events and its worker Jobs', not on a timer.

kopf's VideoJob watch feeds :meth:`VideoJobDriver.videojob_event` and the worker Job watch
(:mod:`~atproto_video.operator.jobwatch`) :meth:`VideoJobDriver.job_event`; they wake the
VideoJob on a :class:`~atproto_video.operator.wakeups.WakeQueue`. A step writes at most one
status patch (only the keys that changed, none if nothing did) and asks for its
next wake by what it is waiting for (:func:`next_wake`): progress files of running workers
every ``VIDEO_K8S_POLL_INTERVAL_S``, a look at the pods of a Job that is not ready yet every
:data:`~atproto_video.operator.reconcile.STUCK_CHECK_S`, else only the safety resync
(``VIDEO_K8S_RESYNC_INTERVAL_S``) for a missed event or the job's deadline.

A VideoJob this process has not stepped yet is woken *urgently*: its first step only creates
its worker Jobs (:meth:`~atproto_video.operator.reconcile.VideoJobReconciler.dispatch`), and
the rest of it (database writes, the status patch, the event) comes as an ordinary step, which
waits while other new VideoJobs' Jobs are being created (bounded; see
:mod:`~atproto_video.operator.wakeups`). On a burst of uploads, the last VideoJob's Jobs no
longer wait behind every earlier one's status.

A kopf timer per VideoJob ticked every second instead; with kopf's handling of each tick and
of the watch events its patches caused, that was most of the operator's CPU on a burst of
uploads (issue 17).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from atproto_video.core.dbfaults import db_unavailable
from atproto_video.core.details import Outcome
from atproto_video.core.jobs import TERMINAL
from atproto_video.core.lexicon import JobState
from atproto_video.operator.events import Event, events_for
from atproto_video.operator.failures import job_outcome
from atproto_video.operator.reconcile import STUCK_CHECK_S, Observed, VideoJobReconciler
from atproto_video.operator.templates import LABEL_JOB_ID
from atproto_video.operator.wakeups import WakeQueue

log = logging.getLogger(__name__)

#: While Postgres is unreachable a step is retried this often, without a traceback each time.
DB_RETRY_S = 2.0

#: Steps at once. kopf ran every VideoJob's timer at once; the API server and the thread pool
#: for blocking calls bound the real concurrency, this only bounds the tasks.
STEPS_IN_FLIGHT = 128
#: Status patches at once (see :class:`VideoJobDriver`).
PATCHES_IN_FLIGHT = 4

_WAITING = (JobState.CREATED.value, JobState.ENCODING.value)


class StatusWriter(Protocol):
    """What the driver needs from the API server besides what the reconciler uses."""

    def patch_videojob_status(
        self, namespace: str, name: str, status: dict[str, Any]
    ) -> dict[str, Any] | None: ...

    def post_event(self, obj: dict[str, Any], type_: str, reason: str, message: str) -> None: ...


def active(body: Mapping[str, Any]) -> bool:
    """Steps run only for VideoJobs whose mirrored state is not terminal and not deleted."""
    meta = body.get("metadata") or {}
    return (not meta.get("deletionTimestamp")
            and (body.get("status") or {}).get("state") not in TERMINAL)


def changed(new: Mapping[str, Any], old: Mapping[str, Any]) -> dict[str, Any]:
    """The status keys whose value differs: an unchanged status costs no PATCH."""
    return {k: v for k, v in new.items() if old.get(k) != v}


def next_wake(status: Mapping[str, Any], *, poll_s: float, resync_s: float) -> float | None:
    """Seconds until the next step, by what the VideoJob waits for; None once it is terminal."""
    state = status.get("state")
    if state in TERMINAL:
        return None
    if state not in _WAITING:
        return min(poll_s, resync_s)  # delivering: normally finished within the step
    outcomes = {r.get("outcome") for r in (status.get("renditions") or {}).values()}
    if Outcome.RUNNING.value in outcomes:
        return min(poll_s, resync_s)  # progress lives in files, which send no events
    if Outcome.PENDING.value in outcomes:
        return min(STUCK_CHECK_S, resync_s)  # a pod that can never start sends no Job event
    return resync_s


def job_signature(body: Mapping[str, Any]) -> tuple[Any, ...]:
    """What in a worker Job's status can move its VideoJob: outcome, a ready pod, retries.

    Other updates (the job controller's bookkeeping after a create) wake nothing.
    """
    status = body.get("status") or {}
    outcome = job_outcome(body)
    return (outcome.value if outcome else None, int(status.get("ready") or 0) > 0,
            int(status.get("failed") or 0), int(status.get("succeeded") or 0))


#: A Job as created, before anything happened to it.
BLANK_JOB = (None, False, 0, 0)


def _newer(candidate: Mapping[str, Any], current: Mapping[str, Any] | None) -> bool:
    """Whether ``candidate`` is at least as recent as ``current`` (by resourceVersion, which
    the API server derives from etcd's revision; anything unparsable counts as newer)."""
    if current is None:
        return True
    try:
        return int(_rv(candidate)) >= int(_rv(current))
    except ValueError:
        return True


def _rv(body: Mapping[str, Any]) -> str:
    return str((body.get("metadata") or {}).get("resourceVersion") or "")


class VideoJobDriver:
    """Latest VideoJob bodies, worker Job signatures, and the queue that steps them."""

    def __init__(self, reconciler: VideoJobReconciler, kube: StatusWriter, *,
                 poll_s: float, resync_s: float, workers: int = STEPS_IN_FLIGHT) -> None:
        self.reconciler = reconciler
        self.kube = kube
        self.poll_s = poll_s
        self.resync_s = resync_s
        self.queue = WakeQueue(self._step, workers=workers)
        self.bodies: dict[str, dict[str, Any]] = {}
        #: The worker Jobs by VideoJob name (:class:`~atproto_video.operator.jobwatch.JobIndex`).
        self.jobs: Mapping[str, Iterable[dict[str, Any]]] | None = None
        self._own: dict[str, str] = {}  # resourceVersion of the status this process wrote
        self._signatures: dict[str, tuple[Any, ...]] = {}
        #: VideoJobs whose first (dispatch) step ran in this process.
        self._dispatched: set[str] = set()
        self._posting: set[asyncio.Task[None]] = set()
        # Few status patches at once: on a burst the API server's time goes to creating the
        # next VideoJobs' Jobs first (each step still writes its own status before it ends).
        self._patching = asyncio.Semaphore(PATCHES_IN_FLIGHT)

    async def run(self, stop: asyncio.Event, *, ready: asyncio.Event | None = None) -> None:
        """Steps until ``stop``; none before ``ready`` (the worker Job index listed)."""
        if ready is not None:
            waiting = asyncio.create_task(ready.wait())
            stopping = asyncio.create_task(stop.wait())
            await asyncio.wait({waiting, stopping}, return_when=asyncio.FIRST_COMPLETED)
            waiting.cancel()
            stopping.cancel()
        await self.queue.run(stop)

    # -- watch events --------------------------------------------------------------------------

    async def videojob_event(self, kind: str | None, body: Mapping[str, Any]) -> None:
        """A VideoJob was listed, added, changed or deleted."""
        name = str((body.get("metadata") or {}).get("name") or "")
        if not name:
            return
        if kind == "DELETED":
            self.bodies.pop(name, None)
            self._own.pop(name, None)
            await self.queue.forget(name)
            self._dispatched.discard(name)
            return
        if not _newer(body, self.bodies.get(name)):
            return  # older than the status this process already wrote
        self.bodies[name] = dict(body)
        if self._own.get(name) == _rv(body):
            return  # the echo of our own status patch: nothing new to act on
        if active(body):
            self.queue.wake(name, urgent=name not in self._dispatched)

    def job_event(self, kind: str | None, body: Mapping[str, Any]) -> None:
        """A worker Job changed: wake its VideoJob if its outcome, readiness or retries did."""
        meta = body.get("metadata") or {}
        owner = str((meta.get("labels") or {}).get(LABEL_JOB_ID) or "")
        name = str(meta.get("name") or "")
        if not owner or not name:
            return
        if kind == "DELETED":
            self._signatures.pop(name, None)
            wake = True  # deleted under us: the step recreates it or notices why
        else:
            signature = job_signature(body)
            wake = self._signatures.get(name, BLANK_JOB) != signature
            self._signatures[name] = signature
        if wake and owner in self.bodies and active(self.bodies[owner]):
            self.queue.wake(owner)

    async def forget(self, name: str) -> None:
        """Before a VideoJob's finalizer runs: no step for it in flight or to come."""
        await self.queue.forget(name)
        self._dispatched.discard(name)

    # -- the step ------------------------------------------------------------------------------

    async def _step(self, name: str) -> float | None:
        body = self.bodies.get(name)
        if body is None or not active(body):
            return None
        observed = Observed(list(self.jobs.get(name, ()))) if self.jobs is not None else None
        if name not in self._dispatched:
            self._dispatched.add(name)
            try:
                if await self.reconciler.dispatch(body, observed):
                    return 0.0  # the rest as an ordinary step, after other new Jobs
            except Exception as exc:  # the full step below meets it again and handles it
                log.warning("could not create the worker Jobs first: %s", exc,
                            extra={"videojob": name})
        previous: Mapping[str, Any] = body.get("status") or {}
        try:
            new = await self.reconciler.step(body, observed)
        except Exception as exc:
            if not db_unavailable(exc):
                raise
            # An outage, not a bug: retried without a traceback per attempt.
            log.warning("the database is unavailable; retrying in %s s", DB_RETRY_S,
                        extra={"videojob": name})
            return DB_RETRY_S
        patch = changed(new, previous)
        if patch:
            namespace = str(body["metadata"]["namespace"])
            async with self._patching:
                stored = await asyncio.to_thread(
                    self.kube.patch_videojob_status, namespace, name, patch)
            if stored is None:
                return None  # deleted meanwhile
            self._own[name] = _rv(stored)
            if _newer(stored, self.bodies.get(name)):
                self.bodies[name] = stored
        for event in events_for(previous, new):
            # Off the step's slot: on a burst, the next VideoJob's Jobs come first.
            task = asyncio.create_task(self._post(dict(body), event))
            self._posting.add(task)
            task.add_done_callback(self._posting.discard)
        return next_wake(new, poll_s=self.poll_s, resync_s=self.resync_s)

    async def _post(self, body: dict[str, Any], event: Event) -> None:
        try:
            await asyncio.to_thread(self.kube.post_event, body, event.type, event.reason,
                                    event.message)
        except Exception as exc:  # `kubectl describe` loses a line; the status has it
            log.warning("could not post an event: %s", exc,
                        extra={"videojob": body["metadata"].get("name")})
