"""The Bluesky app's side of the video flow, over real HTTP: tokens from the PDS, uploads, polls."""

from __future__ import annotations

import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from atproto_video.blob import cid_for_bytes
from tests.support.pds import LocalPDS, PDSAccount
from tests.support.service import ServiceProcess

UPLOAD = "app.bsky.video.uploadVideo"
STATUS = "app.bsky.video.getJobStatus"
LIMITS = "app.bsky.video.getUploadLimits"
UPLOAD_BLOB = "com.atproto.repo.uploadBlob"
SERVICE_DID = "did:web:video.test"  # ServiceProcess's default VIDEO_SERVICE_DID
TERMINAL = ("JOB_STATE_COMPLETED", "JOB_STATE_FAILED")


def upload_token(
    pds: LocalPDS, *, account: PDSAccount | None = None, lifetime_s: float = 1800
) -> str:
    """What social-app asks its PDS for before uploadVideo (aud = PDS DID, lxm = uploadBlob)."""
    return pds.service_auth(
        pds.pds_service_did, UPLOAD_BLOB, exp=time.time() + lifetime_s, account=account
    )


def limits_token(pds: LocalPDS, account: PDSAccount | None = None) -> str:
    return pds.service_auth(SERVICE_DID, LIMITS, exp=time.time() + 1800, account=account)


def upload(
    svc: ServiceProcess,
    did: str,
    token: str,
    body: bytes,
    *,
    ctype: str = "video/mp4",
    name: str = "a1b2c3.mp4",
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """POST uploadVideo with the query params social-app sends."""
    return httpx.post(
        f"{svc.url}/xrpc/{UPLOAD}",
        params={"did": did, "name": name},
        content=body,
        headers={"authorization": f"Bearer {token}", "content-type": ctype, **(headers or {})},
        timeout=60,
    )


def status(svc: ServiceProcess, job_id: str) -> dict[str, Any]:
    resp = httpx.get(f"{svc.url}/xrpc/{STATUS}", params={"jobId": job_id}, timeout=10)
    assert resp.status_code == 200, resp.text
    out: dict[str, Any] = resp.json()["jobStatus"]
    return out


def wait_for(
    svc: ServiceProcess, job_id: str, states: tuple[str, ...] = TERMINAL, timeout: float = 180
) -> tuple[dict[str, Any], list[tuple[str, int]]]:
    """Poll like the app (tokenless); the status once in ``states`` and every (state, progress)."""
    deadline = time.monotonic() + timeout
    seen: list[tuple[str, int]] = []
    while time.monotonic() < deadline:
        st = status(svc, job_id)
        seen.append((st["state"], st.get("progress", 0)))
        if st["state"] in states:
            return st, seen
        if st["state"] in TERMINAL:
            raise AssertionError(f"job ended {st} while waiting for {states}")
        time.sleep(0.1)
    raise AssertionError(
        f"job {job_id} not in {states} after {timeout}s: {seen[-5:]}\n{svc.logs()[-3000:]}"
    )


def fetch_mp4(svc: ServiceProcess, did: str, cid: str) -> bytes:
    resp = httpx.get(f"{svc.url}/watch/{quote(did, safe='')}/{cid}/video.mp4", timeout=30)
    assert resp.status_code == 200, resp.text
    assert cid_for_bytes(resp.content) == cid
    return resp.content


def job_row(svc: ServiceProcess, job_id: str) -> dict[str, Any]:
    with sqlite3.connect(svc.data_dir / "video.sqlite3") as conn:
        conn.row_factory = sqlite3.Row
        row = conn.execute("SELECT * FROM video_job WHERE id = ?", (job_id,)).fetchone()
    assert row is not None
    return dict(row)


def make_video(
    path: Path, tag: str, *, seconds: float = 1, size: str = "320x180", fmt: str = "mp4"
) -> bytes:
    """A short test clip; ``tag`` goes into the metadata so every clip has distinct bytes."""
    codecs = {
        "mp4": ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac"],
        "mov": ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac"],
        "webm": [
            "-c:v",
            "libvpx-vp9",
            "-deadline",
            "realtime",
            "-cpu-used",
            "8",
            "-c:a",
            "libopus",
        ],
        "mpeg": ["-c:v", "mpeg2video", "-c:a", "mp2", "-f", "mpeg"],
        "gif": ["-an", "-c:v", "gif"],
    }[fmt]
    argv = [
        "ffmpeg",
        "-hide_banner",
        "-loglevel",
        "error",
        "-y",
        "-f",
        "lavfi",
        "-i",
        f"testsrc2=size={size}:rate=25:duration={seconds}",
    ]
    if fmt != "gif":
        argv += ["-f", "lavfi", "-i", f"sine=frequency=330:duration={seconds}"]
    argv += [*codecs, "-metadata", f"title={tag}", "-shortest", str(path)]
    subprocess.run(argv, check=True)
    return path.read_bytes()
