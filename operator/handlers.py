"""kopf wiring: a watch that wakes VideoJobs, and their finalizer.

Handlers are small and delegate to :class:`~atproto_video.operator.driver.VideoJobDriver`,
which steps :class:`~atproto_video.operator.reconcile.VideoJobReconciler` when a VideoJob or
one of its worker Jobs changes (and at the intervals :func:`~atproto_video.operator.driver.
next_wake` names), instead of a kopf timer per VideoJob every second. It reads worker Jobs
from an in-memory index kept current by :class:`~atproto_video.operator.jobwatch.JobWatch`
(not kopf, whose per-event machinery is heavy for ~5 events per worker Job), and
Pods only when a Job failed or is slow to start, so a step normally costs no API call besides
its status patch. kopf's own state lives in annotations and ``status.kopf`` (declared with
``x-kubernetes-preserve-unknown-fields`` in the CRD).
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

from atproto_video.core.config import VideoConfig
from atproto_video.core.kube import FINALIZER, GROUP, LABEL_INSTANCE, PLURAL, VERSION
from atproto_video.operator.driver import VideoJobDriver

#: Waits between retries of one Kubernetes API request (watches included) that failed with a
#: connection error, 5xx, 403 or 429. kopf's default (1, 1, 2, 3, 5, 8, 13, 21) gives up after
#: about a minute and, after a restarted API server, left the watches waiting up to 13-21 s more
#: (a VideoJob created meanwhile was reconciled only then): here at most 2 s apart for the
#: first half-minute, then 5 s, for about 10 minutes in all (tests/faults/test_control_plane.py).
API_ERROR_BACKOFFS: tuple[float, ...] = (0.5, 1.0) + (2.0,) * 14 + (5.0,) * 114


def snapshot(body: kopf.Body) -> dict[str, Any]:
    """A plain copy of the top level; the nested dicts are the event's own and never mutated."""
    return dict(body)


class NoDiffBase(kopf.DiffBaseStorage):
    """No last-handled state: only on.delete handlers change anything, and they do not diff.

    kopf's default annotation cost one more PATCH (and its watch event) per new VideoJob.
    """

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        return None


def build_registry(cfg: VideoConfig, driver: VideoJobDriver) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()
    # Two releases in one namespace: each reconciles only the VideoJobs its API labelled.
    mine = {LABEL_INSTANCE: cfg.kube.instance} if cfg.kube.instance else None

    @kopf.on.startup(registry=registry)
    def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.persistence.finalizer = FINALIZER
        settings.persistence.diffbase_storage = NoDiffBase()
        settings.posting.level = logging.WARNING
        settings.networking.request_timeout = 30
        settings.networking.connect_timeout = 10
        settings.watching.server_timeout = 270
        settings.watching.client_timeout = 300
        settings.networking.error_backoffs = API_ERROR_BACKOFFS
        settings.execution.max_workers = 16

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        return kopf.login_via_client(**kwargs)

    # async, like every handler here: kopf runs a sync one in a thread, per event.
    @kopf.on.event(GROUP, VERSION, PLURAL, id="wake", registry=registry, labels=mine)
    async def videojob_event(body: kopf.Body, type: str | None, **_: Any) -> None:
        await driver.videojob_event(type, snapshot(body))

    @kopf.on.delete(GROUP, VERSION, PLURAL, id="cleanup", registry=registry, labels=mine)
    async def cleanup(body: kopf.Body, **_: Any) -> None:
        await driver.forget(str(body.get("metadata", {}).get("name") or ""))
        await driver.reconciler.delete(body)

    return registry
