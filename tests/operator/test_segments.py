"""Segment targets in cluster mode: which Jobs a long source gets, their arguments, the join."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import pytest

from atproto_video.core.config import KubeSettings, VideoConfig
from atproto_video.core.details import JobDetails, Outcome, RenditionStatus, SourceSummary
from atproto_video.core.ladder import build_ladder
from atproto_video.core.storage import LocalStorage, WorkerIO
from atproto_video.operator.segments import (
    complete,
    expand,
    join_rendition,
    remux_source,
    segments_for,
    source_facts,
    startable,
    to_join,
)
from atproto_video.operator.templates import job_manifest, job_name
from atproto_video.transcoder.contract import Target, aggregate, targets_for
from atproto_video.transcoder.errors import EncodingFailure
from atproto_video.transcoder.limits import TranscodeLimits
from atproto_video.transcoder.plan import summary
from atproto_video.transcoder.probe import SourceInfo

LIMITS = TranscodeLimits()
KUBE = KubeSettings.from_env({"VIDEO_SEGMENT_SECONDS": "60", "VIDEO_SEGMENT_MIN_SOURCE_S": "120"})
PLAN = build_ladder(1280, 720, 30)
NAMES = [v.name for v in PLAN]


def _targets(seconds: float) -> list[str]:
    source = SourceSummary(1280, 720, seconds, True)
    segments = segments_for(source, KUBE, LIMITS)
    return [t.name for t in expand(targets_for(PLAN), NAMES, segments)]


def test_short_sources_keep_one_job_per_target() -> None:
    assert _targets(119.0) == ["720p", "480p", "mp4", "thumbnail"]
    assert expand(targets_for(PLAN), NAMES, segments_for(None, KUBE, LIMITS)) == targets_for(PLAN)


def test_long_sources_get_one_job_per_segment_per_rendition() -> None:
    # 300 s at 64 s segments (60 rounded to whole HLS segments and AAC frames): 5 segments.
    assert _targets(300.0) == [*(f"720ps{i}" for i in range(5)), *(f"480ps{i}" for i in range(5)),
                               "mp4", "thumbnail"]


def test_segment_targets_carry_their_worker_arguments_and_weights() -> None:
    source = SourceSummary(1280, 720, 300.0, True)
    targets = expand(targets_for(PLAN), NAMES, segments_for(source, KUBE, LIMITS))
    by_name = {t.name: t for t in targets}
    whole = {t.name: t.weight for t in targets_for(PLAN)}
    assert sum(by_name[f"720ps{i}"].weight for i in range(5)) == pytest.approx(whole["720p"])
    assert by_name["720ps3"].args == ("--segment", "3/5", "--segment-seconds", "64")
    assert by_name["720ps3"].cli == "720p"
    # Overall progress: 100 only when every segment is done.
    progress = {name: 100 for name in by_name}
    assert aggregate(targets, progress) == 100
    assert aggregate(targets, {**progress, "480ps4": 50}) < 100


def test_segment_jobs_have_distinct_names_and_pass_the_segment(tmp_path: Path) -> None:
    source = SourceSummary(1280, 720, 300.0, True)
    targets = expand(targets_for(PLAN), NAMES, segments_for(source, KUBE, LIMITS))
    assert len({job_name("a" * 26, t.name) for t in targets}) == len(targets)
    io = WorkerIO(source="/s/src", out_dir="/s/out", progress_file="/s/p.json")
    target = next(t for t in targets if t.name == "480ps2")
    cfg = VideoConfig.from_env({"VIDEO_SERVICE_DID": "did:web:video.test",
                               "VIDEO_STORAGE_DIR": str(tmp_path)})
    manifest = job_manifest(cfg, job_id="a" * 26, did="did:plc:x", io=io,
                            target=target, owner_name="vj", owner_uid="u")
    args = manifest["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--target") + 1] == "480p"
    assert args[args.index("--segment") + 1] == "2/5"
    assert args[args.index("--segment-seconds") + 1] == "64"
    assert manifest["metadata"]["name"].endswith("-480ps2")


INFO = SourceInfo(format="mov", width=1280, height=720, coded_width=1280, coded_height=720,
                  rotation=0, duration_s=300.0, fps=Fraction(30000, 1001), video_stream=0,
                  video_codec="h264", pix_fmt="yuv420p", color_transfer="", audio_stream=1)


def test_segment_jobs_get_the_recorded_probe_so_workers_do_not_probe(tmp_path: Path) -> None:
    # Recorded with the plan in the job's details (a JSON column), read back by the operator.
    recorded = JobDetails.from_json(json.loads(json.dumps(
        JobDetails(source=summary(INFO)).to_json()))).source
    assert recorded is not None
    facts = source_facts(recorded)
    assert facts is not None
    targets = {t.name: t for t in expand(targets_for(PLAN), NAMES,
                                         segments_for(recorded, KUBE, LIMITS), facts)}
    io = WorkerIO(source="/s/src", out_dir="/s/out", progress_file="/s/p.json")
    cfg = VideoConfig.from_env({"VIDEO_SERVICE_DID": "did:web:video.test",
                               "VIDEO_STORAGE_DIR": str(tmp_path)})
    manifest = job_manifest(cfg, job_id="a" * 26, did="did:plc:x", io=io,
                            target=targets["720ps1"], owner_name="vj", owner_uid="u")
    args = manifest["spec"]["template"]["spec"]["containers"][0]["args"]
    assert SourceInfo.from_json(json.loads(args[args.index("--source-info") + 1])) == INFO
    # Only segment workers take them; a job planned before they were recorded has none.
    assert "--source-info" not in targets["mp4"].args + targets["thumbnail"].args
    assert source_facts(SourceSummary(1280, 720, 300.0, True)) is None
    assert source_facts(None) is None


def _part(first: int, count: int) -> str:
    lines = ["#EXTM3U", "#EXT-X-VERSION:6", "#EXT-X-TARGETDURATION:4"]
    for n in range(first, first + count):
        lines += ["#EXTINF:4.000000,", f"seg_{n:03d}.ts"]
    return "\n".join([*lines, "#EXT-X-ENDLIST"]) + "\n"


def test_join_writes_the_rendition_playlist_through_storage(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "storage")
    storage.prepare()
    job_id = "b" * 26
    storage.write_output(job_id, "480p/part_000.m3u8", _part(0, 2))
    with pytest.raises(EncodingFailure):
        join_rendition(storage, job_id, "480p", 2)  # segment 1 missing
    assert not storage.has_output(job_id, "480p/video.m3u8")
    storage.write_output(job_id, "480p/part_001.m3u8", _part(2, 2))
    join_rendition(storage, job_id, "480p", 2)
    join_rendition(storage, job_id, "480p", 2)  # again, as after an operator restart
    with storage.open_output(job_id, "480p/video.m3u8") as path:
        text = path.read_text()
    assert [line for line in text.splitlines() if line.startswith("seg_")] == [
        f"seg_{n:03d}.ts" for n in range(4)]


def _expanded(seconds: float = 300.0) -> list[Target]:
    source = SourceSummary(1280, 720, seconds, True)
    return expand(targets_for(PLAN), NAMES, segments_for(source, KUBE, LIMITS))


def test_segmented_mp4_is_a_remux_of_the_top_rendition() -> None:
    targets = {t.name: t for t in _expanded()}
    mp4 = targets["mp4"]
    assert mp4.cli == "mp4"
    assert mp4.args == ("--from-rendition", "720p")
    assert remux_source(mp4) == "720p"
    # Moving bytes, not encoding: a small share of progress next to the encodes.
    assert mp4.weight < 0.05 * targets_for(PLAN)[0].weight
    # A whole (short) job keeps the encoded MP4.
    whole = {t.name: t for t in _expanded(60.0)}
    assert whole["mp4"].args == () and remux_source(whole["mp4"]) is None


def test_remux_job_is_started_only_once_its_rendition_is_joined() -> None:
    targets = _expanded()
    assert "mp4" not in [t.name for t in startable(targets, ())]
    assert "mp4" not in [t.name for t in startable(targets, {"480p"})]
    assert [t.name for t in startable(targets, {"720p"})] == [t.name for t in targets]
    # Non-segmented jobs: everything at once, as before.
    assert startable(_expanded(60.0), ()) == _expanded(60.0)


def _done(*names: str) -> dict[str, RenditionStatus]:
    return {n: RenditionStatus(progress=100, outcome=Outcome.SUCCEEDED) for n in names}


def test_a_rendition_is_joined_once_all_its_segments_succeeded() -> None:
    segments = segments_for(SourceSummary(1280, 720, 300.0, True), KUBE, LIMITS)
    all480 = [f"480ps{i}" for i in range(5)]
    assert to_join(NAMES, segments, _done(*all480[:4], "720ps0"), set()) == []
    renditions = {**_done(*all480, "720ps0"),
                  "480ps4": RenditionStatus(progress=100, outcome=Outcome.SUCCEEDED)}
    assert to_join(NAMES, segments, renditions, set()) == ["480p"]
    assert to_join(NAMES, segments, renditions, {"480p"}) == []  # joined already
    failed = {**renditions, "480ps2": RenditionStatus(outcome=Outcome.FAILED)}
    assert to_join(NAMES, segments, failed, set()) == []
    # One segment: the rendition's own Job writes its playlist; nothing to join.
    whole = segments_for(SourceSummary(1280, 720, 60.0, True), KUBE, LIMITS)
    assert to_join(NAMES, whole, _done("720p", "480p"), set()) == []


def test_master_lists_joined_and_whole_renditions_only() -> None:
    assert complete(NAMES, _done("480ps0", "480ps1"), set()) == ()
    assert complete(NAMES, {}, {"480p"}) == ("480p",)
    assert complete(NAMES, _done("720p"), {"480p"}) == ("720p", "480p")  # ladder order


def test_remux_job_manifest_reads_the_rendition(tmp_path: Path) -> None:
    mp4 = next(t for t in _expanded() if t.name == "mp4")
    io = WorkerIO(source="/s/src", out_dir="/s/out", progress_file="/s/p.json")
    cfg = VideoConfig.from_env({"VIDEO_SERVICE_DID": "did:web:video.test",
                               "VIDEO_STORAGE_DIR": str(tmp_path)})
    manifest = job_manifest(cfg, job_id="a" * 26, did="did:plc:x", io=io,
                            target=mp4, owner_name="vj", owner_uid="u")
    args = manifest["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--target") + 1] == "mp4"
    assert args[args.index("--from-rendition") + 1] == "720p"
    assert manifest["metadata"]["name"] == job_name("a" * 26, "mp4")
