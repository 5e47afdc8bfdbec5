"""TranscodeLimits: the wall-clock budget, the thread count, and where the caps come from."""

from __future__ import annotations

import dataclasses
import os

import pytest

from atproto_video.core.config import TranscodeSettings
from atproto_video.transcoder.limits import TranscodeLimits


def test_timeout_grows_with_media_length() -> None:
    limits = TranscodeLimits(timeout_base_s=60, timeout_factor=20)
    assert limits.timeout_for(10) == 260
    assert limits.timeout_for(600) == 12_060
    assert limits.timeout_for(10) < limits.timeout_for(11)


def test_timeout_has_a_floor_for_very_short_or_unknown_lengths() -> None:
    """Startup costs the same for a 0.1 s clip as for a 1 s one."""
    limits = TranscodeLimits(timeout_base_s=5, timeout_factor=2)
    assert limits.timeout_for(0) == limits.timeout_for(0.2) == limits.timeout_for(1) == 7


def test_explicit_threads_are_passed_through() -> None:
    assert TranscodeLimits(threads=3).thread_count == 3


def test_automatic_threads_are_left_to_ffmpeg_on_small_machines(one_cpu: None) -> None:
    assert TranscodeLimits(threads=0).thread_count is None


def test_automatic_threads_are_capped_on_big_machines(monkeypatch: pytest.MonkeyPatch) -> None:
    """x264 would start 1.5 threads per core, each reserving stack against RLIMIT_AS."""
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(96)))  # no such CPU here
    assert TranscodeLimits(threads=0).thread_count == 16
    assert TranscodeLimits(threads=32).thread_count == 32  # an explicit choice wins


def test_from_settings_takes_the_transcode_section() -> None:
    settings = TranscodeSettings(ffmpeg_path="/opt/ff/ffmpeg", ffprobe_path="/opt/ff/ffprobe",
                                 max_duration_s=90, max_fps=30, threads=3)
    limits = TranscodeLimits.from_settings(settings)
    assert (limits.ffmpeg_path, limits.ffprobe_path) == ("/opt/ff/ffmpeg", "/opt/ff/ffprobe")
    assert (limits.max_duration_s, limits.max_fps, limits.threads) == (90.0, 30, 3)
    # Safety caps are not configurable per deployment: they keep their defaults.
    defaults = TranscodeLimits()
    assert (limits.max_frame_pixels, limits.max_total_pixels, limits.max_memory_bytes) == (
        defaults.max_frame_pixels, defaults.max_total_pixels, defaults.max_memory_bytes)


def test_limits_are_immutable() -> None:
    """One instance is shared by concurrent transcodes; changes go through replace()."""
    limits = TranscodeLimits()
    with pytest.raises(dataclasses.FrozenInstanceError):
        limits.max_fps = 120  # type: ignore[misc]
    assert dataclasses.replace(limits, max_fps=120).max_fps == 120
    assert limits.max_fps == 60
