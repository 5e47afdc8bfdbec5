"""The transcode pipeline: probe, plan, run ffmpeg, verify, write the master playlist.

Two strategies produce the same layout (SPEC section 5):

* ``single``: one ffmpeg process decodes once and feeds every rendition, the thumbnail and
  the MP4 through a split filter; the top rendition is encoded once and muxed to both its
  HLS playlist and ``video.mp4`` (tee muxer). Fastest on one machine.
* ``per_rendition``: one process per target, which is what the cluster runs as one
  Kubernetes Job per rendition (``transcode_target``).

Policy decisions (documented here because callers and players depend on them):

* No audio in, no audio out: video-only renditions whose CODECS omit ``mp4a``. Inventing a
  silent track would cost bitrate and make players show a sound toggle for a silent clip;
  HLS players (AVPlayer, hls.js, ExoPlayer) handle video-only MPEG-TS renditions.
* Above ``max_fps`` the output rate is reduced (``SourceInfo.output_fps``), never rejected.
* Output is constant frame rate (variable-rate phone video included), so keyframes land
  exactly on segment boundaries and H.264 levels can be computed from the plan.
* Segments are 4 s MPEG-TS, the most widely playable HLS segment type.
* Playable early: the lowest rendition completes first and the master playlist is
  rewritten, atomically, as each rendition completes, listing only complete ones;
  ``on_rendition`` lets the caller publish each early rendition (see :class:`EarlyMaster`).
  ``single`` runs the lowest rendition as its own process, at the same time as the one for
  the rest, which runs at a lower CPU priority: the lowest gets the CPU it can use, the rest
  every cycle it leaves idle (one more decode, but no idle cores; see
  :func:`_run_lowest_and_rest`). ``per_rendition`` runs the renditions smallest first.
"""

from __future__ import annotations

import contextlib
import logging
import re
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from atproto_video.core.atomicfile import atomic_write_text
from atproto_video.core.diskspace import out_of_space, refuses_writes, says_out_of_space
from atproto_video.core.ladder import Variant, build_ladder
from atproto_video.transcoder import encoding, filtergraph
from atproto_video.transcoder.contract import (
    TARGET_MASTER,
    TARGET_MP4,
    TARGET_THUMBNAIL,
    TARGETS,
    Target,
    reference_variant,
    targets_for,
)
from atproto_video.transcoder.errors import (
    EncodingFailure,
    OutOfSpace,
    TranscodeError,
    ValidationFailure,
)
from atproto_video.transcoder.formats import input_args
from atproto_video.transcoder.limits import TranscodeLimits
from atproto_video.transcoder.master import write_master
from atproto_video.transcoder.probe import SourceInfo, probe
from atproto_video.transcoder.process import RunGroup, RunResult, clean_message, run
from atproto_video.transcoder.progress import (
    FfmpegProgressParser,
    Progress,
    ProgressCallback,
    WeightedStages,
)

__all__ = [
    "TARGETS",
    "EarlyMaster",
    "RenditionCallback",
    "Strategy",
    "TranscodeResult",
    "ladder_for",
    "transcode",
    "transcode_target",
    "write_master",
]

log = logging.getLogger(__name__)

Strategy = Literal["single", "per_rendition"]
#: Called with a rendition that completed before the others, once the master playlist in
#: ``out_dir`` lists it (so the caller can publish the rendition, then the master).
RenditionCallback = Callable[[Variant], None]

# ffmpeg messages that mean the input, not our encoders, is at fault.
_INPUT_ERRORS = re.compile(
    r"Invalid data found|moov atom not found|could not find codec parameters|"
    r"Error while decoding|corrupt|truncat|no frame!|Error opening input|"
    r"exceeds specified max pixel count|does not contain any stream",
    re.IGNORECASE,
)
#: The nice value of the ``single`` strategy's process for the renditions after the lowest
#: (weight 110 against 1024): it yields the CPU to the lowest rendition's process.
REST_NICENESS = 10
#: Decoder threads of the rest's process when playable early runs two at once (unless
#: VIDEO_TRANSCODE_THREADS sets them). ffmpeg's automatic count (cores + 1 frame threads)
#: spent 5.7 CPU-s decoding the 30 s 1080p benchmark source on 2 cores, one thread 4.75: the
#: rest's encoders keep the cores busy without frame-threaded decoding. The lowest keeps the
#: automatic count: its decode is on the way to first playable (2 threads saved ~0.4 CPU-s
#: but ran ~0.3 s longer).
REST_DECODE_THREADS = 1


class _Stopped(Exception):
    """An ffmpeg run killed because another run of the same transcode failed (not a
    TranscodeError: that other run's error is the one reported)."""


@dataclass(frozen=True)
class TranscodeResult:
    """Where everything landed; paths are inside `out_dir`."""

    source: SourceInfo
    variants: list[Variant]
    out_dir: Path
    strategy: Strategy
    elapsed_s: float
    #: Seconds per ffmpeg run, by target (a rung, "mp4", "thumbnail"; "all" for the single
    #: strategy's one process): what the encode metrics observe.
    target_seconds: dict[str, float] = field(default_factory=dict)

    @property
    def master_playlist(self) -> Path:
        return self.out_dir / encoding.MASTER

    @property
    def thumbnail(self) -> Path:
        return self.out_dir / encoding.THUMBNAIL

    @property
    def mp4(self) -> Path:
        return self.out_dir / encoding.MP4

    def playlist(self, variant: Variant) -> Path:
        return self.out_dir / variant.name / encoding.PLAYLIST


def ladder_for(source: SourceInfo, limits: TranscodeLimits) -> list[Variant]:
    """The ladder for this source at its output frame rate."""
    return build_ladder(source.width, source.height, source.output_fps(limits.max_fps))


def transcode(
    src: Path,
    out_dir: Path,
    limits: TranscodeLimits,
    *,
    strategy: Strategy = "single",
    on_progress: ProgressCallback | None = None,
    on_rendition: RenditionCallback | None = None,
    early: bool = True,
) -> TranscodeResult:
    """Produce the whole output layout for `src`; raises `TranscodeError` subclasses.

    ``early=False`` (VIDEO_PLAYABLE_EARLY=0) publishes nothing before the end, and the
    ``single`` strategy then decodes the source once, in one process.
    """
    if strategy not in ("single", "per_rendition"):
        raise ValueError(f"unknown strategy {strategy!r}")
    started = time.monotonic()
    source = probe(src, limits)
    plan = ladder_for(source, limits)
    progress = Progress(on_progress)
    seconds: dict[str, float] = {}
    master = EarlyMaster(plan, out_dir, has_audio=source.has_audio, on_rendition=on_rendition)
    with _outputs_fit(out_dir):
        out_dir.mkdir(parents=True, exist_ok=True)
        if strategy == "single":
            stages = WeightedStages(_single_weights(plan, early=early), progress)
            if early and len(plan) > 1:
                _run_lowest_and_rest(src, out_dir, source, plan, limits, stages, master, seconds)
            else:
                began = time.monotonic()
                _run_single(src, out_dir, source, plan, limits, stages.stage_sink())
                seconds["all"] = time.monotonic() - began
        else:
            targets = lowest_first(targets_for(plan))
            stages = WeightedStages([t.weight for t in targets], progress)
            for target in targets:
                began = time.monotonic()
                _run_target(src, out_dir, target.name, source, plan, limits,
                            stages.stage_sink())
                seconds[target.cli] = time.monotonic() - began
                stages.finish_stage()
                variant = find_variant(plan, target.name)
                if variant is not None and early:
                    master.completed(variant)
        write_master(plan, out_dir, has_audio=source.has_audio)
    progress.done()
    return TranscodeResult(source, plan, out_dir, strategy, time.monotonic() - started,
                           seconds)


def _run_lowest_and_rest(
    src: Path,
    out_dir: Path,
    source: SourceInfo,
    plan: Sequence[Variant],
    limits: TranscodeLimits,
    stages: WeightedStages,
    early: EarlyMaster,
    seconds: dict[str, float],
) -> None:
    """The ``single`` strategy with playable early: two ffmpeg processes at once, one for the
    lowest rendition, one (decode once, split) for the rest at :data:`REST_NICENESS`.

    Run one after the other, they left cores idle (the lowest rendition's process does not
    fill two, and nothing encodes while the rest starts up); at the same time, the niced rest
    takes only what the lowest leaves, so the first rendition is playable about as soon as
    when it ran alone. If either fails, the other is killed (one :class:`RunGroup`) and the
    first failure is the job's; both are waited for before this returns or raises.
    """
    rest = list(plan)
    lowest = rest.pop()
    group = RunGroup()

    def run_rest() -> float:
        began = time.monotonic()
        try:
            _run_single(src, out_dir, source, rest, limits, stages.sink(1),
                        niceness=REST_NICENESS, group=group,
                        decode_threads=REST_DECODE_THREADS)
        except BaseException:
            group.stop()
            raise
        return time.monotonic() - began

    began = time.monotonic()
    with futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="transcode-rest") as pool:
        rest_run = pool.submit(run_rest)
        try:
            _run_target(src, out_dir, lowest.name, source, plan, limits, stages.sink(0),
                        group=group)
            seconds[lowest.rung] = time.monotonic() - began
            stages.finish(0)
            early.completed(lowest)
        except _Stopped:
            rest_run.result()  # the rest failed first and stopped this run: its error
            raise
        except BaseException:
            group.stop()
            futures.wait([rest_run])  # killed, or failed the same way: this error first
            raise
        seconds["all"] = rest_run.result()
    stages.finish(1)


class EarlyMaster:
    """The master playlist while renditions complete one by one: rewritten (atomically) to
    list exactly the complete ones, best first, so a player can start on the first.

    The caller's ``on_rendition`` runs for every rendition but the last: after that one
    the whole layout is published as usual.
    """

    def __init__(
        self,
        plan: Sequence[Variant],
        out_dir: Path,
        *,
        has_audio: bool,
        on_rendition: RenditionCallback | None = None,
    ) -> None:
        self._plan = list(plan)
        self._out_dir = out_dir
        self._has_audio = has_audio
        self._on_rendition = on_rendition
        self._done: set[str] = set()

    def completed(self, variant: Variant) -> None:
        self._done.add(variant.name)
        if len(self._done) >= len(self._plan):
            return
        write_master([v for v in self._plan if v.name in self._done], self._out_dir,
                     has_audio=self._has_audio)
        if self._on_rendition is not None:
            self._on_rendition(variant)


def lowest_first(targets: Sequence[Target]) -> list[Target]:
    """Renditions smallest first (the first playable soonest), then the other targets."""
    renditions = [t for t in targets if t.name not in (TARGET_MP4, TARGET_THUMBNAIL)]
    others = [t for t in targets if t.name in (TARGET_MP4, TARGET_THUMBNAIL)]
    return sorted(renditions, key=lambda t: t.weight) + others


def _single_weights(plan: Sequence[Variant], *, early: bool = True) -> list[float]:
    """Progress weights of the single strategy's runs: encoded pixels, plus one decode."""
    pixels = [float(v.width * v.height) for v in plan]
    decode = pixels[0]
    if not early or len(plan) == 1:
        return [decode + sum(pixels)]
    return [decode + pixels[-1], decode + sum(pixels[:-1])]


def transcode_target(
    src: Path,
    out_dir: Path,
    target: str,
    limits: TranscodeLimits,
    on_progress: ProgressCallback | None = None,
) -> Variant | None:
    """Produce one target: a rendition (by rung or variant name), "thumbnail", "mp4" or
    "master". Returns the rendition produced, or None for the other targets and for a rung
    the source is too small for (nothing to do: the ladder never upscales).
    """
    if not is_target(target):
        raise ValueError(f"unknown target {target!r}")
    source = probe(src, limits)
    plan = ladder_for(source, limits)
    progress = Progress(on_progress)
    variant: Variant | None = None
    with _outputs_fit(out_dir):
        out_dir.mkdir(parents=True, exist_ok=True)
        if target == TARGET_MASTER:
            write_master(plan, out_dir, has_audio=source.has_audio)
        elif target in (TARGET_THUMBNAIL, TARGET_MP4):
            _run_target(src, out_dir, target, source, plan, limits, progress.update)
        else:
            variant = find_variant(plan, target)
            if variant is None:
                log.info("skipping %s: source %dx%d is smaller", target, source.width,
                         source.height)
            else:
                _run_target(src, out_dir, variant.name, source, plan, limits, progress.update)
    progress.done()
    return variant


@contextlib.contextmanager
def _outputs_fit(out_dir: Path) -> Iterator[None]:
    """Writing the outputs failed on a full volume: :class:`OutOfSpace`, whatever the symptom.

    ffmpeg's HLS muxer can exit 0 after a refused write, leaving empty playlists that would
    otherwise read as "no decodable frames" (the uploader told the video is bad); so when
    anything fails here the filesystem itself is asked whether it still takes a write.
    """
    try:
        yield
    except OutOfSpace:
        raise
    except (TranscodeError, OSError) as exc:
        where = out_dir if out_dir.is_dir() else out_dir.parent
        if out_of_space(exc) or refuses_writes(where):
            log.warning("outputs did not fit: the storage volume is full (%s)", exc)
            raise OutOfSpace() from exc
        raise


def is_target(target: str) -> bool:
    """Named targets, plus any `<short side>p` (a rung, or a small source's own variant)."""
    named = target in (*TARGETS, TARGET_MASTER)
    return named or re.fullmatch(r"[1-9][0-9]{0,4}p", target) is not None


def find_variant(plan: Sequence[Variant], target: str) -> Variant | None:
    for variant in plan:
        if target in (variant.name, variant.rung):
            return variant
    return None


def _base_argv(limits: TranscodeLimits) -> list[str]:
    argv = [limits.ffmpeg_path, "-hide_banner", "-nostdin", "-nostats", "-y",
            "-v", "error", "-progress", "pipe:1"]
    if limits.thread_count is not None:
        argv += ["-filter_complex_threads", str(limits.thread_count)]
    return argv


def _input(
    src: Path,
    source: SourceInfo,
    limits: TranscodeLimits,
    *,
    read_s: float,
    decode_threads: int | None = None,
) -> list[str]:
    """Input options; `-t` stops a file that lies about its length at the duration cap.

    ``decode_threads`` replaces ffmpeg's automatic decoder thread count unless the limits
    set one explicitly (VIDEO_TRANSCODE_THREADS).

    The cap, not the probed duration: container durations can be estimates (MPEG-TS/PS),
    and cutting at an underestimate would silently drop the end of a real video.
    """
    extra = ["-t", f"{read_s:.3f}"]
    threads = limits.thread_count if limits.thread_count is not None else decode_threads
    if threads is not None:
        extra += ["-threads", str(threads)]
    return input_args(src, source.format, max_frame_pixels=limits.max_frame_pixels, extra=extra)


def _media_seconds(source: SourceInfo, limits: TranscodeLimits) -> float:
    """Expected output length, for progress and the timeout."""
    return min(source.duration_s, limits.max_duration_s)


def _run_single(
    src: Path,
    out_dir: Path,
    source: SourceInfo,
    plan: Sequence[Variant],
    limits: TranscodeLimits,
    sink: Callable[[float], None],
    *,
    niceness: int = 0,
    group: RunGroup | None = None,
    decode_threads: int | None = None,
) -> None:
    """Decode once; split to every rendition plus the thumbnail; one output of every
    rendition and one audio encode, teed to each HLS playlist and (the top one) the MP4."""
    fps = source.output_fps(limits.max_fps)
    for variant in plan:
        _fresh_dir(out_dir / variant.name)
    _remove(out_dir / encoding.MP4, out_dir / encoding.THUMBNAIL)
    branches = len(plan) + 1
    labels = "".join(f"[s{i}]" for i in range(branches))
    graph = [f"[0:{source.video_stream}]{filtergraph.preprocess(source, fps)},"
             f"split={branches}{labels}"]
    graph += [f"[s{i}]{filtergraph.scale(v)}[v{i}]" for i, v in enumerate(plan)]
    graph.append(filtergraph.thumbnail(f"s{len(plan)}", "thumb", reference_variant(plan)))
    seconds = _media_seconds(source, limits)
    argv = [*_base_argv(limits),
            *_input(src, source, limits, read_s=limits.max_duration_s,
                    decode_threads=decode_threads),
            "-filter_complex", ";".join(graph)]
    argv += [arg for i in range(len(plan)) for arg in ("-map", f"[v{i}]")]
    argv += encoding.STRIP_METADATA
    for i, variant in enumerate(plan):
        argv += encoding.video_args(variant, source, fps, limits, i)
    argv += [*encoding.audio_args(source, plan[0]), "-max_muxing_queue_size", "4096",
             *encoding.renditions_output(plan, limits, has_audio=source.has_audio)]
    argv += ["-map", "[thumb]", *encoding.thumbnail_output()]
    _ffmpeg(argv, out_dir, seconds, limits, sink, niceness=niceness, group=group)
    for variant in plan:
        _check_rendition(out_dir, variant)
    _check_file(out_dir / encoding.MP4)
    _check_file(out_dir / encoding.THUMBNAIL)


def _run_target(
    src: Path,
    out_dir: Path,
    target: str,
    source: SourceInfo,
    plan: Sequence[Variant],
    limits: TranscodeLimits,
    sink: Callable[[float], None],
    *,
    group: RunGroup | None = None,
) -> None:
    """One ffmpeg process for one target (one Kubernetes Job in the cluster)."""
    fps = source.output_fps(limits.max_fps)
    pre = f"[0:{source.video_stream}]{filtergraph.preprocess(source, fps)}"
    seconds = _media_seconds(source, limits)
    read_s = limits.max_duration_s
    if target == TARGET_THUMBNAIL:
        seconds = min(seconds, filtergraph.THUMBNAIL_WINDOW_S + 1)
        read_s = seconds
        _remove(out_dir / encoding.THUMBNAIL)
        graph = f"{pre}[pre];{filtergraph.thumbnail('pre', 'out', reference_variant(plan))}"
        outputs = ["-map", "[out]", *encoding.thumbnail_output()]
    else:
        variant = reference_variant(plan) if target == TARGET_MP4 else find_variant(plan, target)
        if variant is None:
            raise ValueError(f"target {target!r} is not in the plan")
        graph = f"{pre},{filtergraph.scale(variant)}[out]"
        codec = [*encoding.STRIP_METADATA, *encoding.video_args(variant, source, fps, limits, 0),
                 *encoding.audio_args(source, variant), "-max_muxing_queue_size", "4096"]
        if target == TARGET_MP4:
            _remove(out_dir / encoding.MP4)
            outputs = ["-map", "[out]", *codec, *encoding.mp4_output()]
        else:
            _fresh_dir(out_dir / variant.name)
            outputs = ["-map", "[out]", *codec, *encoding.hls_output(variant, limits)]
    argv = [*_base_argv(limits),
            *_input(src, source, limits, read_s=read_s), "-filter_complex", graph, *outputs]
    _ffmpeg(argv, out_dir, seconds, limits, sink, group=group)
    if target in (TARGET_THUMBNAIL, TARGET_MP4):
        _check_file(out_dir / (encoding.THUMBNAIL if target == TARGET_THUMBNAIL else encoding.MP4))
    else:
        variant = find_variant(plan, target)
        assert variant is not None
        _check_rendition(out_dir, variant)


def _ffmpeg(
    argv: list[str],
    out_dir: Path,
    seconds: float,
    limits: TranscodeLimits,
    sink: Callable[[float], None],
    *,
    niceness: int = 0,
    group: RunGroup | None = None,
) -> None:
    parser = FfmpegProgressParser(seconds, sink)
    log.debug("running %s", " ".join(argv))
    result = run(argv, timeout_s=limits.timeout_for(seconds), cwd=out_dir,
                 max_memory_bytes=limits.max_memory_bytes, on_line=parser.feed,
                 niceness=niceness, group=group)
    _raise_for(result, limits.timeout_for(seconds))


def _raise_for(result: RunResult, timeout_s: float) -> None:
    if result.ok:
        return
    if result.stopped:
        raise _Stopped()
    if result.timed_out:
        raise EncodingFailure(f"transcoding did not finish within {timeout_s:.0f} s")
    if result.spawn_error is not None:
        raise EncodingFailure(f"cannot run ffmpeg ({result.spawn_error})")
    detail = "; ".join(clean_message(line) for line in result.stderr_tail[-3:]) or "no details"
    log.warning("ffmpeg exited with %s: %s", result.returncode, "\n".join(result.stderr_tail))
    error: TranscodeError
    if says_out_of_space(result.stderr_tail):
        error = OutOfSpace()
    elif result.out_of_resources:
        error = EncodingFailure(f"ffmpeg ran out of memory or was killed: {detail}")
    elif any(_INPUT_ERRORS.search(line) for line in result.stderr_tail):
        error = ValidationFailure(f"the video could not be decoded: {detail}")
    else:
        error = EncodingFailure(f"ffmpeg failed: {detail}")
    raise error


def _check_rendition(out_dir: Path, variant: Variant) -> None:
    """A rendition needs at least one segment and a complete (ENDLIST) playlist.

    ffmpeg writes `#EXT-X-TARGETDURATION:0` for clips under half a second, which some
    players treat as invalid; the smallest meaningful target is 1.
    """
    playlist = out_dir / variant.name / encoding.PLAYLIST
    text = playlist.read_text(encoding="utf-8") if playlist.exists() else ""
    if "#EXTINF" not in text or "#EXT-X-ENDLIST" not in text:
        raise ValidationFailure("the video contains no decodable frames")
    if "#EXT-X-TARGETDURATION:0\n" in text:
        atomic_write_text(
            playlist, text.replace("#EXT-X-TARGETDURATION:0\n", "#EXT-X-TARGETDURATION:1\n")
        )


def _check_file(path: Path) -> None:
    if not path.exists() or path.stat().st_size == 0:
        raise ValidationFailure("the video contains no decodable frames")


def _fresh_dir(path: Path) -> None:
    """Segments from an earlier attempt must not mix with this one's."""
    if path.is_dir():
        shutil.rmtree(path)
    path.mkdir(parents=True)


def _remove(*paths: Path) -> None:
    for path in paths:
        path.unlink(missing_ok=True)
