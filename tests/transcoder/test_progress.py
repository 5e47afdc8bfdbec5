"""Progress never goes backwards and reaches 1.0 only when the caller says the work is done."""

from __future__ import annotations

from pathlib import Path

import pytest

from atproto_video.transcoder.process import run
from atproto_video.transcoder.progress import FfmpegProgressParser, Progress, WeightedStages
from tests.support.media import make_clip

CAP = 0.99  # what running work may claim at most


def test_only_growth_is_forwarded_and_values_are_clamped() -> None:
    seen: list[float] = []
    progress = Progress(seen.append)
    for value in (-0.5, 0.0, 0.2, 0.1, 0.2, 0.7, 3.0, 0.9):
        progress.update(value)
    assert seen == [0.2, 0.7, 1.0]
    assert progress.value == 1.0


def test_done_reports_completion_once() -> None:
    seen: list[float] = []
    progress = Progress(seen.append)
    progress.update(0.5)
    progress.done()
    progress.done()
    assert seen == [0.5, 1.0]


def test_without_a_callback_the_value_is_still_tracked() -> None:
    progress = Progress(None)
    progress.update(0.3)
    progress.update(0.1)
    assert progress.value == 0.3


def test_parser_reads_out_time_us_as_a_fraction_of_the_duration() -> None:
    seen: list[float] = []
    parser = FfmpegProgressParser(10.0, seen.append)
    for line in ("frame=12\n", "out_time_us=N/A\n", "out_time_us=2500000\n", "out_time=00:00:05\n",
                 "out_time_us=5000000\n", "out_time_us=20000000\n", "progress=end\n"):
        parser.feed(line)
    assert seen == pytest.approx([0.25 * CAP, 0.5 * CAP, CAP])


def test_jumps_back_and_negative_times_do_not_move_the_bar_back() -> None:
    """ffmpeg's out_time can be negative (edit lists) or jump back; the bar never does."""
    seen: list[float] = []
    parser = FfmpegProgressParser(4.0, Progress(seen.append).update)
    for us in (-40_000, 1_000_000, 3_000_000, 2_000_000, 4_000_000):
        parser.feed(f"out_time_us={us}")
    assert seen == pytest.approx([0.25 * CAP, 0.75 * CAP, CAP])


def test_zero_duration_does_not_divide_by_zero() -> None:
    seen: list[float] = []
    FfmpegProgressParser(0.0, seen.append).feed("out_time_us=1")
    assert seen == [pytest.approx(CAP * 1e-3)]


def test_weighted_stages_split_the_bar_by_cost() -> None:
    seen: list[float] = []
    progress = Progress(seen.append)
    stages = WeightedStages([3.0, 1.0], progress)
    first = stages.stage_sink()
    first(0.5)
    first(1.0)
    stages.finish_stage()  # no new value: the stage already reported its end
    second = stages.stage_sink()
    second(0.0)
    second(0.5)
    stages.finish_stage()
    assert seen == pytest.approx([0.375 * CAP, 0.75 * CAP, 0.875 * CAP, CAP])
    assert progress.value < 1.0
    progress.done()
    assert seen[-1] == 1.0


def test_finishing_a_stage_that_reported_nothing_still_advances() -> None:
    progress = Progress(None)
    stages = WeightedStages([1.0, 1.0], progress)
    stages.stage_sink()
    stages.finish_stage()
    assert progress.value == pytest.approx(0.5 * CAP)


def test_zero_weights_never_report_progress() -> None:
    seen: list[float] = []
    stages = WeightedStages([0.0, 0.0], Progress(seen.append))
    stages.stage_sink()(1.0)
    stages.finish_stage()
    assert seen == []


def test_real_ffmpeg_progress_output(tmp_path: Path) -> None:
    """The parser understands what ``ffmpeg -progress pipe:1`` really prints."""
    src = make_clip(tmp_path / "in.mp4", seconds=2, audio=False)
    seen: list[float] = []
    parser = FfmpegProgressParser(2.0, Progress(seen.append).update)
    result = run(["ffmpeg", "-hide_banner", "-nostdin", "-nostats", "-v", "error",
                  "-progress", "pipe:1", "-i", str(src), "-f", "null", "-"],
                 timeout_s=60, on_line=parser.feed)
    assert result.ok, result.stderr_tail
    assert seen, "no out_time_us lines parsed"
    assert seen == sorted(seen) and len(set(seen)) == len(seen)
    assert 0.9 * CAP <= seen[-1] <= CAP
