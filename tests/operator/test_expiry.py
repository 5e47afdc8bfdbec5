"""Finished VideoJobs expire after the TTL; running ones and other releases' never do."""

from __future__ import annotations

import datetime as dt
from typing import Any

from atproto_video.core.config import VideoConfig
from atproto_video.operator.expiry import VideoJobExpiry, expired

NOW = dt.datetime(2026, 1, 2, 12, 0, tzinfo=dt.UTC)


def vj(name: str, state: str, finished: str | None, instance: str = "video") -> dict[str, Any]:
    status: dict[str, Any] = {"state": state}
    if finished:
        status["completionTime"] = finished
    return {"metadata": {"name": name, "labels": {"video.atproto.dev/instance": instance}},
            "status": status}


ITEMS = [
    vj("old-done", "JOB_STATE_COMPLETED", "2026-01-01T11:00:00Z"),
    vj("old-failed", "JOB_STATE_FAILED", "2026-01-01T10:00:00Z"),
    vj("fresh-done", "JOB_STATE_COMPLETED", "2026-01-02T11:00:00Z"),
    vj("running", "JOB_STATE_ENCODING", None),
    vj("other-release", "JOB_STATE_COMPLETED", "2026-01-01T09:00:00Z", instance="other"),
    {"metadata": {"name": "no-status"}},
]


def test_only_finished_videojobs_past_the_ttl_expire() -> None:
    assert expired(ITEMS, ttl_s=86_400, now=NOW, instance="video") == ["old-done", "old-failed"]
    assert "other-release" in expired(ITEMS, ttl_s=86_400, now=NOW)  # no instance: all


class Kube:
    def __init__(self) -> None:
        self.deleted: list[str] = []

    def list_videojobs(self, namespace: str) -> list[dict[str, Any]]:
        return ITEMS

    def delete_videojob(self, namespace: str, name: str) -> None:
        self.deleted.append(name)


def test_the_sweep_deletes_through_the_api() -> None:
    cfg = VideoConfig.from_env({"VIDEO_SERVICE_DID": "did:web:video.test",
                                "VIDEO_K8S_INSTANCE": "video"})
    assert cfg.kube.videojob_ttl_s == 86_400
    kube = Kube()
    assert VideoJobExpiry(cfg, kube, clock=lambda: NOW).once() == ["old-done", "old-failed"]  # type: ignore[arg-type]
    assert kube.deleted == ["old-done", "old-failed"]
