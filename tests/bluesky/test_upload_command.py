"""``atproto-video upload`` (cli/upload.py) as a person runs it: a real PDS and PLC on loopback,
the service as a real process, the command as a subprocess. After ``--post`` the post is on
the PDS with the blob the service returned; each failure has its exit code and its reason."""

from __future__ import annotations

import json
import os
import sqlite3
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from atproto_video.cli.pds import pds_audience
from atproto_video.cli.upload import (
    EXIT_LOGIN,
    EXIT_QUOTA,
    EXIT_REJECTED,
    EXIT_UNREACHABLE,
)
from atproto_video.core.blob import cid_for_bytes
from tests.bluesky.conftest import bluesky_service
from tests.bluesky.flow import fetch_mp4, job_row, make_video
from tests.support.pds import LocalPDS, PDSAccount
from tests.support.service import ServiceProcess, job_count
from tests.support.waiting import free_port

pytestmark = pytest.mark.pds


def upload(*args: str, password: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIDEO_", "ATPROTO_APP"))}
    if password is not None:
        env["ATPROTO_APP_PASSWORD"] = password
    return subprocess.run(
        [sys.executable, "-m", "atproto_video.cli", "upload", *args, "--timeout", "300"],
        env=env, capture_output=True, text=True, timeout=420, check=False,
    )  # fmt: skip


def app_password(pds: LocalPDS, account: PDSAccount) -> str:
    """What a person makes in the app's settings and gives the command (not their password)."""
    resp = pds.xrpc("com.atproto.server.createAppPassword", method="POST",
                    json_body={"name": "atproto-video"}, token=pds.access_token(account))
    assert resp.status_code == 200, resp.text
    return str(resp.json()["password"])


@pytest.fixture
def account(pds: LocalPDS, request: pytest.FixtureRequest) -> PDSAccount:
    """A fresh account per test: quotas and duplicates of other tests do not leak in."""
    name = request.node.name.removeprefix("test_").replace("_", "")[:12]
    return pds.create_account(f"{name}{os.getpid() % 1000}.test")


def test_upload_then_post_puts_the_service_blob_in_a_post_on_the_pds(
    pds: LocalPDS, service: ServiceProcess, media: Path, account: PDSAccount
) -> None:
    clip = media / "cli-post.mp4"
    make_video(clip, "cli-post", seconds=1.5, size="320x180")
    out = upload(str(clip), "--service", service.url, "--service-did", "did:web:video.test",
                 "--handle", account.handle, "--pds", pds.pds_url, "--post", "my first video",
                 "--alt", "a test pattern", "--json", password=app_password(pds, account))
    assert out.returncode == 0, out.stdout + out.stderr + service.logs()[-3000:]
    result = json.loads(out.stdout)
    blob = result["blob"]
    cid = blob["ref"]["$link"]
    # The blob the service reports for the job, which the PDS returned to it (Bluesky mode).
    status = httpx.get(f"{service.url}/xrpc/app.bsky.video.getJobStatus",
                       params={"jobId": result["jobId"]}).json()["jobStatus"]
    assert status["state"] == "JOB_STATE_COMPLETED" and status["blob"] == blob
    assert result["did"] == account.did == status["did"]
    assert job_row(service, result["jobId"])["pds_url"] == pds.pds_url  # delivered to the PDS
    # The post exists on the user's repository, embedding exactly that blob.
    uri = result["post"]["uri"]
    assert uri.startswith(f"at://{account.did}/app.bsky.feed.post/")
    got = pds.xrpc("com.atproto.repo.getRecord", params={
        "repo": account.did, "collection": "app.bsky.feed.post", "rkey": uri.rsplit("/", 1)[1]})
    assert got.status_code == 200, got.text
    record = got.json()["value"]
    assert record["text"] == "my first video"
    assert record["embed"]["$type"] == "app.bsky.embed.video"
    assert record["embed"]["video"] == blob and record["embed"]["alt"] == "a test pattern"
    assert record["embed"]["aspectRatio"] == {"width": 320, "height": 180}
    # The PDS serves the blob now that the post references it: the service's MP4.
    stored = pds.get_blob(cid, did=account.did)
    assert stored == fetch_mp4(service, account.did, cid) and cid_for_bytes(stored) == cid
    # The URLs printed work, and the person saw both bars end.
    assert httpx.get(result["playlistUrl"]).status_code == 200
    assert httpx.get(result["watchUrl"]).status_code == 200
    assert "upload" in out.stderr and "ready" in out.stderr and "100%" in out.stderr


def test_a_did_resolved_through_plc_uploads_from_16_mib_in_parts(
    pds: LocalPDS, service: ServiceProcess, media: Path, account: PDSAccount
) -> None:
    clip = make_video(media / "cli-multipart.mp4", "cli-multipart", seconds=1, size="320x180")
    pad = (17 << 20) - len(clip)  # a 'free' box: 17 MiB, still the same video
    big = media / "cli-multipart-17mib.mp4"
    big.write_bytes(clip + struct.pack(">I", pad) + b"free" + b"\x00" * (pad - 8))
    # No --pds: the PDS comes from the DID document in the (local) PLC directory.
    out = upload(str(big), "--service", service.url, "--did", account.did, "--plc",
                 pds.plc_url, "--app-password", app_password(pds, account), "--json")
    assert out.returncode == 0, out.stdout + out.stderr + service.logs()[-3000:]
    assert "multipart upload: 3 parts" in out.stderr
    result = json.loads(out.stdout)
    with sqlite3.connect(service.data_dir / "video.sqlite3") as conn:
        sessions = conn.execute("SELECT count(*) FROM video_upload_session WHERE did = ?",
                                (account.did,)).fetchone()[0]  # fmt: skip
    assert sessions == 1
    assert job_row(service, result["jobId"])["source_size"] == big.stat().st_size
    assert result["blob"]["ref"]["$link"] == cid_for_bytes(
        fetch_mp4(service, account.did, result["blob"]["ref"]["$link"]))


def test_a_wrong_app_password_exits_3_and_uploads_nothing(
    pds: LocalPDS, service: ServiceProcess, media: Path, account: PDSAccount
) -> None:
    clip = media / "cli-badpass.mp4"
    make_video(clip, "cli-badpass", seconds=1)
    out = upload(str(clip), "--service", service.url, "--handle", account.handle,
                 "--pds", pds.pds_url, password="wrong-wrong-wrong-wrong")
    assert out.returncode == EXIT_LOGIN, out.stdout + out.stderr
    assert "refused the login" in out.stderr and "--app-password" in out.stderr
    assert job_count(service, account.did) == 0


def test_a_file_that_is_no_video_exits_5(
    pds: LocalPDS, service: ServiceProcess, tmp_path: Path, account: PDSAccount
) -> None:
    junk = tmp_path / "notes.mp4"
    junk.write_bytes(b"these are my holiday notes, not a video\n" * 200)
    out = upload(str(junk), "--service", service.url, "--handle", account.handle,
                 "--pds", pds.pds_url, password=app_password(pds, account))
    assert out.returncode == EXIT_REJECTED, out.stdout + out.stderr
    assert "validation_failure" in out.stderr or "refused the upload" in out.stderr


def test_an_unreachable_service_or_pds_exits_6(
    pds: LocalPDS, media: Path, account: PDSAccount
) -> None:
    clip = media / "cli-down.mp4"
    make_video(clip, "cli-down", seconds=1)
    nobody = f"http://127.0.0.1:{free_port()}"
    password = app_password(pds, account)
    out = upload(str(clip), "--service", nobody, "--handle", account.handle,
                 "--pds", pds.pds_url, password=password)
    assert out.returncode == EXIT_UNREACHABLE, out.stdout + out.stderr
    assert f"unreachable at {nobody}" in out.stderr
    out = upload(str(clip), "--service", nobody, "--handle", account.handle,
                 "--pds", nobody, password=password)
    assert out.returncode == EXIT_UNREACHABLE, out.stdout + out.stderr
    assert "PDS is unreachable" in out.stderr


@pytest.fixture(scope="module")
def one_a_day(pds: LocalPDS, tmp_path_factory: pytest.TempPathFactory,
              ) -> Iterator[ServiceProcess]:
    svc = bluesky_service(tmp_path_factory.mktemp("one-a-day"), pds,
                          VIDEO_DAILY_VIDEO_LIMIT="1")
    yield svc
    svc.stop()


def test_the_daily_limit_exits_4_with_the_service_sentence(
    pds: LocalPDS, one_a_day: ServiceProcess, media: Path, account: PDSAccount
) -> None:
    password = app_password(pds, account)
    make_video(media / "cli-quota-1.mp4", "cli-quota-1", seconds=1)
    make_video(media / "cli-quota-2.mp4", "cli-quota-2", seconds=1)
    args = ("--service", one_a_day.url, "--service-did", "did:web:video.test", "--handle",
            account.handle, "--pds", pds.pds_url)
    assert upload(str(media / "cli-quota-1.mp4"), *args, password=password).returncode == 0
    out = upload(str(media / "cli-quota-2.mp4"), *args, password=password)
    assert out.returncode == EXIT_QUOTA, out.stdout + out.stderr
    assert "User has exceeded daily upload videos limit" in out.stderr
    assert job_count(one_a_day, account.did) == 1


def test_the_token_audience_is_the_pds_hostname_as_the_app_asks() -> None:
    # social-app: did:web: + new URL(pdsUrl).hostname (no port, no scheme).
    assert pds_audience("http://localhost:2583") == "did:web:localhost"
    assert pds_audience("https://morel.us-east.host.bsky.network/") == (
        "did:web:morel.us-east.host.bsky.network")
