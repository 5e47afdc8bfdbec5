"""status_rps_ratio: getJobStatus under load against a bare FastAPI endpoint, same setup."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from bench.harness import Bench
from tests.support.media import make_clip
from tests.support.waiting import free_port

CONCURRENCY = 32
SECONDS = 8


def _wrk(url: str) -> dict[str, float]:
    wrk = shutil.which("wrk")
    if wrk is None:
        raise RuntimeError("wrk is not installed (make bench installs it)")
    out = subprocess.run(
        [wrk, "-t1", f"-c{CONCURRENCY}", f"-d{SECONDS}s", "--latency", url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    lat = {}
    for pct, value, unit in re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", out, re.M):
        scale = {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]
        lat[f"p{pct}_ms"] = round(float(value) * scale, 3)
    errors = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    if errors:
        raise RuntimeError(f"wrk saw errors: {errors.group(1)}")
    return {"rps": rps, **lat}


def _baseline_server() -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "bench.baseline_app:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--no-access-log",
        ],
        cwd=Path(__file__).resolve().parent.parent,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            httpx.get(f"{url}/xrpc/app.bsky.video.getJobStatus", timeout=1)
            return proc, url
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("baseline server did not start")


def run(workdir: Path, rounds: int = 2) -> dict[str, Any]:
    workdir.mkdir(parents=True, exist_ok=True)
    clip = make_clip(workdir / "status.mp4", seconds=1, size="320x240").read_bytes()
    base_proc, base_url = _baseline_server()
    try:
        with Bench(workdir / "svc") as bench:
            job_id = bench.upload(clip)["jobId"]
            bench.wait(job_id)
            ours_url = f"{bench.service.url}/xrpc/app.bsky.video.getJobStatus?jobId={job_id}"
            theirs_url = f"{base_url}/xrpc/app.bsky.video.getJobStatus"
            ours: list[dict[str, float]] = []
            theirs: list[dict[str, float]] = []
            for _ in range(rounds):
                theirs.append(_wrk(theirs_url))
                ours.append(_wrk(ours_url))
    finally:
        base_proc.terminate()
        base_proc.wait()
    best_ours = max(ours, key=lambda r: r["rps"])
    best_theirs = max(theirs, key=lambda r: r["rps"])
    return {
        "status_rps_ratio": {
            "value": round(best_ours["rps"] / best_theirs["rps"], 3),
            "concurrency": CONCURRENCY,
            "seconds": SECONDS,
            "service": best_ours,
            "baseline_fastapi": best_theirs,
            "rounds": {"service": ours, "baseline_fastapi": theirs},
        }
    }
