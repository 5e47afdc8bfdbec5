"""``atproto-video upload --key`` (seed mode, cli/upload.py) against a real ``serve`` process:
tokens signed with a key file instead of a PDS; the Bluesky mode is in
tests/bluesky/test_upload_command.py."""

from __future__ import annotations

import json
import os
import secrets
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from atproto_video.cli.upload import EXIT_ERROR, EXIT_REJECTED
from tests.support.media import make_clip
from tests.support.service import ServiceProcess


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    # did:web:localhost%3A<port>: the command reads the audience from /.well-known/did.json.
    svc = ServiceProcess(tmp_path_factory.mktemp("svc"), {})
    svc.env["VIDEO_SERVICE_DID"] = f"did:web:localhost%3A{svc.port}"
    svc.env["VIDEO_PUBLIC_URL"] = svc.url
    yield svc.start()
    svc.stop()


def upload(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "atproto_video.cli", "upload", *args, "--timeout", "300"],
        env={k: v for k, v in os.environ.items() if not k.startswith("VIDEO_")},
        capture_output=True, text=True, timeout=400, check=False,
    )  # fmt: skip


def test_a_new_key_file_is_made_and_the_video_plays(
    service: ServiceProcess, tmp_path: Path
) -> None:
    clip = make_clip(tmp_path / "seed.mp4", seconds=1, size="320x240")
    key = tmp_path / "me.pem"
    out = upload(str(clip), "--service", service.url, "--key", str(key), "--json")
    assert out.returncode == 0, out.stdout + out.stderr + service.logs()[-3000:]
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and b"PRIVATE KEY" in key.read_bytes()
    result = json.loads(out.stdout)
    assert result["did"].startswith("did:web:localhost%3A")
    assert result["blob"]["mimeType"] == "video/mp4"
    page = httpx.get(result["watchUrl"])
    assert page.status_code == 200 and result["did"] in page.text
    assert httpx.get(result["playlistUrl"]).text.startswith("#EXTM3U")
    # Reused, not replaced, on the next run.
    before = key.read_bytes()
    again = upload(str(clip), "--service", service.url, "--key", str(key))
    assert again.returncode == 0, again.stderr
    assert key.read_bytes() == before
    assert "playlist  http" in again.stdout and "watch     http" in again.stdout


def test_a_secp256k1_hex_key_signs_es256k(service: ServiceProcess, tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "k256.mp4", seconds=1, size="320x240")
    key = tmp_path / "k256.hex"
    key.write_text(secrets.token_hex(32) + "\n")
    out = upload(str(clip), "--service", service.url, "--key", str(key), "--json")
    assert out.returncode == 0, out.stdout + out.stderr + service.logs()[-3000:]
    assert json.loads(out.stdout)["blob"]["ref"]["$link"].startswith("bafkrei")


def test_post_needs_a_pds_account(service: ServiceProcess, tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "nopost.mp4", seconds=1, size="320x240")
    out = upload(str(clip), "--service", service.url, "--key", str(tmp_path / "k.pem"),
                 "--post", "hello")
    assert out.returncode == EXIT_ERROR
    assert "--post needs a PDS account" in out.stderr


def test_a_missing_file_is_refused_before_anything_else(tmp_path: Path) -> None:
    out = upload(str(tmp_path / "nothing.mp4"), "--key", str(tmp_path / "k.pem"))
    assert out.returncode == EXIT_REJECTED and "no such file" in out.stderr
