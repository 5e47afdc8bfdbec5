"""The plan: probe once, record a small plain record, rebuild the ladder from it."""

from __future__ import annotations

from pathlib import Path

import pytest

from atproto_video.core.details import JobDetails, Plan
from atproto_video.core.ladder import build_ladder
from atproto_video.transcoder.errors import ValidationFailure
from atproto_video.transcoder.limits import TranscodeLimits
from atproto_video.transcoder.plan import choose_variants, probe_plan, with_plan
from tests.support.media import make_clip

LIMITS = TranscodeLimits()


def test_plan_round_trip_and_rendition_choice() -> None:
    plan = Plan(1920, 1080, "30000/1001", True, ("1080p", "480p"))
    assert Plan.from_json(plan.to_json()) == plan
    assert [v.name for v in plan.variants()] == ["1080p", "480p"]
    assert Plan.from_json(None) is None and Plan.from_json({"renditions": []}) is None
    ladder = build_ladder(1280, 720)
    assert [v.name for v in choose_variants(ladder, ["720p"])] == ["720p"]
    assert [v.name for v in choose_variants(ladder, ["1080p"])] == ["720p", "480p"]
    assert [v.name for v in choose_variants(ladder, None)] == ["720p", "480p"]


def test_probe_plan_never_upscales(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "c.mp4", seconds=1, size="1280x720")
    plan, info = probe_plan(clip, LIMITS)
    assert (plan.width, plan.height, plan.has_audio) == (1280, 720, True)
    assert plan.renditions == ("720p", "480p")
    details = with_plan(JobDetails(encode_seconds=1.5), plan, info)
    assert details.encode_seconds == 1.5 and details.strategy == "kubernetes"
    assert JobDetails.from_json(details.to_json()) == details and details.plan == plan
    only = probe_plan(clip, LIMITS, ["480p"])[0]
    assert only.renditions == ("480p",)


def test_probe_plan_rejects_a_non_video(tmp_path: Path) -> None:
    junk = tmp_path / "junk"
    junk.write_bytes(b"not a video\n" * 100)
    with pytest.raises(ValidationFailure):
        probe_plan(junk, LIMITS)
