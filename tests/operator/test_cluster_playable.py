"""Playable early in cluster mode: the operator writes the master playlist once the lowest
rendition's worker Job succeeds, listing only succeeded renditions, while the VideoJob is
still ENCODING; after COMPLETED it lists every rendition.

Deterministic without timing: the top rendition's Job is suspended (``spec.suspend``) as soon
as the operator creates it, so it cannot finish until the test resumes it.
"""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from tests.support.didserver import DidServer
from tests.support.k8s import K8sEnv, OperatorProcess
from tests.support.media import make_clip, play_hls
from tests.support.service import ServiceProcess
from tests.support.waiting import wait_for
from tests.support.xrpc import job_status, upload_as, user, wait_for_job

pytestmark = [pytest.mark.cluster, pytest.mark.image, pytest.mark.timeout(1800)]


def suspend(k8s: K8sEnv, name: str, suspended: bool) -> None:
    k8s.kubectl("patch", "job", name, "--type=merge",
                "-p", json.dumps({"spec": {"suspend": suspended}}))


def variant_uris(text: str) -> list[str]:
    return [line for line in text.splitlines() if line and not line.startswith("#")]


def test_master_lists_succeeded_renditions_before_the_videojob_completes(
    api: ServiceProcess, operator: OperatorProcess, k8s: K8sEnv, dids: DidServer,
    storage_root: Path, tmp_path: Path,
) -> None:
    # 720p: renditions 720p and 480p; long enough that the 720p pod is still starting or
    # encoding when it is suspended.
    clip = make_clip(tmp_path / "c.mp4", seconds=12, size="1280x720").read_bytes()
    who = user(dids)
    resp = upload_as(api, who, clip)
    assert resp.status_code == 200, resp.text
    job_id: str = resp.json()["jobId"]
    top = f"vj-{job_id}-720p"
    wait_for(lambda: k8s.kubectl("get", "job", top, check=False).returncode == 0,
             timeout=120, interval=0.05, what=operator.logs)
    suspend(k8s, top, True)
    try:
        out = storage_root / "jobs" / job_id / "out"
        master = wait_for(lambda: (out / "playlist.m3u8").is_file() and out / "playlist.m3u8",
                          timeout=600, interval=0.2, what=operator.logs)
        assert k8s.get("job", top)["status"].get("succeeded") is None, "720p ran to the end"
        status = job_status(api, job_id)
        assert status["state"] == "JOB_STATE_ENCODING", status
        vj = k8s.get("videojob", job_id)
        assert vj["status"]["state"] == "JOB_STATE_ENCODING"
        assert vj["status"]["renditions"]["480p"]["outcome"] == "Succeeded"
        assert variant_uris(master.read_text()) == ["480p/video.m3u8"]
        playlist = (out / "480p" / "video.m3u8").read_text()
        assert "#EXT-X-ENDLIST" in playlist
        for name in variant_uris(playlist):
            assert (out / "480p" / name).stat().st_size > 0, name
        # A player can start now, through the API, by job id.
        base = f"{api.url}/watch/{quote(who.did, safe='')}/{job_id}"
        served = httpx.get(f"{base}/playlist.m3u8", timeout=30)
        assert served.status_code == 200 and served.text == master.read_text()
        assert play_hls(f"{base}/playlist.m3u8") == 360
        assert job_status(api, job_id)["state"] == "JOB_STATE_ENCODING"
    finally:
        suspend(k8s, top, False)
    status, _ = wait_for_job(api, job_id, timeout=600, logs=operator.logs)
    assert status["state"] == "JOB_STATE_COMPLETED", status
    final = (storage_root / "jobs" / job_id / "out" / "playlist.m3u8").read_text()
    assert variant_uris(final) == ["720p/video.m3u8", "480p/video.m3u8"]
