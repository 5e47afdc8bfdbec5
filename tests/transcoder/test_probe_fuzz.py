"""Fuzzed probe results: ffprobe reports what the upload's headers claim (sizes, rates,
aspect ratios, rotation tags, frame counts), so the checks after it see hostile values in
ffprobe's own types and must answer a usable SourceInfo or a ValidationFailure."""

from __future__ import annotations

import math
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from atproto_video.transcoder import TranscodeLimits
from atproto_video.transcoder.errors import ValidationFailure
from atproto_video.transcoder.probe import SourceInfo, _check
from tests.support.fuzzing import bounded

LIMITS = TranscodeLimits(threads=2)
INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
#: Numbers as a header may spell them, in the string fields ffprobe copies through.
NUMBERS = st.one_of(
    st.sampled_from(["inf", "-inf", "nan", "1e400", "5e-324", "-0", "90", "-90", "270.4", "N/A",
                     "", "0x10", str(2**63 - 1)]),
    INT64.map(str),
    st.floats().map(str),
    st.text(max_size=8),
)
RATIOS = st.one_of(
    st.tuples(INT64, INT64).map(lambda nd: f"{nd[0]}/{nd[1]}"),
    st.sampled_from(["0/0", "30/1", "30000/1001", "1/1000000000", "1000000000/1", "N/A"]),
    st.text(max_size=8),
)
SIZES = st.one_of(st.integers(min_value=0, max_value=9000), INT64)


def mostly(usual: st.SearchStrategy[Any], odd: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Usual values three times in four, so runs get past the first check to the later ones."""
    return st.one_of(usual, usual, usual, odd)



def video_stream(index: int) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {"index": st.just(index), "codec_type": st.just("video"),
         "width": mostly(st.integers(1, 1920), SIZES),
         "height": mostly(st.integers(1, 1080), SIZES),
         "codec_name": mostly(st.sampled_from(["h264", "hevc"]), st.sampled_from(["none", ""]))},
        optional={
            "pix_fmt": st.text(max_size=8),
            "sample_aspect_ratio": RATIOS.map(lambda r: r.replace("/", ":")),
            "avg_frame_rate": RATIOS,
            "r_frame_rate": RATIOS,
            "nb_frames": mostly(st.integers(2, 10_000).map(str), NUMBERS),
            "nb_read_packets": NUMBERS,
            "duration": mostly(st.floats(0.1, 600).map(str), NUMBERS),
            "color_transfer": st.sampled_from(["bt709", "smpte2084", "arib-std-b67"]),
            "tags": st.fixed_dictionaries({"rotate": NUMBERS}, optional={"title": st.text()}),
            "side_data_list": st.lists(
                st.fixed_dictionaries({}, optional={"rotation": INT64 | st.floats()}), max_size=2
            ),
            "disposition": st.fixed_dictionaries({"attached_pic": st.integers(0, 1)}),
        },
    )  # fmt: skip


def audio_stream(index: int) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {"index": st.just(index), "codec_type": st.just("audio")},
        optional={"channels": SIZES, "codec_name": st.text(max_size=6)},
    )


@st.composite
def probe_results(draw: st.DrawFn) -> dict[str, Any]:
    """ffprobe's JSON: a format section and streams of ffprobe's types, hostile values."""
    count = draw(st.integers(min_value=0, max_value=3))
    streams = [draw(st.one_of(video_stream(i), video_stream(i), audio_stream(i)))
               for i in range(count)]  # fmt: skip
    fmt = draw(st.fixed_dictionaries(
        {"format_name": st.sampled_from(
            ["mov,mp4,m4a,3gp,3g2,mj2", "matroska,webm", "mpegts", "gif", "hls", ""])},
        optional={"duration": NUMBERS},
    ))  # fmt: skip
    return {"format": fmt, "streams": streams}


@bounded(400)
@given(probe_results(), st.sampled_from(["mov", "matroska", "mpegts", "gif"]))
def test_probe_checks_accept_a_usable_source_or_refuse(data: dict[str, Any], sniffed: str) -> None:
    try:
        info = _check(data, sniffed, LIMITS)
    except ValidationFailure as exc:
        assert exc.message
        return
    assert isinstance(info, SourceInfo)
    assert 0 < info.coded_width <= LIMITS.max_width and 0 < info.coded_height <= LIMITS.max_height
    assert info.width > 0 and info.height > 0 and 0 <= info.rotation < 360
    assert math.isfinite(info.duration_s) and 0 < info.duration_s <= LIMITS.max_duration_s + 0.5
    assert info.fps > 0 and 0 < info.output_fps(LIMITS.max_fps) <= LIMITS.max_fps
