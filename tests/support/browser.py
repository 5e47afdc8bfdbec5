"""Debian's chromium, driven by playwright-core from npm, through the service's pages.

``tests/support/browser/page-check.js`` opens a watch or job page, waits for what a person
would wait for (the job to finish, the video to play, each rendition to show), takes the
screenshots and prints what it saw as one JSON line; the tests assert on that. playwright-core
lives outside the repo, installed by ``scripts/install-test-deps.sh --browser``; chromium is
the Debian package (``scripts/install-system-deps.sh --test``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

BROWSER_DIR = Path(__file__).resolve().parent / "browser"


class BrowserError(RuntimeError):
    pass


def chromium() -> str:
    found = os.environ.get("VIDEO_TEST_CHROMIUM") or shutil.which("chromium")
    if not found:
        raise BrowserError("chromium not found: run scripts/install-system-deps.sh --test")
    return found


def node_modules_dir() -> Path:
    """Must match install_browser in scripts/install-test-deps.sh."""
    key = hashlib.sha256((BROWSER_DIR / "package-lock.json").read_bytes()).hexdigest()[:16]
    roots = [Path(os.environ["ATPROTO_VIDEO_CACHE_DIR"])] if os.environ.get(
        "ATPROTO_VIDEO_CACHE_DIR") else []
    roots += [Path("/var/cache/atproto-video"),
              Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "atproto-video"]
    for root in roots:
        d = root / "browser-node" / key
        if (d / ".complete").is_file():
            return d / "node_modules"
    raise BrowserError(f"playwright-core for lock key {key} not installed: run "
                       "scripts/install-test-deps.sh --browser")


def check_page(url: str, out_dir: Path, timeout_s: float = 300) -> dict[str, Any]:
    """Run page-check.js on ``url``; screenshots go to ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    spec = {"url": url, "executable": chromium(), "outDir": str(out_dir),
            "timeoutMs": int(timeout_s * 1000)}
    env = {**os.environ, "NODE_PATH": str(node_modules_dir())}
    res = subprocess.run(["node", str(BROWSER_DIR / "page-check.js"), json.dumps(spec)],
                         env=env, capture_output=True, text=True, timeout=timeout_s + 120,
                         check=False)  # fmt: skip
    lines = res.stdout.strip().splitlines()
    if not lines:
        raise BrowserError(f"page-check.js exited {res.returncode}: {res.stderr[-3000:]}")
    out: dict[str, Any] = json.loads(lines[-1])
    if "fatal" in out:
        raise BrowserError(f"page-check.js failed on {url}: {out['fatal']}\n{res.stderr[-2000:]}")
    return out
