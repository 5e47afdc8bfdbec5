"""Progress files written by workers, and how the operator adds them up."""

from __future__ import annotations

from pathlib import Path

from atproto_video.ladder import plan_ladder
from atproto_video.operator.progress import aggregate, read_progress, targets_for


def test_targets_follow_the_ladder() -> None:
    targets = targets_for(plan_ladder(1920, 1080))
    assert [(t.name, t.cli) for t in targets] == [
        ("1080p", "1080p"), ("720p", "720p"), ("480p", "480p"), ("mp4", "mp4"),
        ("thumbnail", "thumbnail")]
    small = targets_for(plan_ladder(426, 240))
    assert next((t.name, t.cli) for t in small) == ("240p", "480p")
    assert len(small) == 3


def test_read_progress(tmp_path: Path) -> None:
    f = tmp_path / "p.json"
    assert read_progress(f) is None
    f.write_text('{"target": "720p", "progress": 42}')
    assert read_progress(f) == 42
    f.write_text('{"progress": 250.5}')
    assert read_progress(f) == 100
    for junk in ('{"progress": "50"}', "{half", "[]", '{"progress": true}', "x" * 5000):
        f.write_text(junk)
        assert read_progress(f) is None


def test_aggregate_is_weighted_and_reaches_100_only_when_all_done() -> None:
    targets = targets_for(plan_ladder(1280, 720))
    names = [t.name for t in targets]
    assert aggregate(targets, {}) == 0
    assert aggregate(targets, dict.fromkeys(names, 100)) == 100
    almost = {**dict.fromkeys(names, 100), "thumbnail": 99}
    assert aggregate(targets, almost) == 99
    # The 720p rendition weighs more than the 480p one.
    assert aggregate(targets, {"720p": 100}) > aggregate(targets, {"480p": 100})
