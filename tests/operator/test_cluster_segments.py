"""Segment-parallel encoding on a real cluster: a long-enough source's rendition as one worker
Job per segment, joined by the operator, equivalent to the single encode.

The segment length is shortened (8 s, from 10 s of source up) so a 24 s clip makes three
segments; the joined rendition is held to the same checks as in
tests/transcoder/test_segments.py, against a single encode made here with the same code.

The MP4 is a remux of the joined rendition, created only after its segments succeeded: the
test suspends that Job as soon as it appears, so the master playlist must already be there
(playable early) while the job is still ENCODING, without depending on timing.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from atproto_video.transcoder import TranscodeLimits
from atproto_video.transcoder.pipeline import transcode_target
from atproto_video.transcoder.probe import SourceInfo
from tests.operator.test_cluster import db, submit, worker_jobs  # noqa: F401 (fixture)
from tests.support import hlsequiv
from tests.support import k8s as support
from tests.support.didserver import DidServer
from tests.support.k8s import K8sEnv, OperatorProcess
from tests.support.media import make_clip
from tests.support.postgres import PostgresServer
from tests.support.service import ServiceProcess, assert_monotonic
from tests.support.waiting import wait_for
from tests.support.xrpc import job_status, wait_for_job

pytestmark = [pytest.mark.cluster, pytest.mark.image, pytest.mark.timeout(1800)]

SECONDS = 24
SEGMENTS = {"480ps0", "480ps1", "480ps2"}
FRAME_S = 1 / 30


@pytest.fixture(scope="module")
def stack_env(
    k8s: K8sEnv, postgres: PostgresServer, storage_root: Path, cluster_worker_image: str,
    dids: DidServer,
) -> dict[str, str]:
    """The shared settings with segments of 8 s for sources of 10 s and more."""
    env = support.stack_env(k8s, db_url=postgres.create_database(), storage_root=storage_root,
                            worker_image=cluster_worker_image, plc_url=dids.url)
    return {**env, "VIDEO_SEGMENT_SECONDS": "8", "VIDEO_SEGMENT_MIN_SOURCE_S": "10"}


def test_long_source_is_encoded_as_segment_jobs_and_joined(
    api: ServiceProcess, operator: OperatorProcess, k8s: K8sEnv, dids: DidServer,
    db: Callable[[str], dict[str, Any]], storage_root: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    clip = make_clip(tmp_path / "long.mp4", seconds=SECONDS, size="854x480")
    job_id = submit(api, dids, clip.read_bytes())
    out = storage_root / "jobs" / job_id / "out"
    mp4_job = f"vj-{job_id}-mp4"
    wait_for(lambda: k8s.kubectl("get", "job", mp4_job, check=False).returncode == 0,
             timeout=900, interval=0.05, what=operator.logs)
    _suspend(k8s, mp4_job, True)
    try:
        # Created only once every segment of the (top) rendition succeeded and was joined,
        # and by then the rendition is listed: playable before COMPLETED.
        for target in SEGMENTS:
            assert k8s.get("job", f"vj-{job_id}-{target}")["status"].get("succeeded") == 1
        assert "480p/video.m3u8" in (out / "playlist.m3u8").read_text()
        assert "#EXT-X-ENDLIST" in (out / "480p" / "video.m3u8").read_text()
        assert job_status(api, job_id)["state"] == "JOB_STATE_ENCODING"
        assert k8s.get("job", mp4_job)["status"].get("succeeded") is None, "mp4 ran already"
    finally:
        _suspend(k8s, mp4_job, False)
    st, seen = wait_for_job(api, job_id, timeout=900, logs=operator.logs)
    assert st["state"] == "JOB_STATE_COMPLETED", (st, operator.logs()[-4000:])
    assert_monotonic(seen)

    # One Job per segment of the rendition, plus the MP4 and the thumbnail, all owned by the
    # VideoJob and each succeeded once.
    jobs = worker_jobs(k8s, job_id)
    assert set(jobs) == {*SEGMENTS, "mp4", "thumbnail"}
    vj = k8s.get("videojob", job_id)
    for target, job in jobs.items():
        assert job["status"].get("succeeded") == 1, target
        (owner,) = job["metadata"]["ownerReferences"]
        assert owner["uid"] == vj["metadata"]["uid"]
        args = job["spec"]["template"]["spec"]["containers"][0]["args"]
        if target in SEGMENTS:
            assert args[args.index("--segment") + 1] == f"{target[-1]}/3"
            # The probe recorded at planning time: the segment worker runs no ffprobe.
            facts = SourceInfo.from_json(json.loads(args[args.index("--source-info") + 1]))
            assert facts is not None and (facts.format, facts.width) == ("mov", 854)
    # The MP4 is a remux of the joined rendition, started after its last segment ended.
    args = jobs["mp4"]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--target") + 1] == "mp4"
    assert args[args.index("--from-rendition") + 1] == "480p"
    created = jobs["mp4"]["metadata"]["creationTimestamp"]
    assert all(jobs[t]["status"]["completionTime"] <= created for t in SEGMENTS)
    renditions = vj["status"]["renditions"]
    assert {k: v["progress"] for k, v in renditions.items()} == dict.fromkeys(jobs, 100)
    assert db(job_id)["state"] == "JOB_STATE_COMPLETED"

    # The joined rendition is equivalent to the single encode of the same clip.
    joined = out / "480p" / "video.m3u8"
    assert "480p/video.m3u8" in (out / "playlist.m3u8").read_text()
    single_dir = tmp_path / "single"
    transcode_target(clip, single_dir, "480p", TranscodeLimits(threads=2))
    single = single_dir / "480p" / "video.m3u8"
    assert hlsequiv.frame_count(joined) == pytest.approx(hlsequiv.frame_count(single), abs=1)
    assert hlsequiv.playlist_seconds(joined) == pytest.approx(
        hlsequiv.playlist_seconds(single), abs=FRAME_S)
    for kind in ("v", "a"):
        got = hlsequiv.continuity(joined, kind)
        assert got.max_gap_s < FRAME_S and got.max_overlap_s < FRAME_S, (kind, got)
    assert hlsequiv.decode_errors(joined) == ""
    reference = hlsequiv.psnr(clip, single, 854, 480, "30/1")
    assert hlsequiv.psnr(clip, joined, 854, 480, "30/1") >= reference - 0.5

    # The MP4: the same frames and length as the rendition, clean, faststart.
    mp4 = out / "video.mp4"
    assert hlsequiv.frame_count(mp4) == pytest.approx(hlsequiv.frame_count(joined), abs=1)
    assert hlsequiv.stream_seconds(mp4, "v") == pytest.approx(
        hlsequiv.playlist_seconds(joined), abs=FRAME_S)
    assert hlsequiv.decode_errors(mp4) == ""
    boxes = hlsequiv.top_level_boxes(mp4)
    assert boxes.index("moov") < boxes.index("mdat")


def _suspend(k8s: K8sEnv, name: str, suspended: bool) -> None:
    k8s.kubectl("patch", "job", name, "--type=merge",
                "-p", json.dumps({"spec": {"suspend": suspended}}))
