"""The Bluesky app's side of the video flow, over real HTTP: tokens from the PDS, uploads, polls."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from atproto_video.core.blob import cid_for_bytes
from tests.support.media import AAC, H264, make_clip
from tests.support.pds import LocalPDS, PDSAccount
from tests.support.service import ServiceProcess
from tests.support.xrpc import LIMITS, SERVICE_DID

UPLOAD_BLOB = "com.atproto.repo.uploadBlob"


def upload_token(
    pds: LocalPDS, *, account: PDSAccount | None = None, lifetime_s: float = 1800
) -> str:
    """What social-app asks its PDS for before uploadVideo (aud = PDS DID, lxm = uploadBlob)."""
    return pds.service_auth(
        pds.pds_service_did, UPLOAD_BLOB, exp=time.time() + lifetime_s, account=account
    )


def limits_token(pds: LocalPDS, account: PDSAccount | None = None) -> str:
    return pds.service_auth(SERVICE_DID, LIMITS, exp=time.time() + 1800, account=account)


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


#: Video and audio encoder arguments per upload format the app may send.
FORMATS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "mp4": (H264, AAC),
    "mov": (H264, AAC),
    "webm": (("-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8"),
             ("-c:a", "libopus")),
    "mpeg": (("-c:v", "mpeg2video", "-f", "mpeg"), ("-c:a", "mp2")),
    "gif": (("-c:v", "gif"), ()),
}


def make_video(
    path: Path, tag: str, *, seconds: float = 1, size: str = "320x180", fmt: str = "mp4"
) -> bytes:
    """A short test clip's bytes; ``tag`` goes into the metadata so every clip is distinct."""
    video, audio = FORMATS[fmt]
    make_clip(path, seconds=seconds, size=size, rate=25, audio=fmt != "gif", video=video,
              audio_codec=audio, extra=("-metadata", f"title={tag}"))
    return path.read_bytes()
