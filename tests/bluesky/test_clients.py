"""Two real client libraries parse the service's Bluesky-mode answers: @atproto/api (JS, its
lexicon-validating generated methods) and the Python ``atproto`` SDK (its generated models).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from atproto import Client, models

from atproto_video.core.blob import blob_cid
from tests.bluesky.flow import (
    fetch_mp4,
    limits_token,
    make_video,
    upload_token,
)
from tests.support.pds import LocalPDS, js_client_call
from tests.support.service import ServiceProcess
from tests.support.xrpc import wait_for_job

pytestmark = pytest.mark.pds


def test_atproto_api_js_client(
    pds: LocalPDS, service: ServiceProcess, media: Path, issued_tokens: list[str]
) -> None:
    limits = js_client_call("getUploadLimits", service.url, token=limits_token(pds))
    assert limits["ok"] is True, limits
    assert limits["data"]["canUpload"] is True and limits["data"]["remainingDailyVideos"] > 0

    body = make_video(media / "js.mp4", "js-client")
    token = upload_token(pds)
    issued_tokens.append(token)
    up = js_client_call(
        "uploadVideo",
        service.url,
        token=token,
        body=body,
        encoding="video/mp4",
        query={"did": pds.did, "name": "f3k2.mp4"},
    )
    assert up["ok"] is True, up
    job = up["data"]["jobStatus"]
    assert job["did"] == pds.did and up["data"]["jobId"] == job["jobId"]  # both shapes

    done, _ = wait_for_job(service, job["jobId"])
    assert done["state"] == "JOB_STATE_COMPLETED", done
    final = js_client_call("getJobStatus", service.url, params={"jobId": job["jobId"]})
    assert final["ok"] is True, final
    assert final["data"]["jobStatus"]["blob"] == done["blob"]
    pds.create_post_with_video(final["data"]["jobStatus"]["blob"])

    # The duplicate answer (error + message at the top level) still validates.
    token = upload_token(pds)
    issued_tokens.append(token)
    dup = js_client_call("uploadVideo", service.url, token=token, body=body)
    assert dup["ok"] is True, dup
    assert dup["data"]["jobStatus"]["jobId"] == job["jobId"]
    assert dup["data"]["error"] == "already_exists"

    # Errors come back as XRPC errors the client understands.
    bad = js_client_call("uploadVideo", service.url, token="a.b.c", body=b"x")
    assert bad["ok"] is False and bad["status"] == 401 and bad["invalidResponse"] is False
    assert bad["error"] == "BadJwt"
    missing = js_client_call("getJobStatus", service.url, params={"jobId": "0" * 40})
    assert (missing["ok"], missing["status"], missing["error"]) == (False, 404, "NotFound")


def test_python_atproto_sdk(
    pds: LocalPDS, service: ServiceProcess, media: Path, issued_tokens: list[str]
) -> None:
    client = Client(base_url=service.url)
    video = client.app.bsky.video

    limits = video.get_upload_limits(headers={"Authorization": f"Bearer {limits_token(pds)}"})
    assert isinstance(limits, models.AppBskyVideoGetUploadLimits.Response)
    assert limits.can_upload is True and (limits.remaining_daily_videos or 0) > 0

    body = make_video(media / "py.mp4", "python-sdk")
    token = upload_token(pds)
    issued_tokens.append(token)
    up = video.upload_video(body, headers={"Authorization": f"Bearer {token}"})
    assert isinstance(up, models.AppBskyVideoUploadVideo.Response)
    job_id = up.job_status.job_id
    assert up.job_status.did == pds.did and up.job_status.state == "JOB_STATE_CREATED"

    done, _ = wait_for_job(service, job_id)
    res = video.get_job_status({"job_id": job_id})
    assert isinstance(res, models.AppBskyVideoGetJobStatus.Response)
    st = res.job_status
    assert st.state == "JOB_STATE_COMPLETED" and st.progress == 100 and st.job_id == job_id
    assert st.blob is not None and st.blob.mime_type == "video/mp4"
    # The SDK's BlobRef, dumped back, is the PDS's blob ref as the service returned it.
    assert st.blob.to_json_representation().model_dump(by_alias=True) == done["blob"]
    cid = str(st.blob.cid)
    assert cid == blob_cid(done["blob"]) and len(fetch_mp4(service, pds.did, cid)) == st.blob.size
    pds.create_post_with_video(st.blob.model_dump(by_alias=True))
