"""``atproto-video try-upload`` (cli/tryupload.py) against a real ``serve`` process."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.media import make_clip
from tests.support.service import ServiceProcess

SERVICE_DID = "did:web:video.test"


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    svc = ServiceProcess(tmp_path_factory.mktemp("svc"), {}).start()
    yield svc
    svc.stop()


def try_upload(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "atproto_video.cli", "try-upload", *args, "--timeout", "300"],
        env={k: v for k, v in os.environ.items() if not k.startswith("VIDEO_")},
        capture_output=True, text=True, timeout=400, check=False,
    )  # fmt: skip


def test_a_generated_clip_is_uploaded_and_completes(service: ServiceProcess) -> None:
    out = try_upload(service.url, "--service-did", SERVICE_DID)
    assert out.returncode == 0, out.stdout + out.stderr + service.logs()[-3000:]
    assert '"state": "JOB_STATE_COMPLETED"' in out.stdout
    # The throwaway identity resolved over loopback is the job's owner.
    assert '"did": "did:web:localhost%3A' in out.stdout


def test_a_given_file_is_uploaded(service: ServiceProcess, tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "given.mp4", seconds=1, size="320x240")
    out = try_upload(service.url, str(clip), "--service-did", SERVICE_DID)
    assert out.returncode == 0, out.stdout + out.stderr
    assert '"blob":' in out.stdout


def test_a_refused_upload_exits_non_zero_with_the_xrpc_error(service: ServiceProcess) -> None:
    # A token for another service: the API refuses it and the command says why.
    out = try_upload(service.url, "--service-did", "did:web:other.example")
    assert out.returncode == 1
    assert out.stdout.startswith("401 ") and '"error":' in out.stdout, out.stdout
