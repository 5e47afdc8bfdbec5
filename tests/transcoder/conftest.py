from __future__ import annotations

import os
from collections.abc import Iterator
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


@pytest.fixture
def one_cpu() -> Iterator[None]:
    """This thread (and the code it calls) may run on one CPU only, as in a small pod."""
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(before)})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)
