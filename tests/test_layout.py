"""The folder layout must never shadow the standard library."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_no_top_level_package_shadows_the_stdlib() -> None:
    for name in ("operator", "api", "core", "executor", "transcoder", "migrations"):
        assert not (ROOT / name / "__init__.py").exists() or name not in sys.stdlib_module_names
    # What a developer does in the repo root: python -c / -m with the root on sys.path.
    out = subprocess.run(
        [sys.executable, "-c", "import operator, atproto_video.cli; print(operator.eq(1, 1))"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "True"


def test_operator_subpackage_imports() -> None:
    out = subprocess.run(
        [sys.executable, "-c", "import atproto_video.operator.crd"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr
