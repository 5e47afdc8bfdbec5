from __future__ import annotations

import itertools

import pytest

from atproto_video.core.ladder import build_ladder, h264_level, scaled_size


def sizes(width: int, height: int, fps: float = 30) -> list[tuple[str, int, int]]:
    return [(v.name, v.width, v.height) for v in build_ladder(width, height, fps)]


def test_landscape_1080p_gets_three_rungs() -> None:
    assert sizes(1920, 1080) == [("1080p", 1920, 1080), ("720p", 1280, 720), ("480p", 854, 480)]


def test_portrait_stays_portrait_measured_on_short_side() -> None:
    assert sizes(1080, 1920) == [("1080p", 1080, 1920), ("720p", 720, 1280), ("480p", 480, 854)]


def test_square() -> None:
    assert sizes(1080, 1080) == [("1080p", 1080, 1080), ("720p", 720, 720), ("480p", 480, 480)]


def test_4k_is_capped_at_1080p() -> None:
    assert sizes(3840, 2160)[0] == ("1080p", 1920, 1080)
    assert sizes(2160, 3840)[0] == ("1080p", 1080, 1920)


def test_between_rungs_never_upscales() -> None:
    assert sizes(1279, 719) == [("480p", 854, 480)]
    assert sizes(1280, 720) == [("720p", 1280, 720), ("480p", 854, 480)]


def test_small_source_gets_one_variant_at_its_own_even_size() -> None:
    plan = build_ladder(321, 241)
    assert [(v.name, v.rung, v.width, v.height) for v in plan] == [("240p", "480p", 320, 240)]
    assert sizes(240, 320) == [("240p", 240, 320)]


@pytest.mark.parametrize(
    ("width", "height"),
    [*itertools.product([2, 3, 97, 479, 480, 481, 719, 853, 1081, 1919, 1920, 4095], repeat=2)],
)
def test_every_variant_is_even_within_source_and_keeps_aspect(width: int, height: int) -> None:
    plan = build_ladder(width, height)
    assert plan, "every source gets at least one variant"
    assert len({v.name for v in plan}) == len(plan)
    for v in plan:
        assert v.width % 2 == 0 and v.height % 2 == 0
        assert v.width <= max(width, 2) and v.height <= max(height, 2)
        assert min(v.width, v.height) <= 1080
        assert (v.width >= v.height) == (width >= height) or v.width == v.height
        if min(width, height) >= 16:
            # rounding to even moves each side by at most a pixel or two
            relative = (v.width / v.height) / (width / height)
            assert abs(relative - 1) <= 2 / min(v.width, v.height)


def test_scaled_size_is_exact_for_common_sources() -> None:
    assert scaled_size(1920, 1080, 720) == (1280, 720)
    assert scaled_size(1080, 1350, 480) == (480, 600)
    assert scaled_size(1083, 1080, 1080) == (1082, 1080)  # rounding never exceeds the source


@pytest.mark.parametrize(
    ("w", "h", "fps", "level"),
    [
        (1920, 1080, 30, "4.0"),
        (1920, 1080, 30000 / 1001, "4.0"),
        (1920, 1080, 60, "4.2"),
        (1280, 720, 30, "3.1"),
        (1280, 720, 60, "3.2"),
        (640, 480, 30, "3.0"),
        (854, 480, 25, "3.0"),
        (854, 480, 30, "3.1"),  # 1620 MBs x 30 fps exceeds level 3.0's 40500 MB/s
        (480, 854, 30, "3.1"),
        (1080, 1920, 30, "4.0"),
    ],
)
def test_h264_level_fits_frame_size_and_rate(w: int, h: int, fps: float, level: str) -> None:
    assert h264_level(w, h, fps, 5_000_000) == level


def test_variant_metadata_for_master_playlist() -> None:
    top, mid, low = build_ladder(1920, 1080)
    assert top.codecs() == "avc1.640028,mp4a.40.2"
    assert mid.codecs(has_audio=False) == "avc1.64001f"
    assert top.bandwidth() > mid.bandwidth() > low.bandwidth() > 0
    assert top.bandwidth(has_audio=False) < top.bandwidth()
    assert top.video_bitrate > mid.video_bitrate > low.video_bitrate


def test_high_frame_rate_gets_more_bits_and_a_higher_level() -> None:
    at30, at60 = build_ladder(1920, 1080, 30)[0], build_ladder(1920, 1080, 60)[0]
    assert at60.video_bitrate > at30.video_bitrate
    assert (at30.level, at60.level) == ("4.0", "4.2")


def test_invalid_size_is_rejected() -> None:
    with pytest.raises(ValueError):
        build_ladder(0, 1080)
