"""The worker entrypoint, run as a real process the way a Kubernetes Job runs it."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from atproto_video.transcoder.command import register
from atproto_video.transcoder.contract import EXIT_ENCODING, EXIT_VALIDATION
from tests.support.media import make_clip
from tests.support.waiting import free_port
from tests.transcoder.layout import assert_valid_layout


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "atproto_video.transcoder.command", "transcode", *args],
        capture_output=True, text=True, timeout=300, env={**os.environ, **(env or {})},
    )


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_clip(tmp_path_factory.mktemp("cli") / "in.mp4", seconds=1)


def test_all_targets_with_progress_file(source: Path, tmp_path: Path) -> None:
    progress = tmp_path / "progress.json"
    done = cli(str(source), str(tmp_path / "out"), "--progress-file", str(progress))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"target": "all", "variants": ["240p"]}
    assert json.loads(progress.read_text()) == {"target": "all", "progress": 100}
    assert_valid_layout(tmp_path / "out", [(320, 240)], has_audio=True)


def test_per_target_jobs_then_master(source: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    skipped = cli(str(source), str(out), "--target", "720p")
    assert skipped.returncode == 0
    assert json.loads(skipped.stdout)["skipped"] is True
    for target in ("480p", "thumbnail", "mp4", "master"):
        done = cli(str(source), str(out), "--target", target, "--strategy", "per_rendition")
        assert done.returncode == 0, done.stderr
    assert_valid_layout(out, [(320, 240)], has_audio=True)


def test_plan_prints_source_and_ladder(source: Path, tmp_path: Path) -> None:
    done = cli(str(source), str(tmp_path / "out"), "--target", "plan")
    assert done.returncode == 0, done.stderr
    plan = json.loads(done.stdout)
    assert plan["source"]["width"] == 320 and plan["source"]["has_audio"] is True
    assert [(v["name"], v["rung"]) for v in plan["variants"]] == [("240p", "480p")]
    assert not (tmp_path / "out").exists()


def test_validation_failure_exit_code_and_termination_log(tmp_path: Path) -> None:
    text = tmp_path / "notes.mp4"
    text.write_text("not a video\n")
    log = tmp_path / "termination-log"
    done = cli(str(text), str(tmp_path / "out"), "--termination-log", str(log))
    assert done.returncode == EXIT_VALIDATION
    body = json.loads(done.stderr.strip().splitlines()[-1])
    assert body["failureCode"] == "validation_failure" and "text" in body["error"]
    assert json.loads(log.read_text()) == body


def test_encoding_failure_exit_code(source: Path, tmp_path: Path) -> None:
    log = tmp_path / "termination-log"
    done = cli(str(source), str(tmp_path / "out"), "--termination-log", str(log),
               env={"VIDEO_FFMPEG_PATH": "/bin/false"})
    assert done.returncode == EXIT_ENCODING
    assert json.loads(log.read_text())["failureCode"] == "encoding_failure"


def test_env_limits_apply(source: Path, tmp_path: Path) -> None:
    longer = make_clip(tmp_path / "3s.mp4", seconds=3, audio=False)
    done = cli(str(longer), str(tmp_path / "out"), env={"VIDEO_MAX_DURATION_S": "1"})
    assert done.returncode == EXIT_VALIDATION
    assert "maximum is" in done.stderr
    bad = cli(str(source), str(tmp_path / "out"), env={"VIDEO_MAX_FPS": "fast"})
    assert bad.returncode == 2 and "VIDEO_MAX_FPS" in bad.stderr


@pytest.mark.parametrize("target", [("--target", "720p"),
                                    ("--target", "mp4", "--from-rendition", "720p")])
def test_an_unreachable_object_store_is_an_encoding_failure(
    tmp_path: Path, target: tuple[str, ...]
) -> None:
    """A transcode and a remux alike: the store's outage is named, and the exit code says a
    retry may help (the operator retries the Job)."""
    log = tmp_path / "termination-log"
    env = {"VIDEO_STORAGE": "s3", "VIDEO_S3_ENDPOINT": f"http://127.0.0.1:{free_port()}",
           "VIDEO_S3_REGION": "us-east-1", "VIDEO_S3_FORCE_PATH_STYLE": "true",
           "VIDEO_S3_RETRY_S": "0.5", "AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "b",
           "TMPDIR": str(tmp_path)}
    done = cli("s3://videos/jobs/job-00000001/source", "s3://videos/jobs/job-00000001/out",
               *target, "--termination-log", str(log), env=env)
    assert done.returncode == EXIT_ENCODING, done.stderr
    assert json.loads(log.read_text()) == {"failureCode": "encoding_failure",
                                           "error": "object storage is unavailable"}


def test_help_documents_targets_and_exit_codes() -> None:
    parser = argparse.ArgumentParser(prog="atproto-video")
    subparsers = parser.add_subparsers()
    register(subparsers)
    text = subparsers.choices["transcode"].format_help()
    for word in ("--target", "--progress-file", "--termination-log", "thumbnail", "master",
                 "validation_failure", "encoding_failure", "VIDEO_MAX_FPS", " 10 ", " 11 "):
        assert word in text, word


@pytest.mark.parametrize(("early", "runs"), [("1", 2), ("0", 1)])
def test_all_follows_playable_early(tmp_path: Path, early: str, runs: int) -> None:
    """``--target all`` reads VIDEO_PLAYABLE_EARLY as the embedded executor does: on, the
    lowest rendition gets an ffmpeg of its own (published first); off, one ffmpeg, one decode."""
    two_rungs = make_clip(tmp_path / "720p.mp4", seconds=1, size="1280x720")
    real = shutil.which("ffmpeg")
    assert real is not None
    calls = tmp_path / "ffmpeg-calls"
    wrapper = tmp_path / "ffmpeg"
    wrapper.write_text(f'#!/bin/sh\necho call >> "{calls}"\nexec "{real}" "$@"\n')
    wrapper.chmod(0o755)
    done = cli(str(two_rungs), str(tmp_path / "out"),
               env={"VIDEO_PLAYABLE_EARLY": early, "VIDEO_FFMPEG_PATH": str(wrapper)})
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"target": "all", "variants": ["720p", "480p"]}
    assert len(calls.read_text().splitlines()) == runs
    assert_valid_layout(tmp_path / "out", [(1280, 720), (854, 480)], has_audio=True)
