"""first_playable_ratio: upload to a playable master playlist, over upload to COMPLETED.

The embedded service as a real process, the 30 s 1080p clip of ``bench/e2e.py``. A player's
view, over HTTP: the master playlist at ``/watch/<did>/<jobId>/playlist.m3u8`` counts as
playable once it is served and its first variant playlist is complete (``#EXT-X-ENDLIST``)
with its first segment fetchable; both times start at the upload's first byte. Afterwards
(untimed) the early playlist is played with ffmpeg's HLS demuxer, and the job's state at that
moment is recorded (ENCODING: playable before done).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from bench.e2e import SECONDS, make_source
from bench.harness import Bench
from tests.support.media import play_hls
from tests.support.xrpc import job_status

#: How often the player side asks for the master playlist.
POLL_S = 0.05


def _playable(client: httpx.Client, base: str) -> str | None:
    """The master playlist's text when it names a complete variant whose segments load."""
    master = client.get(f"{base}/playlist.m3u8")
    if master.status_code != 200:
        return None
    uris = [line for line in master.text.splitlines() if line and not line.startswith("#")]
    if not uris:
        return None
    variant = client.get(f"{base}/{uris[0]}")
    if variant.status_code != 200 or "#EXT-X-ENDLIST" not in variant.text:
        return None
    segments = [line for line in variant.text.splitlines() if line and not line.startswith("#")]
    folder = uris[0].rsplit("/", 1)[0]
    if not segments or client.head(f"{base}/{folder}/{segments[0]}").status_code != 200:
        return None
    return master.text


def run_once(workdir: Path, body: bytes) -> dict[str, Any]:
    with Bench(workdir) as bench:
        t0 = time.perf_counter()
        job_id = bench.upload(body)["jobId"]
        uploaded = time.perf_counter() - t0
        base = f"{bench.service.url}/watch/{quote(bench.who.did, safe='')}/{job_id}"
        with httpx.Client(timeout=10) as client:
            while True:
                master = _playable(client, base)
                if master is not None:
                    playable = time.perf_counter() - t0
                    break
                if job_status(bench.service, job_id, client)["state"] in (
                        "JOB_STATE_COMPLETED", "JOB_STATE_FAILED"):
                    raise RuntimeError("the job finished before its playlist was playable")
                time.sleep(POLL_S)
            state_then = job_status(bench.service, job_id, client)["state"]
        status = bench.wait(job_id)
        completed = time.perf_counter() - t0
        if status["state"] != "JOB_STATE_COMPLETED":
            raise RuntimeError(f"benchmark job failed: {status}")
        packets = play_hls(f"{base}/playlist.m3u8")
    listed = [line for line in master.splitlines() if line and not line.startswith("#")]
    return {"upload_s": uploaded, "playable_s": playable, "completed_s": completed,
            "state_when_playable": state_then, "listed_when_playable": listed,
            "packets_played_after": packets}


def run(workdir: Path, rounds: int = 2) -> dict[str, Any]:
    workdir.mkdir(parents=True, exist_ok=True)
    body = make_source(workdir / "source-1080p30.mp4").read_bytes()
    samples = [run_once(workdir / f"round-{i}", body) for i in range(rounds)]
    ratios = [s["playable_s"] / s["completed_s"] for s in samples]
    return {
        "first_playable_ratio": {
            "value": round(max(ratios), 3),
            "summary": "the worst of the rounds",
            "ratios": [round(r, 3) for r in ratios],
            "samples": [{k: round(v, 3) if isinstance(v, float) else v for k, v in s.items()}
                        for s in samples],
            "strategy": "single",
            "source": f"{SECONDS} s 1920x1080 30 fps H.264 + AAC",
        },
    }
