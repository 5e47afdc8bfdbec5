"""Resource and safety limits for one transcode, built by the caller (never read implicitly)."""

from __future__ import annotations

import os
from dataclasses import dataclass

from atproto_video.core.config import TranscodeSettings

_AUTO_THREAD_CAP = 16


@dataclass(frozen=True)
class TranscodeLimits:
    """Caps applied before and during decoding.

    Sources above `max_fps` are not rejected: the output frame rate is reduced to at most the
    cap (by an integer divisor when possible, so 120 fps becomes 60 and 100 fps becomes 50).
    """

    ffmpeg_path: str = "ffmpeg"
    ffprobe_path: str = "ffprobe"
    max_duration_s: float = 600.0
    max_fps: int = 60
    #: Largest accepted coded width/height (8K UHD); ffmpeg also enforces `max_pixels` per frame.
    max_width: int = 7680
    max_height: int = 7680
    max_frame_pixels: int = 7680 * 4320
    #: Decoded pixels over the whole file: 10 minutes of 4K at 60 fps (decompression bombs).
    max_total_pixels: int = 3840 * 2160 * 60 * 600
    #: Threads per decoder, filter graph and encoder (0: ffmpeg decides, at most 16).
    threads: int = 0
    #: Address-space cap for each ffmpeg process (RLIMIT_AS); 0 disables it.
    max_memory_bytes: int = 6 * 1024**3
    #: Wall-clock budget: `timeout_base_s + timeout_factor * duration`.
    timeout_base_s: float = 60.0
    timeout_factor: float = 20.0
    #: Segment length for HLS (keyframes are forced at these boundaries).
    segment_s: int = 4

    @property
    def thread_count(self) -> int | None:
        """Explicit `-threads`, or None for ffmpeg's choice (1.5x cores for x264).

        On big machines the automatic choice would start hundreds of threads per process
        (and reserve their stacks against RLIMIT_AS), so "auto" is capped at 16.
        """
        if self.threads > 0:
            return self.threads
        return _AUTO_THREAD_CAP if len(os.sched_getaffinity(0)) > _AUTO_THREAD_CAP else None

    def timeout_for(self, duration_s: float) -> float:
        """Proportional to media length so a stuck or pathological decode always ends."""
        return self.timeout_base_s + self.timeout_factor * max(duration_s, 1.0)

    @classmethod
    def from_settings(cls, settings: TranscodeSettings) -> TranscodeLimits:
        """Limits from the transcode section: the service and the worker read it alike."""
        return cls(
            ffmpeg_path=settings.ffmpeg_path,
            ffprobe_path=settings.ffprobe_path,
            max_duration_s=float(settings.max_duration_s),
            max_fps=settings.max_fps,
            threads=settings.threads,
        )
