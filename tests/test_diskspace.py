"""A refused write for want of space is told apart from other I/O errors, wherever it hides."""

from __future__ import annotations

import errno
from collections.abc import Iterator
from pathlib import Path

import pytest

from atproto_video.core.diskspace import causes, out_of_space, refuses_writes, says_out_of_space
from tests.support.tmpfs import fill, small_tmpfs


def _wrapped(inner: BaseException) -> RuntimeError:
    try:
        try:
            raise inner
        except OSError as exc:
            raise RuntimeError("while writing") from exc
    except RuntimeError as outer:
        return outer


@pytest.mark.parametrize(("exc", "full"), [
    (OSError(errno.ENOSPC, "No space left on device"), True),
    (OSError(errno.EDQUOT, "Disk quota exceeded"), True),
    (_wrapped(OSError(errno.ENOSPC, "No space left on device")), True),
    (OSError(errno.EIO, "Input/output error"), False),
    (PermissionError(errno.EACCES, "Permission denied"), False),
    (ValueError("no space"), False),
])
def test_out_of_space(exc: BaseException, full: bool) -> None:
    assert out_of_space(exc) is full


def test_causes_visit_each_exception_once() -> None:
    inner = OSError(errno.EIO, "Input/output error")
    outer = _wrapped(inner)
    inner.__context__ = outer  # a cycle: the walk must still end
    assert list(causes(outer)) == [outer, inner]
    assert not out_of_space(outer)


def test_ffmpeg_reports() -> None:
    assert says_out_of_space(["av_interleaved_write_frame(): No space left on device"])
    assert says_out_of_space(["Error writing trailer: Disk quota exceeded"])
    assert not says_out_of_space(["Invalid data found when processing input"])


@pytest.fixture
def volume(tmp_path: Path) -> Iterator[Path]:
    with small_tmpfs(tmp_path / "volume", 4) as path:
        yield path


def test_refuses_writes_only_when_full(volume: Path) -> None:
    assert not refuses_writes(volume)
    fill(volume, "filler", leave=64 << 10)  # less than the probe: refused
    assert refuses_writes(volume)
    assert [p.name for p in volume.iterdir()] == ["filler"]  # the probe left nothing
    (volume / "filler").unlink()
    assert not refuses_writes(volume)
