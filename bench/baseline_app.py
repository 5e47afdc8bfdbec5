"""The status benchmark's baseline: a bare FastAPI endpoint returning a constant JSON body."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

app = FastAPI()

BODY = {
    "jobStatus": {
        "jobId": "0" * 40,
        "did": "did:plc:ewvi7nxzyoun6zhxrhs64oiz",
        "state": "JOB_STATE_COMPLETED",
        "progress": 100,
    }
}


@app.get("/xrpc/app.bsky.video.getJobStatus")
async def status() -> dict[str, Any]:
    return BODY
