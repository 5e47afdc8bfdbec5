"""Turn ffmpeg `-progress` output into a monotonic 0..1 fraction.

The job status bar must never go backwards (SPEC section 2), and ffmpeg's out_time can jump
around (N/A at start, negative with edit lists), so every update goes through `Progress`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

ProgressCallback = Callable[[float], None]

#: Until the outputs are verified we never claim completion.
_RUNNING_CAP = 0.99


class Progress:
    """A monotonic fraction forwarded to an optional callback, only when it grows.

    Thread-safe: concurrent ffmpeg runs report from their own threads, and the callback sees
    their values one at a time, in increasing order.
    """

    def __init__(self, callback: ProgressCallback | None) -> None:
        self._callback = callback
        self._lock = threading.Lock()
        self.value = 0.0

    def update(self, fraction: float) -> None:
        fraction = min(max(fraction, 0.0), 1.0)
        with self._lock:
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
    """Overall progress across stages (ffmpeg runs) weighted by cost: the weighted sum of
    each stage's own fraction, so stages may run one after another (``stage_sink`` and
    ``finish_stage``) or at the same time (``sink(i)`` and ``finish(i)``, from any thread)."""

    def __init__(self, weights: Sequence[float], progress: Progress) -> None:
        total = sum(weights) or 1.0
        self._weights = [w / total for w in weights]
        self._fractions = [0.0] * len(weights)
        self._progress = progress
        self._lock = threading.Lock()
        self._index = 0

    def stage_sink(self) -> Callable[[float], None]:
        """A sink for the current stage's fraction (sequential stages)."""
        return self.sink(self._index)

    def finish_stage(self) -> None:
        self.finish(self._index)
        self._index += 1

    def sink(self, index: int) -> Callable[[float], None]:
        """A sink for stage `index`'s fraction."""
        return lambda fraction: self._report(index, fraction)

    def finish(self, index: int) -> None:
        self._report(index, 1.0)

    def _report(self, index: int, fraction: float) -> None:
        with self._lock:
            # A stage's own fraction never goes back either (ffmpeg's out_time can).
            self._fractions[index] = max(self._fractions[index], min(fraction, 1.0))
            done = sum(w * f for w, f in zip(self._weights, self._fractions, strict=True))
            self._progress.update(done * _RUNNING_CAP)
