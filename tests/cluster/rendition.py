"""Checks on worker output shared by the image and cluster tests."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.support.media import make_clip

WORKER_UID = 10001  # USER in transcoder-image/Dockerfile


def prepare_workdir(tmp_path_factory: pytest.TempPathFactory, name: str) -> Path:
    """in/clip.mp4 (1280x720, 2 s) and an out/ dir the worker's non-root uid can write."""
    work = tmp_path_factory.mktemp(name)
    (work / "in").mkdir()
    (work / "out").mkdir()
    make_clip(work / "in" / "clip.mp4", size="1280x720", seconds=2.0)
    os.chown(work / "out", WORKER_UID, WORKER_UID)
    for p in (work, work / "in"):
        os.chmod(p, 0o755)
    os.chmod(work / "in" / "clip.mp4", 0o644)
    return work


def check_hls_rendition(out_dir: Path, rendition: str, height: int) -> None:
    """<rendition>/video.m3u8 is a finished VOD playlist whose segments exist at that height."""
    playlist = out_dir / rendition / "video.m3u8"
    found = sorted(str(p.relative_to(out_dir)) for p in out_dir.rglob("*"))
    assert playlist.is_file(), f"{playlist} missing; output has {found}"
    text = playlist.read_text()
    assert text.startswith("#EXTM3U"), text
    assert "#EXT-X-ENDLIST" in text, text
    segments = [
        line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")
    ]
    assert segments, f"no segments in {playlist}:\n{text}"
    for seg in segments:
        path = playlist.parent / seg
        assert path.is_file() and path.stat().st_size > 0, f"segment {path} missing or empty"
    probe = subprocess.run(
        [
            "ffprobe",
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=width,height",
            "-of",
            "json",
            str(playlist.parent / segments[0]),
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    stream = json.loads(probe.stdout)["streams"][0]
    assert stream["height"] == height, stream
    assert stream["width"] % 2 == 0, stream
