"""What request handlers share: config, the job store, storage, the verifier and the executor."""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field, replace
from typing import Any

from sqlalchemy import text

from atproto_video.api.auth import ServiceAuthVerifier
from atproto_video.api.errors import NotFound
from atproto_video.core.config import VideoConfig
from atproto_video.core.jobs import JobStore, Quota
from atproto_video.core.lexicon import JobState, JobStatus, UploadLimits
from atproto_video.core.parthash import OrderedHashes
from atproto_video.core.quota import QuotaLedger
from atproto_video.core.sessions import SessionStore
from atproto_video.core.storage import Playback, Storage
from atproto_video.executor import Executor

#: What new_job_id makes (160 bits as hex): anything else in a /watch/ URL is not a job id.
_JOB_ID = re.compile(r"^[0-9a-f]{40}$")


@dataclass
class AppContext:
    cfg: VideoConfig
    store: JobStore
    storage: Storage
    verifier: ServiceAuthVerifier
    executor: Executor
    ledger: QuotaLedger
    sessions: SessionStore
    hashes: OrderedHashes = field(default_factory=OrderedHashes)

    @property
    def quota(self) -> Quota:
        svc = self.cfg.service
        return Quota(svc.daily_video_limit, svc.daily_byte_limit, svc.max_open_uploads)

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

    async def playback(self, did: str, cid: str, name: str) -> Playback | None:
        """A completed job's outputs by CID, or (``cid`` being a job id) a job's outputs so
        far: the master playlist lists renditions as they complete, before the job does."""
        job = await asyncio.to_thread(self.store.find_completed_by_cid, did, cid)
        if job is not None:
            return await asyncio.to_thread(self.storage.playback, job.id, name)
        job = await asyncio.to_thread(self.store.get, cid) if _JOB_ID.match(cid) else None
        if job is None or job.did != did or job.state is JobState.FAILED:
            return None
        found = await asyncio.to_thread(self.storage.playback, job.id, name)
        return None if found is None else replace(found, changing=True)

    def did_document(self) -> dict[str, Any] | None:
        did = self.cfg.service.did_bare
        if not did.startswith("did:web:"):
            return None
        endpoint = self.cfg.service.public_url or f"https://{did.removeprefix('did:web:')}"
        return {
            "@context": ["https://www.w3.org/ns/did/v1"],
            "id": did,
            "service": [
                {"id": "#bsky_video", "type": "BskyVideoService", "serviceEndpoint": endpoint}
            ],
        }
