"""The Bluesky flow end to end against a real @atproto/pds: token from getServiceAuth, upload to
the service, encoding, upload of the MP4 to the user's PDS, a post embedding the blob.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import pytest

from atproto_video.core.blob import blob_cid, cid_for_bytes
from atproto_video.core.tokens import TokenCipher
from tests.bluesky.flow import (
    fetch_mp4,
    job_row,
    limits_token,
    make_video,
    upload_token,
)
from tests.support.identity import fragments
from tests.support.pds import LocalPDS
from tests.support.service import ServiceProcess, assert_monotonic, job_count
from tests.support.xrpc import LIMITS, STATUS, UPLOAD, job_status, upload, wait_for_job

pytestmark = pytest.mark.pds


def test_upload_lands_on_the_pds_and_posts(
    pds: LocalPDS, service: ServiceProcess, media: Path, issued_tokens: list[str]
) -> None:
    body = make_video(media / "e2e.mp4", "e2e", seconds=2, size="640x360")
    token = upload_token(pds)
    issued_tokens.append(token)
    resp = upload(service, pds.did, token, body)
    assert resp.status_code == 200, resp.text
    answer = resp.json()
    assert answer["state"] == "JOB_STATE_CREATED" and answer["did"] == pds.did
    assert answer["jobStatus"]["jobId"] == answer["jobId"]
    row = job_row(service, answer["jobId"])
    assert row["pds_url"] == pds.pds_url

    done, seen = wait_for_job(service, answer["jobId"])
    assert done["state"] == "JOB_STATE_COMPLETED", done
    assert done["progress"] == 100 and "error" not in done
    assert_monotonic(seen)

    blob = done["blob"]
    assert set(blob) == {"$type", "ref", "mimeType", "size"} and blob["$type"] == "blob"
    assert blob["mimeType"] == "video/mp4"
    mp4 = fetch_mp4(service, pds.did, blob_cid(blob))  # the MP4 this service produced
    assert len(mp4) == blob["size"]

    # The blob is the PDS's own ref: a post embedding it validates, and the PDS serves the bytes.
    post = pds.create_post_with_video(blob, text="a video via atproto-video")
    assert post["uri"].startswith(f"at://{pds.did}/app.bsky.feed.post/")
    stored = pds.get_blob(blob_cid(blob))
    assert cid_for_bytes(stored) == blob_cid(blob) and stored == mp4

    row = job_row(service, answer["jobId"])
    assert row["upload_token"] is None  # cleared once terminal
    assert row["cid"] == blob_cid(blob)


def test_progress_goes_through_every_state(
    pds: LocalPDS, service: ServiceProcess, media: Path, issued_tokens: list[str]
) -> None:
    """While the PDS answers 503, the job sits in UPLOADING: observe it, then let it through."""
    body = make_video(media / "states.mp4", "states")
    token = upload_token(pds)
    issued_tokens.append(token)
    pds.stop_pds("error")
    try:
        job_id = upload(service, pds.did, token, body).json()["jobId"]
        _, seen = wait_for_job(service, job_id, ("JOB_STATE_UPLOADING",))
        # At rest the token is AES-GCM ciphertext that only the service's key opens.
        row = job_row(service, job_id)
        stored = bytes(row["upload_token"])
        assert not [part for part in fragments(token) if part.encode() in stored]
        key = (service.data_dir / "token.key").read_bytes()
        assert TokenCipher(key).decrypt(stored, job_id=job_id) == token
        assert (service.data_dir / "token.key").stat().st_mode & 0o077 == 0
        time.sleep(2.5)  # a few retries against the failing PDS
        assert job_status(service, job_id)["state"] == "JOB_STATE_UPLOADING"
    finally:
        pds.start_pds()
    done, more = wait_for_job(service, job_id)
    assert done["state"] == "JOB_STATE_COMPLETED", done
    states = [s for s, _ in seen + more]
    assert_monotonic(seen + more)
    assert "JOB_STATE_UPLOADING" in states
    assert "retrying" in service.logs() and "HTTP 503" in service.logs()
    pds.create_post_with_video(done["blob"])  # the blob is the PDS's: a post with it is accepted


def test_pds_unreachable_then_back(
    pds: LocalPDS, service: ServiceProcess, media: Path, issued_tokens: list[str]
) -> None:
    body = make_video(media / "outage.mp4", "outage")
    token = upload_token(pds)
    issued_tokens.append(token)
    with pds.pds_down("refuse"):
        job_id = upload(service, pds.did, token, body).json()["jobId"]
        wait_for_job(service, job_id, ("JOB_STATE_UPLOADING",))
        time.sleep(3)  # connection refused, several times
        assert job_status(service, job_id)["state"] == "JOB_STATE_UPLOADING"
    done, _ = wait_for_job(service, job_id)
    assert done["state"] == "JOB_STATE_COMPLETED", done
    assert "ConnectError" in service.logs()
    assert cid_for_bytes(fetch_mp4(service, pds.did, blob_cid(done["blob"]))) == blob_cid(
        done["blob"]
    )


def test_token_expires_while_the_pds_is_down(
    pds: LocalPDS, service: ServiceProcess, media: Path, issued_tokens: list[str]
) -> None:
    body = make_video(media / "expiry.mp4", "expiry")
    token = upload_token(pds, lifetime_s=12)
    issued_tokens.append(token)
    with pds.pds_down("refuse"):
        resp = upload(service, pds.did, token, body)
        assert resp.status_code == 200, resp.text
        done, _ = wait_for_job(service, resp.json()["jobId"], timeout=60)
    assert done["state"] == "JOB_STATE_FAILED"
    assert done["failureCode"] == "pds_upload_failure"
    assert "upload token expired" in done["error"] and "ConnectError" in done["error"]
    assert "blob" not in done
    assert job_row(service, done["jobId"])["upload_token"] is None


def test_expired_token_is_refused_at_upload(pds: LocalPDS, service: ServiceProcess) -> None:
    token = upload_token(pds, lifetime_s=2)
    time.sleep(3.1)
    resp = upload(service, pds.did, token, b"\x00" * 100)
    assert (resp.status_code, resp.json()["error"]) == (401, "JwtExpired")


def test_duplicates_share_one_job_per_did(
    pds: LocalPDS, service: ServiceProcess, media: Path, issued_tokens: list[str]
) -> None:
    body = make_video(media / "dup.mp4", "dup")
    limits = limits_token(pds)

    def remaining() -> int:
        resp = httpx.get(
            f"{service.url}/xrpc/{LIMITS}", headers={"authorization": f"Bearer {limits}"}
        )
        assert resp.status_code == 200, resp.text
        return int(resp.json()["remainingDailyVideos"])

    before, jobs_before = remaining(), job_count(service, pds.did)
    # Two identical uploads at the same time: one job, the other answer points at it.
    tokens = [upload_token(pds), upload_token(pds)]
    issued_tokens.extend(tokens)
    answers: list[httpx.Response] = []
    barrier = threading.Barrier(2)

    def send(tok: str) -> None:
        barrier.wait()
        answers.append(upload(service, pds.did, tok, body))

    threads = [threading.Thread(target=send, args=(t,)) for t in tokens]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [a.status_code for a in answers] == [200, 200]
    bodies = [a.json() for a in answers]
    assert bodies[0]["jobId"] == bodies[1]["jobId"]
    assert sorted(b.get("error", "") for b in bodies) == ["", "already_exists"]
    dup = next(b for b in bodies if b.get("error"))
    assert dup["message"] == "Video already processed" and dup["jobStatus"]["jobId"] == dup["jobId"]
    assert remaining() == before - 1
    assert job_count(service, pds.did) == jobs_before + 1

    job_id = bodies[0]["jobId"]
    done, _ = wait_for_job(service, job_id)
    assert done["state"] == "JOB_STATE_COMPLETED", done
    # Once finished, the same bytes again: still the same job, with its blob, no quota spent.
    token = upload_token(pds)
    issued_tokens.append(token)
    again = upload(service, pds.did, token, body).json()
    assert again["jobId"] == job_id and again["error"] == "already_exists"
    assert again["state"] == "JOB_STATE_COMPLETED" and again["blob"] == done["blob"]
    assert remaining() == before - 1

    # Another DID uploading the same bytes gets its own job (and its own PDS upload).
    bob = next(a for a in pds.accounts if a.handle == "bob.test")
    token = upload_token(pds, account=bob)
    issued_tokens.append(token)
    theirs = upload(service, bob.did, token, body).json()
    assert theirs["jobId"] != job_id and "error" not in theirs
    done_bob, _ = wait_for_job(service, theirs["jobId"])
    assert done_bob["state"] == "JOB_STATE_COMPLETED" and done_bob["did"] == bob.did
    pds.create_post_with_video(done_bob["blob"], account=bob)


def test_did_parameter_must_match_the_issuer(
    pds: LocalPDS, service: ServiceProcess, media: Path
) -> None:
    bob = next(a for a in pds.accounts if a.handle == "bob.test")
    jobs_before = job_count(service, bob.did), job_count(service, pds.did)
    resp = upload(service, bob.did, upload_token(pds), b"\x00" * 1000)
    assert (resp.status_code, resp.json()["error"]) == (401, "BadJwtIss")
    # A token for some other audience gets production's wording.
    wrong = pds.service_auth("did:web:elsewhere.test", "com.atproto.repo.uploadBlob")
    resp = upload(service, pds.did, wrong, b"\x00" * 1000)
    assert resp.status_code == 401
    assert resp.json() == {
        "error": "BadJwtAudience",
        "message": 'invalid token audience "did:web:elsewhere.test", '
        f'should be the user\'s PDS DID "{pds.pds_service_did}"',
    }
    # The PDS audience with the wrong method is not an upload token.
    resp = upload(service, pds.did, pds.service_auth(pds.pds_service_did, UPLOAD), b"x")
    assert (resp.status_code, resp.json()["error"]) == (401, "BadJwtLexiconMethod")
    assert (job_count(service, bob.did), job_count(service, pds.did)) == jobs_before


@pytest.mark.parametrize(
    ("fmt", "ctype"),
    [
        ("mov", "video/quicktime"),
        ("webm", "video/webm"),
        ("mpeg", "video/mpeg"),
        ("gif", "image/gif"),
    ],
)
def test_every_accepted_content_type(
    pds: LocalPDS,
    service: ServiceProcess,
    media: Path,
    issued_tokens: list[str],
    fmt: str,
    ctype: str,
) -> None:
    body = make_video(media / f"in.{fmt}", f"fmt-{fmt}", fmt=fmt)
    token = upload_token(pds)
    issued_tokens.append(token)
    resp = upload(service, pds.did, token, body, ctype=ctype, name=f"x.{fmt}")
    assert resp.status_code == 200, resp.text
    done, _ = wait_for_job(service, resp.json()["jobId"])
    assert done["state"] == "JOB_STATE_COMPLETED", done
    assert done["blob"]["mimeType"] == "video/mp4"
    pds.create_post_with_video(done["blob"])


def test_cors_for_browser_clients(
    pds: LocalPDS, service: ServiceProcess, media: Path, issued_tokens: list[str]
) -> None:
    origin = "https://bsky.app"
    for nsid, method in ((UPLOAD, "POST"), (STATUS, "GET"), (LIMITS, "GET")):
        pre = httpx.options(
            f"{service.url}/xrpc/{nsid}",
            headers={
                "origin": origin,
                "access-control-request-method": method,
                "access-control-request-headers": "authorization,content-type",
            },
        )
        assert pre.status_code == 200, (nsid, pre.text)
        assert pre.headers["access-control-allow-origin"] in ("*", origin)
        assert method in pre.headers["access-control-allow-methods"]
        allowed = pre.headers["access-control-allow-headers"].lower()
        assert "authorization" in allowed and "content-type" in allowed
    token = upload_token(pds)
    issued_tokens.append(token)
    body = make_video(media / "cors.mp4", "cors")
    resp = upload(service, pds.did, token, body, headers={"origin": origin})
    assert resp.status_code == 200
    assert resp.headers["access-control-allow-origin"] in ("*", origin)
    poll = httpx.get(
        f"{service.url}/xrpc/{STATUS}",
        params={"jobId": resp.json()["jobId"]},
        headers={"origin": origin},
    )
    assert poll.headers["access-control-allow-origin"] in ("*", origin)
    # An error answer is readable by the page too.
    bad = upload(service, pds.did, "not.a.jwt", b"x", headers={"origin": origin})
    assert bad.status_code == 401 and bad.headers["access-control-allow-origin"] in ("*", origin)
    wait_for_job(service, resp.json()["jobId"])


def test_no_token_reaches_the_log(service: ServiceProcess, issued_tokens: list[str]) -> None:
    logs = service.logs()
    assert issued_tokens and "job completed" in logs
    for token in issued_tokens:
        assert not [part for part in fragments(token) if part in logs]
