"""kopf wiring: a short timer per unfinished VideoJob, watch-fed indices, a finalizer.

Handlers are small and delegate to :class:`~atproto_video.operator.reconcile.VideoJobReconciler`.
The timer (``VIDEO_K8S_POLL_INTERVAL_S``, default 1 s) runs only while the VideoJob's status is
not terminal, so finished jobs cost nothing. It reads worker Jobs from an in-memory index that
kopf keeps current from a watch, and Pods only when a Job failed or is slow to start, so a tick
normally costs no API call (listing both per job per second saturated the operator at 100
jobs). The status is patched only where it changed. kopf's own state lives in annotations and
``status.kopf`` (declared with ``x-kubernetes-preserve-unknown-fields`` in the CRD).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import kopf

from atproto_video.core.config import VideoConfig
from atproto_video.core.dbfaults import db_unavailable
from atproto_video.core.jobs import TERMINAL
from atproto_video.core.kube import GROUP, LABEL_INSTANCE, PLURAL, VERSION, videojob_name
from atproto_video.operator.crd import FINALIZER
from atproto_video.operator.events import events_for
from atproto_video.operator.reconcile import Observed, VideoJobReconciler
from atproto_video.operator.templates import LABEL_JOB_ID

#: Waits between retries of one Kubernetes API request (watches included) that failed with a
#: connection error, 5xx, 403 or 429. kopf's default (1, 1, 2, 3, 5, 8, 13, 21) gives up after
#: about a minute and, after a restarted API server, left the watches waiting up to 13-21 s more
#: (a VideoJob created meanwhile was reconciled only then): here at most 2 s apart for the
#: first half-minute, then 5 s, for about 10 minutes in all (tests/faults/test_control_plane.py).
API_ERROR_BACKOFFS: tuple[float, ...] = (0.5, 1.0) + (2.0,) * 14 + (5.0,) * 114


def active(status: kopf.Status, **_: Any) -> bool:
    """Timers run only for VideoJobs whose mirrored state is not terminal."""
    return status.get("state") not in TERMINAL


def changed(new: dict[str, Any], old: Mapping[str, Any]) -> dict[str, Any]:
    """The status keys whose value differs: an unchanged status costs no PATCH."""
    return {k: v for k, v in new.items() if old.get(k) != v}


def snapshot(body: kopf.Body) -> dict[str, Any]:
    """A plain copy of the top level; the nested dicts are the event's own and never mutated."""
    return dict(body)


def build_registry(cfg: VideoConfig, reconciler: VideoJobReconciler) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()
    # Two releases in one namespace: each reconciles only the VideoJobs its API labelled.
    mine = {LABEL_INSTANCE: cfg.kube.instance} if cfg.kube.instance else None

    @kopf.on.startup(registry=registry)
    def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.persistence.finalizer = FINALIZER
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

    @kopf.index("batch", "v1", "jobs", id="worker_jobs", labels={LABEL_JOB_ID: kopf.PRESENT},
                registry=registry)
    def worker_jobs(body: kopf.Body, labels: kopf.Labels, **_: Any) -> dict[str, Any]:
        return {labels[LABEL_JOB_ID]: snapshot(body)}

    @kopf.timer(GROUP, VERSION, PLURAL, id="reconcile", registry=registry, labels=mine,
                interval=cfg.kube.poll_interval_s, when=active, backoff=2.0)
    async def reconcile(body: kopf.Body, spec: kopf.Spec, status: kopf.Status,
                        patch: kopf.Patch, **kwargs: Any) -> None:
        # kopf passes an index as a keyword argument named after its handler id.
        jobs: kopf.Index[str, dict[str, Any]] = kwargs["worker_jobs"]
        key = videojob_name(str(spec.get("jobId") or ""))
        observed = Observed(list(jobs.get(key, ())))
        try:
            new = await reconciler.step(body, observed)
        except Exception as exc:
            if not db_unavailable(exc):
                raise
            # An outage, not a bug: retried at the next tick without a traceback per tick.
            raise kopf.TemporaryError("the database is unavailable", delay=2.0) from exc
        for name, value in changed(new, status).items():
            patch.status[name] = value
        for event in events_for(status, new):
            kopf.event(body, type=event.type, reason=event.reason, message=event.message)

    @kopf.on.delete(GROUP, VERSION, PLURAL, id="cleanup", registry=registry, labels=mine)
    async def cleanup(body: kopf.Body, **_: Any) -> None:
        await reconciler.delete(body)

    return registry
