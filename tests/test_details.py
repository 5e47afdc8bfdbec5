"""Job details: one typed shape for both executors, read from old rows, merged forward only."""

from __future__ import annotations

from atproto_video.core.details import (
    JobDetails,
    Outcome,
    Plan,
    RenditionStatus,
    SourceSummary,
    merge_renditions,
)


def test_round_trip_through_json() -> None:
    details = JobDetails(
        source=SourceSummary(1920, 1080, 12.5, True),
        plan=Plan(1920, 1080, "30000/1001", True, ("1080p", "720p", "480p")),
        strategy="kubernetes",
        renditions={"720p": RenditionStatus(40, Outcome.RUNNING, job="vj-x-720p")},
        encode_seconds=3.25,
        failure_reason="OOMKilled",
    )
    data = details.to_json()
    assert data["plan"]["hasAudio"] is True and data["failure"] == {"reason": "OOMKilled"}
    assert data["renditions"]["720p"] == {"progress": 40, "outcome": "Running", "job": "vj-x-720p"}
    assert JobDetails.from_json(data) == details
    assert JobDetails.from_json(None) == JobDetails() and JobDetails().to_json() == {}


def test_rows_from_the_untyped_era_still_read() -> None:
    # Embedded mode once stored the rendition names as a list.
    old = {"source": {"width": 640, "height": 360, "duration_s": 2.0, "has_audio": False},
           "renditions": ["360p"], "strategy": "single", "encode_seconds": 1}
    details = JobDetails.from_json(old)
    assert details.renditions == {"360p": RenditionStatus(100, Outcome.SUCCEEDED)}
    assert details.source == SourceSummary(640, 360, 2.0, False)
    junk = JobDetails.from_json({"plan": {"renditions": ["x"]}, "renditions": {"a": {
        "outcome": "Exploded", "progress": "7"}}})
    assert junk.plan is None and junk.renditions["a"] == RenditionStatus()


PROBE = {"format": "mov", "width": 1280, "height": 720, "coded_width": 720, "coded_height": 1280,
         "rotation": 90, "duration_s": 300.0, "fps": "30000/1001", "video_stream": 0,
         "video_codec": "h264", "pix_fmt": "yuv420p", "color_transfer": "", "audio_stream": None}


def test_the_source_is_recorded_once_as_its_probe() -> None:
    source = SourceSummary.from_probe(PROBE)
    assert (source.width, source.height, source.duration_s, source.has_audio) == (
        1280, 720, 300.0, False)
    data = JobDetails(source=source).to_json()
    assert data["source"] == {"probe": PROBE}  # the figures are not stored a second time
    back = JobDetails.from_json(data).source
    assert back == source and back is not None and back.probe == PROBE
    assert SourceSummary.from_probe({**PROBE, "audio_stream": 1}).has_audio is True
    # Rows planned while the figures were stored next to the probe read the probe.
    both = {"width": 1, "height": 1, "duration_s": 1.0, "has_audio": True, "probe": PROBE}
    assert SourceSummary.from_json(both) == source
    # A probe that lacks a figure is no source at all (workers then probe for themselves).
    assert SourceSummary.from_json({"probe": {**PROBE, "width": None}}) is None
    assert SourceSummary.from_json({"probe": {"width": 1}}) is None


def test_merge_never_moves_progress_backwards() -> None:
    stored = {"720p": RenditionStatus(80, Outcome.RUNNING, job="vj-720p")}
    retried = {"720p": RenditionStatus(5, Outcome.RUNNING)}  # a new pod's file restarts at 0
    merged = merge_renditions(stored, retried)
    assert merged["720p"] == RenditionStatus(80, Outcome.RUNNING, job="vj-720p")
    failed = merge_renditions(merged, {"720p": RenditionStatus(0, Outcome.FAILED, reason="r")})
    assert failed["720p"].outcome is Outcome.FAILED and failed["720p"].progress == 80
    done = merge_renditions({"mp4": RenditionStatus(10, Outcome.SUCCEEDED)})
    assert done["mp4"].progress == 100
