"""Playable early: the lowest rendition completes first and the master playlist lists exactly
the complete renditions at every moment the transcoder publishes one (both strategies).

The ``single`` strategy runs the lowest rendition and the rest as two ffmpeg processes at once;
the tests that show it reach ffmpeg through a wrapper (``limits.ffmpeg_path``) that holds
either process back until the other is seen running, or makes one of them fail.
"""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

import pytest

from atproto_video.core.ladder import Variant
from atproto_video.transcoder import TranscodeLimits, transcode
from atproto_video.transcoder.contract import targets_for
from atproto_video.transcoder.encoding import MASTER
from atproto_video.transcoder.errors import EncodingFailure, TranscodeError, ValidationFailure
from atproto_video.transcoder.pipeline import (
    REST_NICENESS,
    EarlyMaster,
    Strategy,
    ladder_for,
    lowest_first,
)
from atproto_video.transcoder.probe import probe
from tests.support.media import make_clip
from tests.transcoder.media import ffprobe, parse_master_playlist, parse_media_playlist

#: How a wrapper waits (at most ~10 s) for a file another process writes.
WAIT_FOR = 'for _ in $(seq 200); do [ -e "$dir/{name}" ] && break; sleep 0.05; done'
#: Records the process id (the one ffmpeg or sleep then runs as, after exec).
RECORD_PID = 'echo $$ > "$dir/{name}.tmp" && mv "$dir/{name}.tmp" "$dir/{name}"'


@pytest.fixture(scope="module")
def fhd_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 s of 1080p: three renditions (1080p, 720p, 480p)."""
    return make_clip(tmp_path_factory.mktemp("src") / "fhd.mp4", size="1920x1080", seconds=3)


def complete_listed(out_dir: Path) -> list[str]:
    """The variant URIs the master lists, each checked complete: ENDLIST and every segment."""
    uris = [inf.uri for inf in parse_master_playlist(out_dir / MASTER)]
    for uri in uris:
        playlist = out_dir / uri
        assert "#EXT-X-ENDLIST" in playlist.read_text(), uri
        segments = parse_media_playlist(playlist).segments
        assert segments, uri
        for _, name in segments:
            assert (playlist.parent / name).stat().st_size > 0, name
    return uris


@pytest.mark.parametrize("strategy", ["single", "per_rendition"])
def test_master_lists_exactly_the_complete_renditions_as_they_finish(
    fhd_source: Path, tmp_path: Path, strategy: Strategy
) -> None:
    out = tmp_path / "out"
    seen: list[tuple[str, list[str], list[str]]] = []

    def on_rendition(variant: Variant) -> None:
        # Called synchronously when a rendition completes; per rendition, before the next
        # one starts, so the others are not there yet (single: the rest runs meanwhile).
        on_disk = sorted(p.parent.name for p in out.glob("*/video.m3u8")
                         if "#EXT-X-ENDLIST" in p.read_text())
        if strategy == "single":
            on_disk = [name for name in on_disk if name == variant.name]
        seen.append((variant.name, complete_listed(out), on_disk))

    limits = TranscodeLimits(threads=2, segment_s=1)
    result = transcode(fhd_source, out, limits, strategy=strategy, on_rendition=on_rendition)
    assert [v.name for v in result.variants] == ["1080p", "720p", "480p"]
    # The lowest first, then (per rendition) the next; never the last: that is the final layout.
    expected = [("480p", ["480p/video.m3u8"], ["480p"])]
    if strategy == "per_rendition":
        expected.append(("720p", ["720p/video.m3u8", "480p/video.m3u8"], ["480p", "720p"]))
    assert seen == expected
    assert complete_listed(out) == ["1080p/video.m3u8", "720p/video.m3u8", "480p/video.m3u8"]


def test_a_single_rendition_has_no_early_step(tmp_path: Path) -> None:
    src = make_clip(tmp_path / "small.mp4", size="640x360", seconds=1)
    called: list[Variant] = []
    result = transcode(src, tmp_path / "out", TranscodeLimits(threads=2),
                       on_rendition=called.append)
    assert len(result.variants) == 1 and called == []
    assert result.master_playlist.is_file()


@pytest.mark.parametrize("strategy", ["single", "per_rendition"])
def test_without_playable_early_nothing_is_published_and_single_decodes_once(
    fhd_source: Path, tmp_path: Path, strategy: Strategy
) -> None:
    """VIDEO_PLAYABLE_EARLY=0: no early master, and ``single`` is one ffmpeg process."""
    calls = tmp_path / "calls"
    wrapper = tmp_path / "ffmpeg"
    wrapper.write_text(f"#!/bin/sh\necho run >> '{calls}'\nexec ffmpeg \"$@\"\n")
    wrapper.chmod(0o755)
    called: list[Variant] = []
    limits = TranscodeLimits(ffmpeg_path=str(wrapper), threads=2, segment_s=1)
    result = transcode(fhd_source, tmp_path / "out", limits, strategy=strategy,
                       on_rendition=called.append, early=False)
    assert called == []
    runs = len(calls.read_text().splitlines())
    assert runs == (1 if strategy == "single" else len(targets_for(result.variants)))
    assert complete_listed(tmp_path / "out") == [
        "1080p/video.m3u8", "720p/video.m3u8", "480p/video.m3u8"]


@pytest.mark.parametrize("threads", [0, 3])
def test_single_early_decoder_threads_and_one_audio_encode(
    fhd_source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, threads: int
) -> None:
    """The rest's process decodes with one thread (its encoders fill the cores), the lowest's
    with ffmpeg's choice, unless VIDEO_TRANSCODE_THREADS says otherwise; the rest encodes its
    audio once for all its renditions, and each of its playlists and the MP4 carry it."""
    from atproto_video.transcoder.process import run as real_run

    calls: list[list[str]] = []

    def recording_run(argv: list[str], **kwargs: object) -> object:
        calls.append(list(argv))
        return real_run(argv, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr("atproto_video.transcoder.pipeline.run", recording_run)
    limits = TranscodeLimits(threads=threads, segment_s=1)
    transcode(fhd_source, tmp_path / "out", limits, strategy="single")

    def decoder_threads(argv: list[str]) -> str | None:
        before_input = argv[: argv.index("-i")]
        return before_input[before_input.index("-threads") + 1] if "-threads" in before_input \
            else None

    lowest, rest = sorted(calls, key=lambda argv: "480p/video.m3u8" not in " ".join(argv))
    expected = ("3", "3") if threads else (None, "1")
    assert (decoder_threads(lowest), decoder_threads(rest)) == expected
    assert rest.count("-c:a") == 1 and rest.count("0:1") == 1
    assert complete_listed(tmp_path / "out") == [
        "1080p/video.m3u8", "720p/video.m3u8", "480p/video.m3u8"]
    for path in ("720p/seg_000.ts", "1080p/seg_000.ts", "video.mp4"):
        info = ffprobe(tmp_path / "out" / path)
        assert sorted(st["codec_name"] for st in info["streams"]) == ["aac", "h264"], path


def test_renditions_are_ordered_lowest_first(fhd_source: Path) -> None:
    limits = TranscodeLimits()
    plan = ladder_for(probe(fhd_source, limits), limits)
    order = [t.name for t in lowest_first(targets_for(plan))]
    assert order == ["480p", "720p", "1080p", "mp4", "thumbnail"]


def test_early_master_skips_the_last_rendition_and_keeps_best_first(
    fhd_source: Path, tmp_path: Path
) -> None:
    limits = TranscodeLimits()
    plan = ladder_for(probe(fhd_source, limits), limits)
    published: list[str] = []
    early = EarlyMaster(plan, tmp_path, has_audio=False, on_rendition=lambda v: published.append(
        (tmp_path / MASTER).read_text()))
    early.completed(plan[2])
    early.completed(plan[0])
    early.completed(plan[1])  # the last: no early publication
    assert len(published) == 2
    assert [line for line in published[1].splitlines() if not line.startswith("#")] == [
        "1080p/video.m3u8", "480p/video.m3u8"]
    assert "mp4a" not in published[1]


def wrapped_ffmpeg(tmp: Path, *, lowest: str, rest: str) -> Path:
    """An ffmpeg that runs the shell snippet ``lowest`` before the lowest rendition's process
    (the one writing 480p/video.m3u8) and ``rest`` before the other, then the real ffmpeg."""
    wrapper = tmp / "ffmpeg"
    wrapper.write_text(f"""#!/bin/sh
dir='{tmp}'
case "$*" in
  *"480p/video.m3u8"*) {lowest} ;;
  *) {rest} ;;
esac
exec ffmpeg "$@"
""")
    wrapper.chmod(0o755)
    return wrapper


def nice_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[16])


def gone(pid: int) -> bool:
    """Exited (or a zombie nobody reaped yet): it runs no more code either way."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def test_single_encodes_the_rest_while_the_lowest_runs_and_publishes_the_lowest_first(
    fhd_source: Path, tmp_path: Path
) -> None:
    """The lowest rendition's ffmpeg starts only once the rest's process is running, and the
    rest's waits at a gate that opens when the lowest has been published: so the early master
    (480p alone) appears while the rest's process still runs, at a lower priority."""
    gate = tmp_path / "gate"
    wrapper = wrapped_ffmpeg(
        tmp_path,
        lowest=WAIT_FOR.format(name="rest.pid"),
        rest=f"{RECORD_PID.format(name='rest.pid')}; "
             f"while [ ! -e '{gate}' ]; do sleep 0.05; done",
    )
    out = tmp_path / "out"
    seen: list[tuple[str, list[str], bool, int]] = []
    progress: list[float] = []

    def on_rendition(variant: Variant) -> None:
        rest_pid = tmp_path / "rest.pid"
        assert rest_pid.exists(), "the rest's process was not started with the lowest's"
        pid = int(rest_pid.read_text())
        seen.append((variant.name, complete_listed(out), gone(pid), nice_of(pid)))
        gate.touch()

    limits = TranscodeLimits(ffmpeg_path=str(wrapper), threads=2, segment_s=1)
    try:
        result = transcode(fhd_source, out, limits, on_progress=progress.append,
                           on_rendition=on_rendition)
    finally:
        gate.touch()
    assert seen == [("480p", ["480p/video.m3u8"], False, REST_NICENESS)]
    assert complete_listed(out) == ["1080p/video.m3u8", "720p/video.m3u8", "480p/video.m3u8"]
    assert set(result.target_seconds) == {"480p", "all"}
    # One bar for both processes: it only grows, and ends at 1 only when all is done.
    assert progress == sorted(set(progress)) and progress[-1] == 1.0
    assert progress[-2] < 1.0


@pytest.mark.parametrize(
    ("failing", "message", "error"),
    [
        ("rest", "[mov @ 0x1] Invalid data found when processing input", ValidationFailure),
        ("lowest", "[libx264 @ 0x1] Cannot allocate memory", EncodingFailure),
    ],
)
def test_single_fails_cleanly_when_either_process_fails(
    fhd_source: Path, tmp_path: Path, failing: str, message: str,
    error: type[TranscodeError],
) -> None:
    """The other process, which would run for ten minutes, is killed at once, and the job
    fails with the failing process's error, mapped as for any ffmpeg run."""
    hang = f"{RECORD_PID.format(name='hanging.pid')}; exec sleep 600"
    fail = f"{WAIT_FOR.format(name='hanging.pid')}; echo '{message}' >&2; exit 1"
    snippets = {"lowest": fail, "rest": hang} if failing == "lowest" else {
        "lowest": hang, "rest": fail}
    wrapper = wrapped_ffmpeg(tmp_path, **snippets)
    published: list[Variant] = []
    # Short, so that a hanging process not killed fails the test with a timeout, not hangs it.
    limits = TranscodeLimits(ffmpeg_path=str(wrapper), threads=2, timeout_base_s=20,
                             timeout_factor=1)
    try:
        with pytest.raises(error) as raised:
            transcode(fhd_source, tmp_path / "out", limits, on_rendition=published.append)
        hanging = int((tmp_path / "hanging.pid").read_text())
        # transcode waited for both: the other process is gone already, not just signalled.
        assert gone(hanging)
        assert "did not finish" not in str(raised.value)
        assert published == []
    finally:
        with contextlib.suppress(FileNotFoundError, ValueError, ProcessLookupError):
            os.kill(int((tmp_path / "hanging.pid").read_text()), signal.SIGKILL)

