from __future__ import annotations

from pathlib import Path

import pytest

from atproto_video.transcoder import TranscodeLimits


@pytest.fixture(scope="session")
def media_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where generated inputs live; each test module generates only what it uses."""
    return tmp_path_factory.mktemp("media")


@pytest.fixture(scope="session")
def limits() -> TranscodeLimits:
    return TranscodeLimits(threads=2)
