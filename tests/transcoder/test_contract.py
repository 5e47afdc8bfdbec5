"""The worker contract: targets, the reference variant, progress weights, exit codes."""

from __future__ import annotations

import pytest

from atproto_video.core.ladder import build_ladder
from atproto_video.core.lexicon import FailureCode
from atproto_video.transcoder.contract import (
    EXIT_ENCODING,
    EXIT_FOR_FAILURE,
    EXIT_VALIDATION,
    aggregate,
    reference_variant,
    targets_for,
)


def test_targets_follow_the_ladder() -> None:
    targets = targets_for(build_ladder(1920, 1080))
    assert [(t.name, t.cli) for t in targets] == [
        ("1080p", "1080p"), ("720p", "720p"), ("480p", "480p"), ("mp4", "mp4"),
        ("thumbnail", "thumbnail")]
    small = targets_for(build_ladder(426, 240))
    assert next((t.name, t.cli) for t in small) == ("240p", "480p")
    assert len(small) == 3


def test_mp4_and_thumbnail_weigh_by_the_reference_variant() -> None:
    plan = build_ladder(720, 1280)  # portrait: the reference is still the top rung
    top = reference_variant(plan)
    assert top.name == "720p" and (top.width, top.height) == (720, 1280)
    weights = {t.name: t.weight for t in targets_for(plan)}
    assert weights["mp4"] == weights["720p"] == 720 * 1280
    assert weights["thumbnail"] == pytest.approx(0.02 * 720 * 1280)
    with pytest.raises(ValueError):
        reference_variant([])


def test_aggregate_is_weighted_and_reaches_100_only_when_all_done() -> None:
    targets = targets_for(build_ladder(1280, 720))
    names = [t.name for t in targets]
    assert aggregate(targets, {}) == 0
    assert aggregate(targets, dict.fromkeys(names, 100)) == 100
    almost = {**dict.fromkeys(names, 100), "thumbnail": 99}
    assert aggregate(targets, almost) == 99
    # The 720p rendition weighs more than the 480p one.
    assert aggregate(targets, {"720p": 100}) > aggregate(targets, {"480p": 100})


def test_exit_codes_tell_validation_from_encoding() -> None:
    assert EXIT_FOR_FAILURE[FailureCode.VALIDATION.value] == EXIT_VALIDATION == 10
    assert EXIT_FOR_FAILURE[FailureCode.ENCODING.value] == EXIT_ENCODING == 11
