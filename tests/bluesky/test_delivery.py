"""deliver(): the states after ENCODED, against a real database and a scripted PDS on loopback."""

from __future__ import annotations

import datetime as dt
import os
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from atproto_video.core.blob import blob_for_file, blob_ref
from atproto_video.core.config import PdsSettings, Secrets, ServiceSettings, VideoConfig
from atproto_video.core.delivery import deliver
from atproto_video.core.jobs import Job, JobStore, NewJob, new_job_id
from atproto_video.core.lexicon import JobState
from atproto_video.core.metrics import REGISTRY
from atproto_video.core.pds import RetryPolicy
from atproto_video.core.tokens import TokenCipher
from tests.bluesky.scripted import Answer, ScriptedPDS
from tests.support.identity import Identity

pytestmark = pytest.mark.anyio
UPLOADER = Identity("did:plc:deliverytest", pds_endpoint="http://localhost:2583")
TOKEN = UPLOADER.token("did:web:localhost", "com.atproto.repo.uploadBlob", exp=time.time() + 1800)
FAST = RetryPolicy(timeout_s=5, initial_s=0.01, max_s=0.05, min_remaining_s=0.5)
KEY = os.urandom(32)


class RecordingStore(JobStore):
    """The real store, also keeping every (state, progress) advance asked for."""

    def __init__(self, engine: Engine) -> None:
        super().__init__(engine)
        self.steps: list[tuple[str, int]] = []

    def advance(self, job_id: str, state: JobState, progress: int = 0, **kw: Any) -> bool:
        moved = super().advance(job_id, state, progress, **kw)
        if moved:
            self.steps.append((state.value, progress))
        return moved


@pytest.fixture
def store(engine: Engine) -> RecordingStore:
    return RecordingStore(engine)


@pytest.fixture
def cfg(tmp_path: Path) -> VideoConfig:
    return VideoConfig(
        ServiceSettings(did="did:web:video.test", data_dir=tmp_path,
                        allow_private_endpoints=True),
        secrets=Secrets(token_key=KEY),
    )


@pytest.fixture
def mp4(tmp_path: Path) -> Path:
    path = tmp_path / "video.mp4"
    path.write_bytes(os.urandom(3 << 20))  # deliver only hashes and sends it
    return path


@pytest.fixture
def scripted() -> Iterator[ScriptedPDS]:
    server = ScriptedPDS([])
    yield server
    server.stop()


def encoded_job(
    store: RecordingStore,
    pds_url: str | None,
    *,
    key: bytes = KEY,
    expires_in: float | None = 1800,
    token: bytes | None = None,
    token_text: str = TOKEN,
) -> Job:
    """``expires_in=None``: a row written without token_expires_at (the token's exp counts)."""
    job_id = new_job_id()
    sealed = TokenCipher(key).encrypt(token_text, job_id=job_id) if pds_url else None
    job = store.create(
        NewJob(
            id=job_id,
            did="did:plc:deliverytest",
            source_size=10,
            content_hash=os.urandom(32).hex(),
            pds_url=pds_url,
            upload_token=token if token is not None else sealed,
            token_expires_at=dt.datetime.now(dt.UTC) + dt.timedelta(seconds=expires_in)
            if pds_url and expires_in is not None
            else None,
        ),
        None,
    )
    store.advance(job.id, JobState.ENCODING, 100)
    store.steps.clear()
    return job


async def test_bluesky_job_ends_with_the_pds_blob(
    store: RecordingStore, cfg: VideoConfig, mp4: Path, scripted: ScriptedPDS
) -> None:
    local = blob_for_file(mp4)
    scripted.answers = [Answer(500, {"error": "InternalServerError"}), Answer(200, {"blob": local})]
    job = encoded_job(store, scripted.url)
    retries = REGISTRY.get_sample_value("atproto_video_pds_upload_retries_total") or 0.0
    assert await deliver(store, job, mp4, cfg=cfg, retry=FAST) is True
    # The 500 was retried, and the metric says so.
    assert REGISTRY.get_sample_value("atproto_video_pds_upload_retries_total") == retries + 1
    done = store.get(job.id)
    assert done is not None and done.state == JobState.COMPLETED
    assert done.blob == local and done.upload_token is None and done.cid == local["ref"]["$link"]
    assert (
        len(scripted.seen) == 2 and scripted.seen[-1].headers["authorization"] == f"Bearer {TOKEN}"
    )
    assert scripted.seen[-1].body == (mp4).read_bytes()
    states = [s for s, _ in store.steps]
    assert states[:3] == ["JOB_STATE_ENCODED", "JOB_STATE_SCANNING", "JOB_STATE_SCANNED"]
    assert states[-1] == "JOB_STATE_UPLOADED"
    uploading = [p for s, p in store.steps if s == "JOB_STATE_UPLOADING"]
    assert uploading[0] == 0 and uploading[-1] == 100 and uploading == sorted(uploading)


async def test_seed_job_keeps_the_local_blob_and_calls_no_pds(
    store: RecordingStore, cfg: VideoConfig, mp4: Path
) -> None:
    job = encoded_job(store, None)
    assert await deliver(store, job, mp4, cfg=cfg) is True
    done = store.get(job.id)
    assert done is not None and done.blob == blob_for_file(mp4)
    assert "JOB_STATE_UPLOADING" not in [s for s, _ in store.steps]


async def test_a_different_cid_from_the_pds_fails_the_job(
    store: RecordingStore, cfg: VideoConfig, mp4: Path, scripted: ScriptedPDS
) -> None:
    other = blob_ref("bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy", "video/mp4", 5)
    scripted.answers = [Answer(200, {"blob": other})]
    job = encoded_job(store, scripted.url)
    assert await deliver(store, job, mp4, cfg=cfg, retry=FAST) is False
    done = store.get(job.id)
    assert done is not None and done.state == JobState.FAILED
    assert done.failure_code == "pds_upload_failure"
    assert done.error is not None and "bafkreigh2akis" in done.error
    assert done.blob is None and done.upload_token is None


@pytest.mark.parametrize(
    ("answer", "code", "text"),
    [
        (
            Answer(413, {"error": "PayloadTooLarge"}),
            "pds_upload_unsupported_blob_size",
            "too large",
        ),
        (
            Answer(401, {"error": "ExpiredToken", "message": "Token has expired"}),
            "pds_upload_failure",
            "HTTP 401 ExpiredToken: Token has expired",
        ),
    ],
)
async def test_pds_refusals(
    store: RecordingStore,
    cfg: VideoConfig,
    mp4: Path,
    scripted: ScriptedPDS,
    answer: Answer,
    code: str,
    text: str,
) -> None:
    scripted.answers = [answer]
    job = encoded_job(store, scripted.url)
    assert await deliver(store, job, mp4, cfg=cfg, retry=FAST) is False
    done = store.get(job.id)
    assert done is not None and done.failure_code == code
    assert done.error is not None and text in done.error and TOKEN not in done.error
    assert len(scripted.seen) == 1


async def test_token_expired_during_encoding(
    store: RecordingStore, cfg: VideoConfig, mp4: Path, scripted: ScriptedPDS
) -> None:
    job = encoded_job(store, scripted.url, expires_in=-1)
    assert await deliver(store, job, mp4, cfg=cfg, retry=FAST) is False
    done = store.get(job.id)
    assert done is not None and done.failure_code == "pds_upload_failure"
    assert done.error == "the upload token expired before the video was ready to upload to the PDS"
    assert scripted.seen == []


async def test_without_a_stored_expiry_the_token_exp_is_the_deadline(
    store: RecordingStore, cfg: VideoConfig, mp4: Path, scripted: ScriptedPDS
) -> None:
    scripted.answers = [Answer(200, {"blob": blob_for_file(mp4)})]
    job = encoded_job(store, scripted.url, expires_in=None)
    assert job.token_expires_at is None
    assert await deliver(store, job, mp4, cfg=cfg, retry=FAST) is True
    assert len(scripted.seen) == 1
    lxm = "com.atproto.repo.uploadBlob"
    for token_text in (
        UPLOADER.token("did:web:localhost", lxm, exp=time.time() - 5),  # over
        UPLOADER.token("did:web:localhost", lxm, extra={"exp": "later"}),  # no usable exp
        "not-a-jwt",
    ):
        job = encoded_job(store, scripted.url, expires_in=None, token_text=token_text)
        assert await deliver(store, job, mp4, cfg=cfg, retry=FAST) is False
        done = store.get(job.id)
        assert done is not None and done.error is not None and "expired" in done.error
    assert len(scripted.seen) == 1  # nothing sent with those


async def test_a_changed_key_fails_cleanly(
    store: RecordingStore, cfg: VideoConfig, mp4: Path, scripted: ScriptedPDS
) -> None:
    job = encoded_job(store, scripted.url, key=os.urandom(32))
    assert await deliver(store, job, mp4, cfg=cfg, retry=FAST) is False
    done = store.get(job.id)
    assert done is not None and done.failure_code == "pds_upload_failure"
    assert done.error is not None and "VIDEO_TOKEN_KEY" in done.error
    assert scripted.seen == []


async def refuse_everything(path: Path) -> str | None:
    return f"refused {path.name} by policy"


async def test_scan_hook_from_config(
    store: RecordingStore, cfg: VideoConfig, mp4: Path, scripted: ScriptedPDS
) -> None:
    hook = "tests.bluesky.test_delivery:refuse_everything"
    hooked = replace(cfg, pds=PdsSettings(scan_hook=hook))
    job = encoded_job(store, scripted.url)
    assert await deliver(store, job, mp4, cfg=hooked) is False
    done = store.get(job.id)
    assert done is not None and done.state == JobState.FAILED
    assert (done.failure_code, done.error) == ("validation_failure", "refused video.mp4 by policy")
    assert "JOB_STATE_SCANNING" in [s for s, _ in store.steps] and scripted.seen == []

    broken = replace(cfg, pds=PdsSettings(scan_hook="no.such.module:scan"))
    job = encoded_job(store, scripted.url)
    assert await deliver(store, job, mp4, cfg=broken) is False
    failed = store.get(job.id)
    assert failed is not None and failed.failure_code == "generic_failure"
