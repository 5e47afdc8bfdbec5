"""Finished VideoJobs are removed ``VIDEO_K8S_VIDEOJOB_TTL_S`` after they end, as Jobs are
after ``ttlSecondsAfterFinished``: ``kubectl get vj`` shows current work, not history (the
database keeps the record). Deleting one runs the operator's finalizer, which keeps the
published outputs of a completed job."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable
from typing import Any

from atproto_video.core.config import VideoConfig
from atproto_video.core.jobs import TERMINAL
from atproto_video.core.kube import LABEL_INSTANCE, KubeAPI
from atproto_video.operator.failures import parse_time
from atproto_video.operator.periodic import every

log = logging.getLogger(__name__)


def expired(items: list[dict[str, Any]], *, ttl_s: float, now: dt.datetime,
            instance: str = "") -> list[str]:
    """Names of the terminal VideoJobs (of ``instance``, if set) finished over ``ttl_s`` ago."""
    out = []
    for vj in items:
        meta = vj.get("metadata") or {}
        if instance and (meta.get("labels") or {}).get(LABEL_INSTANCE) != instance:
            continue
        status = vj.get("status") or {}
        finished = parse_time(str(status.get("completionTime") or ""))
        if status.get("state") in TERMINAL and finished is not None and (
                now - finished).total_seconds() > ttl_s:
            out.append(str(meta["name"]))
    return out


class VideoJobExpiry:
    def __init__(self, cfg: VideoConfig, kube: KubeAPI,
                 clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)) -> None:
        self.cfg = cfg
        self.kube = kube
        self.clock = clock

    def once(self) -> list[str]:
        namespace = self.cfg.kube.namespace
        names = expired(self.kube.list_videojobs(namespace), ttl_s=self.cfg.kube.videojob_ttl_s,
                        now=self.clock(), instance=self.cfg.kube.instance)
        for name in names:
            self.kube.delete_videojob(namespace, name)
            log.info("finished VideoJob expired", extra={"job_id": name})
        return names

    async def run(self, stop: asyncio.Event) -> None:
        if self.cfg.kube.videojob_ttl_s:  # 0: keep them
            await every(max(self.cfg.kube.reconcile_interval_s, 30), stop, self.once,
                        "could not expire finished VideoJobs")
