"""What the benchmarks share: a running service with a signed-in test identity, and timing."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.support.didserver import DidServer
from tests.support.identity import Identity, new_plc_did
from tests.support.service import ServiceProcess
from tests.support.xrpc import SERVICE_DID, UPLOAD, wait_for_job


@dataclass
class Bench:
    """A service process plus a DID server and an identity that may upload."""

    workdir: Path
    env: dict[str, str] = field(default_factory=dict)
    dids: DidServer = field(init=False)
    service: ServiceProcess = field(init=False)
    who: Identity = field(init=False)

    def __enter__(self) -> Bench:
        self.dids = DidServer().start()
        self.who = Identity(new_plc_did())
        self.dids.publish(self.who)
        self.service = ServiceProcess(
            self.workdir,
            {
                "VIDEO_DID_PLC_URL": self.dids.url,
                "VIDEO_DAILY_BYTE_LIMIT": str(10**12),
                "VIDEO_DAILY_VIDEO_LIMIT": "100000",
                "VIDEO_MAX_UPLOAD_BYTES": str(400_000_000),
                "VIDEO_LOG_LEVEL": "warning",
                **self.env,
            },
        ).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.service.stop()
        self.dids.stop()

    def upload(self, content: Any, length: int | None = None) -> dict[str, Any]:
        headers = {
            "authorization": f"Bearer {self.who.token(SERVICE_DID, UPLOAD)}",
            "content-type": "video/mp4",
        }
        if length is not None:
            headers["content-length"] = str(length)
        resp = httpx.post(
            f"{self.service.url}/xrpc/{UPLOAD}",
            params={"did": self.who.did},
            content=content,
            headers=headers,
            timeout=600,
        )
        resp.raise_for_status()
        body: dict[str, Any] = resp.json()
        return body

    def wait(self, job_id: str, timeout: float = 1800, poll: float = 0.05) -> dict[str, Any]:
        """The job's final status (COMPLETED or FAILED)."""
        status, _ = wait_for_job(self.service, job_id, timeout=timeout, interval=poll)
        return status


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process and its reaped children (ffmpeg), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = sum(int(fields[i]) for i in (11, 12, 13, 14))
    return ticks / os.sysconf("SC_CLK_TCK")


@contextmanager
def stopwatch() -> Iterator[list[float]]:
    out: list[float] = []
    start = time.perf_counter()
    try:
        yield out
    finally:
        out.append(time.perf_counter() - start)
