"""kopf wiring: a short timer per unfinished VideoJob, a finalizer, and operator settings.

Handlers are small and delegate to :class:`~atproto_video.operator.reconcile.VideoJobReconciler`.
The timer (``VIDEO_K8S_POLL_INTERVAL_S``, default 1 s) runs only while the VideoJob's status is
not terminal, so finished jobs cost nothing. kopf's own state lives in annotations and
``status.kopf`` (declared with ``x-kubernetes-preserve-unknown-fields`` in the CRD).
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

from atproto_video.config import VideoConfig
from atproto_video.jobs import TERMINAL
from atproto_video.operator.crd import FINALIZER, GROUP, PLURAL, VERSION
from atproto_video.operator.reconcile import VideoJobReconciler


def active(status: kopf.Status, **_: Any) -> bool:
    """Timers run only for VideoJobs whose mirrored state is not terminal."""
    return status.get("state") not in TERMINAL


def build_registry(cfg: VideoConfig, reconciler: VideoJobReconciler) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()

    @kopf.on.startup(registry=registry)
    def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.persistence.finalizer = FINALIZER
        settings.posting.level = logging.WARNING
        settings.networking.request_timeout = 30
        settings.networking.connect_timeout = 10
        settings.watching.server_timeout = 270
        settings.watching.client_timeout = 300
        settings.execution.max_workers = 16

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        return kopf.login_via_client(**kwargs)

    @kopf.timer(GROUP, VERSION, PLURAL, id="reconcile", registry=registry,
                interval=cfg.k8s_poll_interval_s, when=active, backoff=2.0)
    async def reconcile(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
        status = await reconciler.step(body)
        for key, value in status.items():
            patch.status[key] = value

    @kopf.on.delete(GROUP, VERSION, PLURAL, id="cleanup", registry=registry)
    async def cleanup(body: kopf.Body, **_: Any) -> None:
        await reconciler.delete(body)

    return registry
