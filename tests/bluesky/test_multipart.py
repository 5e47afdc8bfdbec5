"""The Bluesky flow through the multipart protocol: every call with a PDS-audience uploadBlob
token from the real PDS, then delivery of the MP4 to that PDS with the finishUpload token.

The installed @atproto/api (0.19.x) has no multipart methods yet, so the app's algorithm is
played by tests/support/multipart.py.
"""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from atproto_video.core.blob import blob_cid, cid_for_bytes
from atproto_video.core.tokens import TokenCipher
from tests.bluesky.flow import fetch_mp4, job_row, make_video, upload_token
from tests.support.multipart import FINISH, MultipartClient
from tests.support.pds import LocalPDS
from tests.support.service import ServiceProcess
from tests.support.xrpc import wait_for_job

pytestmark = pytest.mark.pds


def test_multipart_upload_delivered_to_the_pds(
    pds: LocalPDS, service: ServiceProcess, media: Path, issued_tokens: list[str]
) -> None:
    clip = make_video(media / "multipart.mp4", "multipart", seconds=2, size="640x360")
    pad = (17 << 20) - len(clip)  # from 16 MiB the app goes multipart: three parts here
    body = clip + struct.pack(">I", pad) + b"free" + b"\x00" * (pad - 8)
    given: dict[str, str] = {}
    # aud = the PDS's DID, lxm = uploadBlob, a fresh one for every call; fetched while the
    # PDS is up (it is held down below).
    pool = [upload_token(pds) for _ in range(20)]
    issued_tokens.extend(pool)

    def tokens(nsid: str) -> str:
        given[nsid] = pool.pop()
        return given[nsid]

    client = MultipartClient(service.url, pds.did, tokens,
                             fault=lambda n, attempt: "cut" if (n, attempt) == (1, 1) else None)
    pds.stop_pds("error")  # hold the job in UPLOADING to look at the token it keeps
    try:
        answer = client.upload(body)
        job_id = answer["completedJobId"]
        assert answer["jobStatus"]["did"] == pds.did
        wait_for_job(service, job_id, ("JOB_STATE_UPLOADING",))
        row = job_row(service, job_id)
        assert row["pds_url"] == pds.pds_url and row["source_size"] == len(body)
        key = (service.data_dir / "token.key").read_bytes()
        assert TokenCipher(key).decrypt(bytes(row["upload_token"]), job_id=job_id) == given[FINISH]
    finally:
        pds.start_pds()
        client.close()
    done, _ = wait_for_job(service, job_id)
    assert done["state"] == "JOB_STATE_COMPLETED", done
    blob = done["blob"]
    mp4 = fetch_mp4(service, pds.did, blob_cid(blob))
    post = pds.create_post_with_video(blob, text="a multipart video")
    assert post["uri"].startswith(f"at://{pds.did}/app.bsky.feed.post/")
    stored = pds.get_blob(blob_cid(blob))  # served once a record references it
    assert stored == mp4 and cid_for_bytes(stored) == blob_cid(blob)
    assert job_row(service, job_id)["upload_token"] is None
