"""Running jobs: in-process (embedded mode) or by creating VideoJob resources (cluster mode)."""

from __future__ import annotations

from typing import Protocol

from atproto_video.core.jobs import Job


class Executor(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def submit(self, job: Job) -> None:
        """Take a committed job; must not lose it even if processing cannot start now."""
        ...
