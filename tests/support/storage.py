"""Putting an upload into a storage backend the way the API does: through ``receive``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from atproto_video.core.storage import Storage, StoredUpload


async def receive_bytes(storage: Storage, job_id: str, data: bytes) -> StoredUpload:
    async def chunks() -> AsyncIterator[bytes]:
        for i in range(0, len(data), 1 << 16):
            yield data[i : i + (1 << 16)]

    return await storage.receive(job_id, chunks(), max_bytes=max(1, len(data)))


def put_upload(storage: Storage, job_id: str, data: bytes) -> StoredUpload:
    """From synchronous tests (no event loop running)."""
    return asyncio.run(receive_bytes(storage, job_id, data))
