"""Against a PDS with legacy-format DID documents and a small blob limit: what the PDS refuses,
what this service refuses (private PDS endpoints without the dev setting), and seed mode.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from atproto_video.core.blob import blob_cid, blob_for_file
from tests.bluesky.conftest import bluesky_service
from tests.bluesky.flow import (
    fetch_mp4,
    job_row,
    limits_token,
    make_video,
    upload_token,
)
from tests.support.pds import LocalPDS, XrpcError, js_client_call
from tests.support.service import ServiceProcess, job_count
from tests.support.xrpc import UPLOAD, upload, wait_for_job

pytestmark = pytest.mark.pds
BLOB_LIMIT = 100_000


@pytest.fixture(scope="module")
def legacy_pds() -> Iterator[LocalPDS]:
    with LocalPDS(plc_doc_format="legacy", blob_upload_limit=BLOB_LIMIT) as net:
        yield net


@pytest.fixture(scope="module")
def legacy_service(
    legacy_pds: LocalPDS, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceProcess]:
    svc = bluesky_service(tmp_path_factory.mktemp("legacy-service"), legacy_pds)
    yield svc
    svc.stop()


@pytest.fixture(scope="module")
def strict_service(
    legacy_pds: LocalPDS, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceProcess]:
    """As deployed: user-supplied endpoints must be public https (the PLC URL is the operator's)."""
    svc = bluesky_service(
        tmp_path_factory.mktemp("strict-service"),
        legacy_pds,
        VIDEO_ALLOW_PRIVATE_ENDPOINTS="0",
    )
    yield svc
    svc.stop()


def output_mp4(svc: ServiceProcess, job_id: str) -> Path:
    return svc.data_dir / "storage" / "jobs" / job_id / "out" / "video.mp4"


def test_legacy_did_document_flow(
    legacy_pds: LocalPDS, legacy_service: ServiceProcess, media: Path
) -> None:
    vm = legacy_pds.did_document()["verificationMethod"][0]
    assert vm["type"] == "EcdsaSecp256k1VerificationKey2019"  # the legacy form really is served
    body = make_video(media / "legacy.mp4", "legacy", seconds=1, size="320x180")
    resp = upload(legacy_service, legacy_pds.did, upload_token(legacy_pds), body)
    assert resp.status_code == 200, resp.text
    done, _ = wait_for_job(legacy_service, resp.json()["jobId"])
    assert done["state"] == "JOB_STATE_COMPLETED", done
    assert done["blob"]["size"] <= BLOB_LIMIT
    legacy_pds.create_post_with_video(done["blob"])
    assert legacy_pds.get_blob(blob_cid(done["blob"])) == fetch_mp4(
        legacy_service, legacy_pds.did, blob_cid(done["blob"])
    )


def test_pds_blob_limit_fails_with_unsupported_blob_size(
    legacy_pds: LocalPDS, legacy_service: ServiceProcess, media: Path
) -> None:
    body = make_video(media / "big.mp4", "too-big", seconds=3, size="854x480")
    resp = upload(legacy_service, legacy_pds.did, upload_token(legacy_pds), body)
    assert resp.status_code == 200, resp.text
    job_id = resp.json()["jobId"]
    done, _ = wait_for_job(legacy_service, job_id)
    assert done["state"] == "JOB_STATE_FAILED"
    assert not output_mp4(legacy_service, job_id).exists()  # a failed job keeps no outputs
    assert done["failureCode"] == "pds_upload_unsupported_blob_size"
    assert "too large" in done["error"] and "PayloadTooLarge" in done["error"]
    assert "blob" not in done
    assert job_row(legacy_service, job_id)["upload_token"] is None


def test_private_pds_endpoint_is_refused_before_storing(
    legacy_pds: LocalPDS, strict_service: ServiceProcess, media: Path
) -> None:
    assert legacy_pds.pds_url.startswith("http://localhost:")
    body = make_video(media / "private.mp4", "private")
    resp = upload(strict_service, legacy_pds.did, upload_token(legacy_pds), body)
    assert resp.status_code == 400, resp.text
    err = resp.json()
    assert err["error"] == "InvalidRequest"
    assert err["message"].startswith("the PDS in your DID document cannot be used")
    assert "https" in err["message"]
    assert job_count(strict_service, legacy_pds.did) == 0
    jobs = strict_service.data_dir / "storage" / "jobs"
    assert not jobs.exists() or list(jobs.iterdir()) == []


def test_seed_mode_never_calls_the_pds(
    legacy_pds: LocalPDS, strict_service: ServiceProcess, media: Path
) -> None:
    """A seed-mode token (aud = this service) keeps the locally computed blob ref."""
    body = make_video(media / "seed.mp4", "seed", seconds=1.5, size="336x192")  # unique output
    token = legacy_pds.service_auth("did:web:video.test", UPLOAD, exp=time.time() + 600)
    with legacy_pds.pds_down("refuse"):
        resp = upload(strict_service, legacy_pds.did, token, body)
        assert resp.status_code == 200, resp.text
        job_id = resp.json()["jobId"]
        done, seen = wait_for_job(strict_service, job_id)
    assert done["state"] == "JOB_STATE_COMPLETED", done
    assert "JOB_STATE_UPLOADING" not in [s for s, _ in seen]
    assert done["blob"] == blob_for_file(output_mp4(strict_service, job_id))
    assert job_row(strict_service, job_id)["pds_url"] is None
    # The PDS never received it: a post embedding that blob is refused.
    with pytest.raises(XrpcError) as info:
        legacy_pds.create_post_with_video(done["blob"])
    assert info.value.status == 400, info.value


@pytest.fixture(scope="module")
def quota_service(
    legacy_pds: LocalPDS, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceProcess]:
    svc = bluesky_service(
        tmp_path_factory.mktemp("quota-service"),
        legacy_pds,
        VIDEO_DAILY_VIDEO_LIMIT="2",
        VIDEO_DAILY_BYTE_LIMIT="150000",
    )
    yield svc
    svc.stop()


def test_quota_errors_carry_the_exact_strings(
    legacy_pds: LocalPDS, quota_service: ServiceProcess
) -> None:
    """social-app matches these sentences in ``error``; Bluesky-mode uploads count like any."""
    did = legacy_pds.did

    def send(body: bytes) -> httpx.Response:
        return upload(quota_service, did, upload_token(legacy_pds), body)

    assert send(b"first " + b"\x00" * 100_000).status_code == 200  # not a video: still counted
    over_bytes = send(b"second " + b"\x00" * 100_000)
    assert over_bytes.status_code == 429
    assert over_bytes.json() == {
        "error": "User has exceeded daily upload bytes limit",
        "message": "User has exceeded daily upload bytes limit",
    }
    assert send(b"third " + b"\x00" * 1000).status_code == 200
    over_videos = js_client_call(
        "uploadVideo",
        quota_service.url,
        token=upload_token(legacy_pds),
        body=b"fourth" + b"\x00" * 1000,
        query={"did": did, "name": "x.mp4"},
    )
    assert over_videos["status"] == 429
    assert over_videos["error"] == "User has exceeded daily upload videos limit"
    limits = js_client_call("getUploadLimits", quota_service.url, token=limits_token(legacy_pds))
    assert limits["ok"] is True, limits
    assert limits["data"]["canUpload"] is False
    assert limits["data"]["error"] == "User has exceeded daily upload videos limit"
    assert job_count(quota_service, did) == 2
