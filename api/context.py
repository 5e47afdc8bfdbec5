"""What request handlers share: config, the job store, storage, the verifier and the executor."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import text

from atproto_video.api.auth import ServiceAuthVerifier
from atproto_video.api.errors import NotFound
from atproto_video.config import VideoConfig
from atproto_video.executor import Executor
from atproto_video.jobs import JobStore, Quota
from atproto_video.lexicon import JobStatus, UploadLimits
from atproto_video.storage import LocalStorage


@dataclass
class AppContext:
    cfg: VideoConfig
    store: JobStore
    storage: LocalStorage
    verifier: ServiceAuthVerifier
    executor: Executor

    @property
    def quota(self) -> Quota:
        return Quota(self.cfg.daily_video_limit, self.cfg.daily_byte_limit)

    async def job_status(self, job_id: str) -> JobStatus:
        if len(job_id) > 64:
            raise NotFound("Job not found", name="NotFound")
        status = self.store.cached_status(job_id)
        if status is None:
            status = await asyncio.to_thread(self.store.status, job_id)
        if status is None:
            raise NotFound("Job not found", name="NotFound")
        return status

    async def upload_limits(self, did: str) -> UploadLimits:
        return await asyncio.to_thread(self.store.limits, did, self.quota)

    async def check_database(self) -> None:
        def ping() -> None:
            with self.store.engine.connect() as conn:
                conn.execute(text("SELECT 1"))

        await asyncio.to_thread(ping)

    async def output_file(self, did: str, cid: str, rel: str) -> Path | None:
        job = await asyncio.to_thread(self.store.find_completed_by_cid, did, cid)
        if job is None:
            return None
        return self.storage.output_file(job.id, rel)

    def did_document(self) -> dict[str, Any] | None:
        did = self.cfg.service_did_bare
        if not did.startswith("did:web:"):
            return None
        endpoint = self.cfg.public_url or f"https://{did.removeprefix('did:web:')}"
        return {
            "@context": ["https://www.w3.org/ns/did/v1"],
            "id": did,
            "service": [
                {"id": "#bsky_video", "type": "BskyVideoService", "serviceEndpoint": endpoint}
            ],
        }
