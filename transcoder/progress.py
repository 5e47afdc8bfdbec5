"""Turn ffmpeg `-progress` output into a monotonic 0..1 fraction.

The job status bar must never go backwards (SPEC section 2), and ffmpeg's out_time can jump
around (N/A at start, negative with edit lists), so every update goes through `Progress`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

ProgressCallback = Callable[[float], None]

#: Until the outputs are verified we never claim completion.
_RUNNING_CAP = 0.99


class Progress:
    """A monotonic fraction forwarded to an optional callback, only when it grows."""

    def __init__(self, callback: ProgressCallback | None) -> None:
        self._callback = callback
        self.value = 0.0

    def update(self, fraction: float) -> None:
        fraction = min(max(fraction, 0.0), 1.0)
        if fraction <= self.value:
            return
        self.value = fraction
        if self._callback is not None:
            self._callback(fraction)

    def done(self) -> None:
        self.update(1.0)


class FfmpegProgressParser:
    """Feeds `key=value` lines from `-progress pipe:1` into a fraction of `duration_s`."""

    def __init__(self, duration_s: float, sink: Callable[[float], None]) -> None:
        self._duration_us = max(duration_s, 0.001) * 1_000_000
        self._sink = sink

    def feed(self, line: str) -> None:
        key, _, value = line.strip().partition("=")
        if key != "out_time_us":
            return
        try:
            out_us = int(value)
        except ValueError:  # "N/A" before the first frame
            return
        self._sink(min(out_us / self._duration_us, 1.0) * _RUNNING_CAP)


class WeightedStages:
    """Overall progress across sequential stages (per-rendition runs) weighted by cost."""

    def __init__(self, weights: Sequence[float], progress: Progress) -> None:
        total = sum(weights) or 1.0
        self._weights = [w / total for w in weights]
        self._progress = progress
        self._base = 0.0
        self._index = 0

    def stage_sink(self) -> Callable[[float], None]:
        """A sink for the current stage's fraction."""
        base, weight = self._base, self._weights[self._index]
        return lambda fraction: self._progress.update((base + weight * fraction) * _RUNNING_CAP)

    def finish_stage(self) -> None:
        self._base += self._weights[self._index]
        self._index += 1
        self._progress.update(self._base * _RUNNING_CAP)
