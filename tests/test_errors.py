"""The exceptions a light process catches: one class each, whoever raises or re-exports it."""

from __future__ import annotations

import subprocess
import sys

from atproto_video.core import errors, s3, storage


def test_storage_unavailable_is_one_class() -> None:
    # The storage interface and its S3 backend raise the class the worker catches.
    assert storage.StorageUnavailable is errors.StorageUnavailable
    assert s3.StorageUnavailable is errors.StorageUnavailable


def test_importing_it_loads_nothing_heavy() -> None:
    script = ("import sys\n"
              "from atproto_video.core.errors import StorageUnavailable\n"
              "print(sorted(m for m in ('asyncio', 'sqlite3', 'boto3') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=60, check=False)
    assert out.stdout == "[]\n", out.stderr
