"""The worker image runs one rendition with no network, read-only root, as non-root."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.cluster.rendition import WORKER_UID, check_hls_rendition, prepare_workdir

pytestmark = [pytest.mark.image, pytest.mark.timeout(3600)]

DOCKER = "/usr/bin/docker"


def _docker_run(
    docker_host: str, image: str, work: Path, *args: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            DOCKER,
            "run",
            "--rm",
            "--network",
            "none",
            "--read-only",
            "--tmpfs",
            "/tmp",
            "--cap-drop",
            "ALL",
            "--security-opt",
            "no-new-privileges",
            "-v",
            f"{work}:/work",
            image,
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=dict(os.environ, DOCKER_HOST=docker_host),
    )


def test_image_transcodes_480p_offline(
    worker_image: str, docker_host: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    work = prepare_workdir(tmp_path_factory, "image-480p")
    proc = _docker_run(
        docker_host,
        worker_image,
        work,
        "/work/in/clip.mp4",
        "/work/out",
        "--target",
        "480p",
        "--progress-file",
        "/work/out/progress.json",
    )
    assert proc.returncode == 0, f"worker exited {proc.returncode}:\n{proc.stderr}"
    check_hls_rendition(work / "out", "480p", 480)
    # The container ran as the image's non-root user: everything it wrote is owned by it.
    playlist = work / "out" / "480p" / "video.m3u8"
    assert playlist.stat().st_uid == WORKER_UID
    progress = json.loads((work / "out" / "progress.json").read_text())
    assert progress["target"] == "480p"
    assert progress["progress"] == 100


def test_image_reports_validation_failure(
    worker_image: str, docker_host: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    work = prepare_workdir(tmp_path_factory, "image-bad")
    (work / "in" / "junk.mp4").write_bytes(b"this is not a video" * 100)
    os.chmod(work / "in" / "junk.mp4", 0o644)
    proc = _docker_run(
        docker_host,
        worker_image,
        work,
        "/work/in/junk.mp4",
        "/work/out",
        "--target",
        "480p",
        "--termination-log",
        "/work/out/termination-log",
    )
    assert proc.returncode == 10, f"exit {proc.returncode}, stderr:\n{proc.stderr}"
    line = json.loads(proc.stderr.strip().splitlines()[-1])
    assert line["failureCode"] == "validation_failure"
    assert json.loads((work / "out" / "termination-log").read_text()) == line


def test_one_image_serves_the_api_and_operator_roles(worker_image: str, docker_host: str) -> None:
    """The chart runs `atproto-video serve` and `atproto-video operator` from this image."""
    env = dict(os.environ, DOCKER_HOST=docker_host)
    run = [DOCKER, "run", "--rm", "--network", "none", "--read-only", "--tmpfs", "/tmp",
           "--entrypoint", "atproto-video", worker_image]
    crd = subprocess.run([*run, "operator", "--print-crd"], capture_output=True, text=True,
                         timeout=120, env=env)
    assert crd.returncode == 0, crd.stderr
    assert "kind: CustomResourceDefinition" in crd.stdout and "videojobs" in crd.stdout
    imports = subprocess.run(
        [DOCKER, "run", "--rm", "--network", "none", "--entrypoint", "python3", worker_image,
         "-c", "import kopf, kubernetes, boto3, uvicorn, atproto_video.api.service"],
        capture_output=True, text=True, timeout=120, env=env)
    assert imports.returncode == 0, imports.stderr
