"""Playable early: the lowest rendition completes first and the master playlist lists exactly
the complete renditions at every moment the transcoder publishes one (both strategies)."""

from __future__ import annotations

from pathlib import Path

import pytest

from atproto_video.core.ladder import Variant
from atproto_video.transcoder import TranscodeLimits, transcode
from atproto_video.transcoder.contract import targets_for
from atproto_video.transcoder.encoding import MASTER
from atproto_video.transcoder.pipeline import EarlyMaster, Strategy, ladder_for, lowest_first
from atproto_video.transcoder.probe import probe
from tests.support.media import make_clip
from tests.transcoder.media import parse_master_playlist, parse_media_playlist


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
        # Called synchronously before the next encode starts: the others are not there yet.
        on_disk = sorted(p.parent.name for p in out.glob("*/video.m3u8")
                         if "#EXT-X-ENDLIST" in p.read_text())
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
