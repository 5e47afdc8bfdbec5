"""The folder layout: never shadow the standard library; an import path names its file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_no_top_level_package_shadows_the_stdlib() -> None:
    for name in ("operator", "api", "cli", "core", "executor", "transcoder", "migrations"):
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


def test_an_import_path_names_its_file() -> None:
    """``atproto_video.<folder>.<module>`` is ``<folder>/<module>.py``, for every module."""
    import importlib
    import tomllib

    mapping = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-dir"]
    assert all(package == f"atproto_video.{folder}" for package, folder in mapping.items())
    checked = 0
    for package, folder in mapping.items():
        for path in sorted((ROOT / folder).glob("*.py")):
            if path.stem in ("__main__", "env"):
                continue
            name = package if path.stem == "__init__" else f"{package}.{path.stem}"
            module = importlib.import_module(name)
            assert Path(module.__file__ or "").resolve() == path.resolve(), name
            checked += 1
    assert checked > 40
