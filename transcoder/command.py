"""`atproto-video transcode`: the worker container's entrypoint (one Kubernetes Job per target).

Failures are reported the way Kubernetes and the operator read them: one JSON line
`{"failureCode": ..., "error": ...}` on stderr and in `--termination-log`, and a distinct exit
code per failure class so a Job's status alone says whether retrying could help.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from atproto_video.core.atomicfile import atomic_write_text
from atproto_video.core.config import ConfigError, Strategy, TranscodeSettings
from atproto_video.core.errors import StorageUnavailable
from atproto_video.transcoder.contract import (
    EXIT_ENCODING,
    EXIT_FOR_FAILURE,
    EXIT_OK,
    EXIT_USAGE,
    EXIT_VALIDATION,
    TARGET_MASTER,
    TARGET_MP4,
    TARGETS,
)
from atproto_video.transcoder.errors import EncodingFailure, TranscodeError
from atproto_video.transcoder.limits import TranscodeLimits
from atproto_video.transcoder.pipeline import (
    is_target,
    ladder_for,
    transcode,
    transcode_target,
)
from atproto_video.transcoder.probe import SourceInfo, probe
from atproto_video.transcoder.remux import remux_rendition
from atproto_video.transcoder.segments import Segment, encode_segment, segment_at

log = logging.getLogger(__name__)

_ALL_TARGETS = (*TARGETS, TARGET_MASTER, "all", "plan")

_EPILOG = f"""\
targets:
  1080p, 720p, 480p  one HLS rendition (<name>/video.m3u8 + segments); a rung above the
                     source's size is skipped (exit 0). A source smaller than 480p gets one
                     variant named after its short side (e.g. 240p), made by target 480p.
  thumbnail          thumbnail.jpg (a representative non-black frame from the start)
  mp4                video.mp4 (faststart, the top rendition, at most 1080p)
  mp4 --from-rendition V
                     video.mp4 remuxed (stream copy, no re-encode) from the complete
                     rendition V/video.m3u8 under OUTPUT_DIR (a segment-encoded job's
                     joined top rendition); SOURCE is not read
  master             playlist.m3u8, written from the plan (run after the renditions)
  <rendition> --segment K/N --segment-seconds S [--source-info JSON]
                     segment K of N of a long rendition: <rendition>/part_K.m3u8 and its
                     media segments; the parts are joined into video.m3u8 without re-encoding.
                     --source-info: the "source" object of --target plan, from the probe
                     the operator recorded; the worker then runs no ffprobe (it probes when
                     the facts are unusable or the file is of another container)
  all                everything, using --strategy
  plan               print the source info and the ladder as JSON, write nothing

exit codes:
  {EXIT_OK}   success
  {EXIT_VALIDATION}  validation_failure: the input is not an acceptable video (do not retry)
  {EXIT_ENCODING}  encoding_failure: ffmpeg failed or timed out
  On failure one JSON line {{"failureCode": ..., "error": ...}} goes to stderr and to
  --termination-log.

environment:
  VIDEO_FFMPEG_PATH, VIDEO_FFPROBE_PATH  binaries (default: from PATH)
  VIDEO_MAX_DURATION_S                   longest accepted video in seconds (600)
  VIDEO_MAX_FPS                          output frame-rate cap; faster sources are reduced (60)
  VIDEO_TRANSCODE_THREADS                threads per ffmpeg process, 0 = auto (0)
"""


def register(subparsers: Any) -> None:
    """Add the `transcode` subcommand to the `atproto-video` CLI."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "transcode",
        help="transcode one video into the HLS/MP4/thumbnail layout (worker entrypoint)",
        description="Probe SOURCE with a strict container allow-list (chosen by content:\n"
        "MP4/QuickTime, Matroska/WebM, MPEG-PS/TS, GIF, AVI) and write the requested\n"
        "target(s) under OUTPUT_DIR: playlist.m3u8, <rendition>/video.m3u8 + segments,\n"
        "thumbnail.jpg and video.mp4.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    configure(parser)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", metavar="SOURCE", help="the uploaded file, or an s3:// URI")
    parser.add_argument("output_dir", metavar="OUTPUT_DIR",
                        help="layout root, or an s3:// prefix to publish to")
    parser.add_argument(
        "--target", default="all", metavar="TARGET",
        help=f"one of {', '.join(_ALL_TARGETS)} (default: all)",
    )
    parser.add_argument(
        "--strategy", choices=("single", "per_rendition"), default="single",
        help="for --target all: one ffmpeg process (default) or one per target",
    )
    parser.add_argument(
        "--segment", metavar="K/N",
        help="encode only segment K (from 0) of N of a rendition target (segment-parallel "
        "encoding); writes <rendition>/part_K.m3u8 and its media, joined later",
    )
    parser.add_argument(
        "--segment-seconds", type=int, default=0, metavar="S",
        help="the segment length for --segment (a multiple of 8)",
    )
    parser.add_argument(
        "--source-info", metavar="JSON",
        help="with --segment: the source's probe result (--target plan's \"source\"), so "
        "this worker need not run ffprobe",
    )
    parser.add_argument(
        "--from-rendition", metavar="VARIANT",
        help="for --target mp4: remux the complete rendition VARIANT already in OUTPUT_DIR "
        "(segment-parallel encoding) instead of encoding the source",
    )
    parser.add_argument(
        "--progress-file", metavar="PATH",
        help='rewritten atomically with {"target": ..., "progress": 0-100} (or an s3:// URI)',
    )
    parser.add_argument(
        "--termination-log", type=Path, metavar="PATH",
        help="where the failure JSON goes too (Kubernetes: /dev/termination-log)",
    )
    parser.set_defaults(func=run_command)


def run_command(args: argparse.Namespace) -> int:
    target: str = args.target
    if not _valid_target(target):
        return _fail(args, EncodingFailure(f"unknown target {target!r}"), exit_code=EXIT_USAGE)
    try:
        settings = TranscodeSettings.from_env()
        limits = TranscodeLimits.from_settings(settings)
    except ConfigError as exc:
        return _fail(args, EncodingFailure(f"configuration error: {exc}"), exit_code=EXIT_USAGE)
    try:
        segment = _segment(args, target)
        rendition = _from_rendition(args, target)
        facts = _source_info(args, segment)
    except ValueError as exc:
        return _fail(args, EncodingFailure(str(exc)), exit_code=EXIT_USAGE)
    if rendition is not None:
        return _run_remux(args, rendition, limits)
    remote = str(args.source).startswith("s3://")
    if remote:
        return _run_remote(args, target, limits, segment, facts,
                           early=settings.playable_early)
    path = Path(args.progress_file) if args.progress_file else None
    reporter = ProgressReport(target, (lambda body, _final: _write_file(path, body))
                              if path is not None else None)
    reporter(0.0)
    try:
        summary = _run(Path(args.source), Path(args.output_dir), args.strategy, target, limits,
                       reporter, segment, facts, early=settings.playable_early)
    except TranscodeError as exc:
        return _fail(args, exc)
    except Exception:
        log.exception("transcode crashed")
        return _fail(args, EncodingFailure("internal error while transcoding"))
    reporter(1.0)
    print(json.dumps(summary, separators=(",", ":")))
    return EXIT_OK


def _valid_target(target: str) -> bool:
    return target in _ALL_TARGETS or is_target(target)


def _segment(args: argparse.Namespace, target: str) -> Segment | None:
    """``--segment K/N`` with ``--segment-seconds``, for a rendition target only."""
    if not args.segment:
        return None
    if not (target.endswith("p") and is_target(target)):
        raise ValueError("--segment applies to a rendition target (e.g. 720p)")
    index, _, count = str(args.segment).partition("/")
    try:
        return segment_at(int(index), int(count), int(args.segment_seconds))
    except ValueError:
        raise ValueError(f"bad --segment {args.segment!r} / --segment-seconds") from None


def _source_info(args: argparse.Namespace, segment: Segment | None) -> SourceInfo | None:
    """``--source-info``: only with ``--segment``; facts that do not parse are logged and
    ignored (the worker probes), so an operator and a worker of different versions still
    work together."""
    raw: str | None = args.source_info
    if raw is None:
        return None
    if segment is None:
        raise ValueError("--source-info applies with --segment")
    try:
        data = json.loads(raw)
    except ValueError:
        data = None
    facts = SourceInfo.from_json(data)
    if facts is None:
        log.warning("ignoring unusable --source-info; probing the source")
    return facts


def _from_rendition(args: argparse.Namespace, target: str) -> str | None:
    """``--from-rendition V``: only with ``--target mp4``, V a variant name (e.g. 720p)."""
    name: str | None = args.from_rendition
    if name is None:
        return None
    if target != TARGET_MP4 or not re.fullmatch(r"[1-9][0-9]{0,4}p", name):
        raise ValueError("--from-rendition takes a variant name (e.g. 720p), with --target mp4")
    return name


def _run_remux(args: argparse.Namespace, rendition: str, limits: TranscodeLimits) -> int:
    """The MP4 from a complete rendition: locally in OUTPUT_DIR, or fetched from object
    storage into scratch and the MP4 published back."""
    remote = str(args.output_dir).startswith("s3://")
    files = None
    if remote:
        from atproto_video.core.s3 import WorkerFiles  # boto3 loads only here

        files = WorkerFiles.from_env()
    uri: str | None = args.progress_file
    write: Callable[[str, bool], None] | None = None
    if uri is not None and files is not None:
        remote_files = files
        write = lambda body, final: remote_files.put_progress(uri, body, final=final)  # noqa: E731
    elif uri is not None:
        write = lambda body, _final: _write_file(Path(uri), body)  # noqa: E731
    reporter = ProgressReport(TARGET_MP4, write)
    reporter(0.0)
    try:
        if files is not None:
            out_dir = files.out_dir()
            files.fetch_rendition(args.output_dir, rendition, out_dir)
            mp4 = remux_rendition(out_dir, rendition, limits, on_progress=reporter)
            files.publish_file(mp4, args.output_dir)
        else:
            remux_rendition(Path(args.output_dir), rendition, limits, on_progress=reporter)
    except TranscodeError as exc:
        return _fail(args, exc)
    except StorageUnavailable as exc:  # raised by object storage only
        log.error("%s", exc)
        return _fail(args, EncodingFailure("object storage is unavailable"))
    except Exception:
        log.exception("remux crashed")
        return _fail(args, EncodingFailure("internal error while remuxing"))
    reporter(1.0)
    print(json.dumps({"target": TARGET_MP4, "from_rendition": rendition},
                     separators=(",", ":")))
    return EXIT_OK


def _run_remote(
    args: argparse.Namespace, target: str, limits: TranscodeLimits, segment: Segment | None,
    facts: SourceInfo | None = None,
    *,
    early: bool = True,
) -> int:
    """Object storage: fetch the source into scratch (TMPDIR, an emptyDir in a pod),
    transcode there, publish the outputs, report progress as an object."""
    from atproto_video.core.s3 import WorkerFiles  # boto3 loads only here

    files = WorkerFiles.from_env()
    uri: str | None = args.progress_file
    reporter = ProgressReport(target, (lambda body, final: files.put_progress(
        uri, body, final=final)) if uri is not None else None)
    reporter(0.0)
    try:
        source = files.fetch_source(args.source)
        out_dir = files.out_dir()
        summary = _run(source, out_dir, args.strategy, target, limits, reporter, segment, facts,
                       early=early)
        if target != "plan":
            files.publish(out_dir, args.output_dir)
    except TranscodeError as exc:
        return _fail(args, exc)
    except FileNotFoundError:
        return _fail(args, EncodingFailure("the uploaded file is missing"))
    except StorageUnavailable as exc:
        log.error("%s", exc)
        return _fail(args, EncodingFailure("object storage is unavailable"))
    except Exception:
        log.exception("transcode crashed")
        return _fail(args, EncodingFailure("internal error while transcoding"))
    reporter(1.0)
    print(json.dumps(summary, separators=(",", ":")))
    return EXIT_OK


def _run(
    source: Path,
    out_dir: Path,
    strategy: Strategy,
    target: str,
    limits: TranscodeLimits,
    reporter: Callable[[float], None],
    segment: Segment | None = None,
    facts: SourceInfo | None = None,
    *,
    early: bool = True,
) -> dict[str, Any]:
    if target == "plan":
        info = probe(source, limits)
        plan = ladder_for(info, limits)
        return {
            "source": {**info.to_json(), "has_audio": info.has_audio},
            "fps": str(info.output_fps(limits.max_fps)),
            "variants": [asdict(v) for v in plan],
        }
    if segment is not None:
        done = encode_segment(source, out_dir, target, segment, limits, on_progress=reporter,
                              facts=facts)
        return {"target": target, "segment": segment.name, "skipped": not done}
    if target == "all":
        result = transcode(source, out_dir, limits, strategy=strategy, on_progress=reporter,
                           early=early)
        return {"target": target, "variants": [v.name for v in result.variants]}
    variant = transcode_target(source, out_dir, target, limits, on_progress=reporter)
    produced = variant.name if variant else None
    return {"target": target, "variant": produced, "skipped": target.endswith("p") and not variant}


def _fail(args: argparse.Namespace, error: TranscodeError, *, exit_code: int | None = None) -> int:
    line = json.dumps(error.to_json())
    print(line, file=sys.stderr)
    termination_log: Path | None = args.termination_log
    if termination_log is not None:
        try:
            termination_log.write_text(line + "\n", encoding="utf-8")
        except OSError as exc:
            print(f"cannot write termination log: {exc}", file=sys.stderr)
    if exit_code is not None:
        return exit_code
    return EXIT_FOR_FAILURE.get(error.failure_code, EXIT_ENCODING)


class ProgressReport:
    """Whole percentages as ``{"target": ..., "progress": N}``, written only when they grow
    (cheap on shared volumes and object stores); ``write(body, final)``, final at 100."""

    def __init__(self, target: str, write: Callable[[str, bool], None] | None) -> None:
        self._target = target
        self._write = write
        self._last = -1

    def __call__(self, fraction: float) -> None:
        percent = int(fraction * 100)
        if self._write is None or percent <= self._last:
            return
        self._last = percent
        self._write(json.dumps({"target": self._target, "progress": percent}), percent >= 100)


def _write_file(path: Path, body: str) -> None:
    """Atomically: the operator polls the file while it is rewritten."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, body + "\n")


def main(argv: list[str] | None = None) -> int:
    """Standalone entry (`python -m atproto_video.transcoder.command`), same as the CLI."""
    logging.basicConfig(level=os.environ.get("VIDEO_LOG_LEVEL", "warning").upper())
    parser = argparse.ArgumentParser(prog="atproto-video")
    sub = parser.add_subparsers(dest="command", required=True)
    register(sub)
    args = parser.parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
