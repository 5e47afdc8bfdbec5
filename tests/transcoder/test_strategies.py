"""Both encoding strategies, the full ladder, segment timing and progress reporting."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import pytest

from atproto_video.transcoder import (
    TranscodeLimits,
    TranscodeResult,
    transcode,
    transcode_target,
)
from atproto_video.transcoder.pipeline import Strategy
from tests.support.media import make_clip
from tests.transcoder.layout import assert_valid_layout
from tests.transcoder.media import ffprobe, parse_master_playlist, parse_media_playlist

STRATEGIES: tuple[Strategy, ...] = ("single", "per_rendition")


@pytest.fixture(scope="module")
def hd_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """5 s of 720p30: two renditions of three 2 s segments (short segments keep this fast)."""
    return make_clip(tmp_path_factory.mktemp("src") / "hd.mp4", size="1280x720", seconds=5)


@pytest.fixture(scope="module")
def results(
    hd_source: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, tuple[TranscodeResult, list[float]]]:
    limits = TranscodeLimits(threads=2, segment_s=2)
    out: dict[str, tuple[TranscodeResult, list[float]]] = {}
    for strategy in STRATEGIES:
        progress: list[float] = []
        result = transcode(hd_source, tmp_path_factory.mktemp(strategy), limits,
                           strategy=strategy, on_progress=progress.append)
        out[strategy] = (result, progress)
    return out


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_layout_is_complete_and_valid(
    results: dict[str, tuple[TranscodeResult, list[float]]], strategy: str
) -> None:
    result, _ = results[strategy]
    assert [v.name for v in result.variants] == ["720p", "480p"]
    assert_valid_layout(result.out_dir, [(1280, 720), (854, 480)], has_audio=True,
                        fps=Fraction(30), check_all_segments=True)
    for path in (result.master_playlist, result.thumbnail, result.mp4):
        assert path.is_file()


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_segments_are_cut_on_forced_keyframes(
    results: dict[str, tuple[TranscodeResult, list[float]]], strategy: str
) -> None:
    result, _ = results[strategy]
    for variant in result.variants:
        playlist = parse_media_playlist(result.playlist(variant))
        assert playlist.target_duration == 2
        assert [round(d, 1) for d, _ in playlist.segments] == [2.0, 2.0, 1.0]


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_bandwidth_covers_every_segment(
    results: dict[str, tuple[TranscodeResult, list[float]]], strategy: str
) -> None:
    result, _ = results[strategy]
    for inf in parse_master_playlist(result.master_playlist):
        playlist_path = result.out_dir / inf.uri
        for duration, name in parse_media_playlist(playlist_path).segments:
            bits = (playlist_path.parent / name).stat().st_size * 8
            assert bits / duration <= int(inf.attributes["BANDWIDTH"]), name


def test_strategies_produce_the_same_layout(
    results: dict[str, tuple[TranscodeResult, list[float]]],
) -> None:
    single, per = results["single"][0], results["per_rendition"][0]

    def files(root: Path) -> list[str]:
        return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())

    assert files(single.out_dir) == files(per.out_dir)
    assert single.master_playlist.read_text() == per.master_playlist.read_text()
    for variant in single.variants:
        assert single.playlist(variant).read_text() == per.playlist(variant).read_text()
    durations = [float(ffprobe(r.mp4)["format"]["duration"]) for r in (single, per)]
    assert durations[0] == pytest.approx(durations[1], abs=0.05)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_progress_is_monotonic_and_complete(
    results: dict[str, tuple[TranscodeResult, list[float]]], strategy: str
) -> None:
    _, progress = results[strategy]
    assert len(progress) >= 2
    assert progress == sorted(progress)
    assert len(set(progress)) == len(progress)
    assert all(0.0 <= p <= 1.0 for p in progress)
    assert progress[-1] == 1.0
    assert all(p < 1.0 for p in progress[:-1]), "1.0 only once the outputs are verified"


def test_full_ladder_from_1080p(tmp_path: Path, limits: TranscodeLimits) -> None:
    src = make_clip(tmp_path / "fhd.mp4", size="1920x1080", seconds=1, rate=30)
    result = transcode(src, tmp_path / "out", limits)
    sizes = [(1920, 1080), (1280, 720), (854, 480)]
    assert_valid_layout(result.out_dir, sizes, has_audio=True)
    levels = {v.name: v.level for v in result.variants}
    assert levels == {"1080p": "4.0", "720p": "3.1", "480p": "3.1"}


def test_portrait_ladder_stays_portrait(tmp_path: Path, limits: TranscodeLimits) -> None:
    src = make_clip(tmp_path / "portrait.mp4", size="720x1280", seconds=1, audio=False)
    result = transcode(src, tmp_path / "out", limits, strategy="per_rendition")
    assert_valid_layout(result.out_dir, [(720, 1280), (480, 854)], has_audio=False)


def test_single_targets_as_cluster_jobs_run_them(tmp_path: Path, limits: TranscodeLimits) -> None:
    """One call per rung, as one Kubernetes Job each, then the master playlist."""
    src = make_clip(tmp_path / "small.mp4", size="320x240", seconds=1)
    out = tmp_path / "out"
    produced = {t: transcode_target(src, out, t, limits) for t in ("1080p", "720p", "480p")}
    assert produced["1080p"] is None and produced["720p"] is None
    assert produced["480p"] is not None and produced["480p"].name == "240p"
    assert not (out / "1080p").exists() and not (out / "720p").exists()
    for target in ("mp4", "thumbnail", "master"):
        progress: list[float] = []
        assert transcode_target(src, out, target, limits, progress.append) is None
        assert progress[-1] == 1.0
    assert_valid_layout(out, [(320, 240)], has_audio=True)


def test_rerun_replaces_stale_segments(tmp_path: Path, limits: TranscodeLimits) -> None:
    src = make_clip(tmp_path / "small.mp4", seconds=1)
    out = tmp_path / "out"
    (out / "240p").mkdir(parents=True)
    (out / "240p" / "seg_099.ts").write_bytes(b"stale")
    transcode(src, out, limits)
    assert not (out / "240p" / "seg_099.ts").exists()


def test_unknown_strategy_and_target(tmp_path: Path, limits: TranscodeLimits) -> None:
    src = make_clip(tmp_path / "small.mp4", seconds=0.5, audio=False)
    with pytest.raises(ValueError):
        transcode(src, tmp_path / "out", limits, strategy="magic")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        transcode_target(src, tmp_path / "out", "poster", limits)
