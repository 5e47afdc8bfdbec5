"""The plan: probe once, record a small plain record, rebuild the ladder from it."""

from __future__ import annotations

from pathlib import Path

import pytest

from atproto_video.config import VideoConfig
from atproto_video.ladder import plan_ladder
from atproto_video.operator.plan import Plan, choose_variants, plan_details, plan_source
from atproto_video.transcoder.errors import ValidationFailure
from atproto_video.transcoder.limits import TranscodeLimits
from tests.support.media import make_clip

LIMITS = TranscodeLimits.from_config(VideoConfig.from_env({"VIDEO_SERVICE_DID": "did:web:x"}))


def test_plan_round_trip_and_rendition_choice() -> None:
    plan = Plan(1920, 1080, "30000/1001", True, ("1080p", "480p"))
    assert Plan.from_dict(plan.to_dict()) == plan
    assert [v.name for v in plan.variants()] == ["1080p", "480p"]
    assert Plan.from_dict(None) is None and Plan.from_dict({"renditions": []}) is None
    ladder = plan_ladder(1280, 720)
    assert [v.name for v in choose_variants(ladder, ["720p"])] == ["720p"]
    assert [v.name for v in choose_variants(ladder, ["1080p"])] == ["720p", "480p"]
    assert [v.name for v in choose_variants(ladder, None)] == ["720p", "480p"]


def test_plan_source_probes_and_never_upscales(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "c.mp4", seconds=1, size="1280x720")
    plan, info = plan_source(clip, LIMITS)
    assert (plan.width, plan.height, plan.has_audio) == (1280, 720, True)
    assert plan.renditions == ("720p", "480p")
    details = plan_details({"kept": 1}, plan, info)
    assert details["kept"] == 1 and details["strategy"] == "kubernetes"
    assert Plan.from_dict(details["plan"]) == plan
    only = plan_source(clip, LIMITS, ["480p"])[0]
    assert only.renditions == ("480p",)


def test_plan_source_rejects_a_non_video(tmp_path: Path) -> None:
    junk = tmp_path / "junk"
    junk.write_bytes(b"not a video\n" * 100)
    with pytest.raises(ValidationFailure):
        plan_source(junk, LIMITS)
