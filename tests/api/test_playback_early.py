"""Playable early, end to end: the embedded service as a real process serves a job's master
playlist at ``/watch/<did>/<jobId>/`` while the job is still ENCODING, listing exactly the
complete renditions, each complete and playable; after COMPLETED it lists all of them.

Deterministic without timing: ffmpeg is reached through a gate (``VIDEO_FFMPEG_PATH``) that
lets the lowest rendition's encode through and holds every other until the test opens it.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from tests.support.didserver import DidServer
from tests.support.media import make_clip, play_hls
from tests.support.s3 import S3Server
from tests.support.service import ServiceProcess
from tests.support.waiting import wait_for
from tests.support.xrpc import job_status, upload_as, user, wait_for_job

LOWEST = "480p"


def gated_ffmpeg(tmp: Path) -> tuple[Path, Path]:
    """An ffmpeg that runs the lowest rendition's encode at once and the rest once ``gate``
    exists; returns (the wrapper, the gate)."""
    gate = tmp / "gate"
    wrapper = tmp / "ffmpeg"
    wrapper.write_text(f"""#!/bin/sh
case "$*" in
  *"{LOWEST}/video.m3u8"*) ;;
  *) while [ ! -e '{gate}' ]; do sleep 0.05; done ;;
esac
exec ffmpeg "$@"
""")
    wrapper.chmod(0o755)
    return wrapper, gate


def variant_uris(text: str) -> list[str]:
    return [line for line in text.splitlines() if line and not line.startswith("#")]


def assert_complete(client: httpx.Client, base: str, uri: str) -> None:
    """A listed variant: a finished playlist whose every segment is served."""
    playlist = client.get(f"{base}/{uri}")
    assert playlist.status_code == 200 and "#EXT-X-ENDLIST" in playlist.text, playlist.text
    folder = uri.rsplit("/", 1)[0]
    segments = variant_uris(playlist.text)
    assert segments
    for name in segments:
        got = client.get(f"{base}/{folder}/{name}")
        assert got.status_code == 200 and got.content[:1] == b"G", name  # MPEG-TS sync byte


@pytest.mark.parametrize("backend", ["local", pytest.param("s3", marks=pytest.mark.s3)])
def test_master_is_served_while_encoding_with_only_complete_renditions(
    tmp_path: Path, dids: DidServer, request: pytest.FixtureRequest, backend: str
) -> None:
    wrapper, gate = gated_ffmpeg(tmp_path)
    env = {"VIDEO_DID_PLC_URL": dids.url, "VIDEO_FFMPEG_PATH": str(wrapper)}
    if backend == "s3":
        s3_server: S3Server = request.getfixturevalue("s3_server")
        env |= {**s3_server.env(s3_server.new_bucket()), "VIDEO_PLAYBACK": "proxy"}
    svc = ServiceProcess(tmp_path / "svc", env).start()
    try:
        clip = make_clip(tmp_path / "c.mp4", seconds=2, size="1280x720").read_bytes()
        who = user(dids)
        job_id = upload_as(svc, who, clip).json()["jobId"]
        base = f"{svc.url}/watch/{quote(who.did, safe='')}/{job_id}"
        with httpx.Client(timeout=30, follow_redirects=True) as client:
            master = wait_for(
                lambda: (r if (r := client.get(f"{base}/playlist.m3u8")).status_code == 200
                         else None),
                timeout=120, interval=0.1, what=lambda: svc.logs()[-3000:])
            # The rest is held at the gate: the job cannot have finished.
            status = job_status(svc, job_id, client)
            assert status["state"] == "JOB_STATE_ENCODING", status
            assert master.headers["cache-control"] == "no-cache"
            assert variant_uris(master.text) == [f"{LOWEST}/video.m3u8"]
            assert_complete(client, base, f"{LOWEST}/video.m3u8")
            assert client.get(f"{base}/720p/video.m3u8").status_code == 404
            assert play_hls(f"{base}/playlist.m3u8") == 60
            assert job_status(svc, job_id, client)["state"] == "JOB_STATE_ENCODING"
            # A stranger's DID, or an unknown id, finds nothing.
            other = f"{svc.url}/watch/{quote(user(dids).did, safe='')}/{job_id}"
            assert client.get(f"{other}/playlist.m3u8").status_code == 404
            gate.touch()
            status, _ = wait_for_job(svc, job_id, timeout=120)
            assert status["state"] == "JOB_STATE_COMPLETED", status
            final = client.get(f"{base}/playlist.m3u8")
            assert variant_uris(final.text) == ["720p/video.m3u8", f"{LOWEST}/video.m3u8"]
            for uri in variant_uris(final.text):
                assert_complete(client, base, uri)
            cid = status["blob"]["ref"]["$link"]
            by_cid = client.get(f"{svc.url}/watch/{quote(who.did, safe='')}/{cid}/playlist.m3u8")
            assert by_cid.text == final.text and "immutable" in by_cid.headers["cache-control"]
    finally:
        gate.touch()
        svc.stop()


def test_playable_early_off_gives_one_ffmpeg_run_and_nothing_before_completed(
    tmp_path: Path, dids: DidServer
) -> None:
    """VIDEO_PLAYABLE_EARLY=0 reaches the executor: the single strategy decodes once (one
    ffmpeg run for the whole job), and the watch route has nothing until the job is done."""
    calls, gate = tmp_path / "calls", tmp_path / "gate"
    wrapper = tmp_path / "ffmpeg"
    wrapper.write_text(f"""#!/bin/sh
echo run >> '{calls}'
while [ ! -e '{gate}' ]; do sleep 0.05; done
exec ffmpeg "$@"
""")
    wrapper.chmod(0o755)
    env = {"VIDEO_DID_PLC_URL": dids.url, "VIDEO_FFMPEG_PATH": str(wrapper),
           "VIDEO_PLAYABLE_EARLY": "0"}
    svc = ServiceProcess(tmp_path / "svc", env).start()
    try:
        clip = make_clip(tmp_path / "c.mp4", seconds=2, size="1280x720").read_bytes()
        who = user(dids)
        job_id = upload_as(svc, who, clip).json()["jobId"]
        base = f"{svc.url}/watch/{quote(who.did, safe='')}/{job_id}"
        with httpx.Client(timeout=30) as client:
            wait_for(lambda: calls.exists() or None, timeout=60, interval=0.05,
                     what=lambda: svc.logs()[-3000:])
            assert client.get(f"{base}/playlist.m3u8").status_code == 404
            gate.touch()
            status, _ = wait_for_job(svc, job_id, timeout=120)
            assert status["state"] == "JOB_STATE_COMPLETED", status
            assert calls.read_text().splitlines() == ["run"]
            final = client.get(f"{base}/playlist.m3u8")
            assert variant_uris(final.text) == ["720p/video.m3u8", f"{LOWEST}/video.m3u8"]
    finally:
        gate.touch()
        svc.stop()
