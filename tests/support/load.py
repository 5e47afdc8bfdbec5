"""A bounded load run against a running service, in its own process (real HTTP).

``python -m tests.support.load plan.json result.json``: for ``seconds``, ``uploaders`` upload
tasks and ``pollers`` getJobStatus tasks run concurrently on one asyncio loop (httpx).

Each uploader takes fresh identities from a shared pool at a fixed global rate (``rounds_per_s``,
so the accepted jobs stay within what the executor can finish) and plays one of two scripts on
each: accepted uploads of clips of several sizes, an exact duplicate (SPEC section 1:
``already_exists`` with the first job's id), an upload cut off mid-body (the client drops the
connection; the next step waits until getUploadLimits shows the reservation given back), and
an upload over the daily video or byte limit (planned 429). Between rounds it keeps sending
uploads over the spent quota. The generator knows each identity's quota, so every answer is
checked against what it must be; a difference is a ``mismatch``.

Pollers poll jobs the uploaders got accepted (unfinished ones first), about once a second
each, as the app does. The API process's VmRSS is sampled every 2 s. Everything is written to
``result.json`` for the test to assert on and record.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.support.identity import Identity
from tests.support.service import vm_rss_kb
from tests.support.xrpc import LIMITS, SERVICE_DID, STATUS, TERMINAL, UPLOAD

QUOTA_VIDEOS = "User has exceeded daily upload videos limit"
QUOTA_BYTES = "User has exceeded daily upload bytes limit"
#: The two round scripts, alternating: (action, clip). The model decides each answer.
SCRIPTS: tuple[tuple[tuple[str, str], ...], ...] = (
    (("up", "A"), ("up", "A"), ("cut", "C"), ("up", "B"), ("up", "D"), ("up", "C")),
    (("up", "C"), ("cut", "A"), ("up", "B"), ("up", "B"), ("up", "D")),
)
FILLER = ("A", "B", "C", "D")


def identity_record(who: Identity) -> dict[str, str]:
    """What the load process needs to sign as ``who`` (its DID document is already served)."""
    pem = who.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return {"did": who.did, "alg": who.alg, "key": pem.decode()}


def identity_from(record: dict[str, str]) -> Identity:
    who = Identity(record["did"], alg=record["alg"])  # type: ignore[arg-type]
    key = serialization.load_pem_private_key(record["key"].encode(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    who.key = key
    return who


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"n": 0}
    ordered = sorted(values)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 1)

    return {"n": len(ordered), "p50_ms": at(0.50), "p90_ms": at(0.90), "p99_ms": at(0.99),
            "max_ms": round(ordered[-1] * 1000, 1)}


class CutOff(Exception):
    """Raised inside a request body: the client gives up mid-upload."""


@dataclass
class Quota:
    """What one identity has used, by the generator's own count."""

    videos: int = 0
    bytes: int = 0
    jobs: dict[str, str] = field(default_factory=dict)  # clip -> job id


@dataclass
class Run:
    url: str
    seconds: float
    warmup_s: float
    pid: int
    limit_videos: int
    limit_bytes: int
    clips: dict[str, bytes]
    pool: list[Identity]
    rounds_per_s: float
    uploaders: int
    pollers: int
    client: httpx.AsyncClient
    polls: aiohttp.ClientSession
    t0: float = 0.0
    next_round_at: float = 0.0
    rounds: int = 0
    latency: dict[str, list[float]] = field(default_factory=dict)
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    outcomes: dict[str, int] = field(default_factory=dict)
    mismatches: list[str] = field(default_factory=list)
    release_s: list[float] = field(default_factory=list)
    quotas: dict[str, Quota] = field(default_factory=dict)
    jobs: list[dict[str, Any]] = field(default_factory=list)
    unfinished: set[str] = field(default_factory=set)
    rss: list[tuple[float, int]] = field(default_factory=list)

    @property
    def over(self) -> bool:
        return time.monotonic() - self.t0 >= self.seconds

    def note(self, kind: str, status: str, seconds: float) -> None:
        self.latency.setdefault(kind, []).append(seconds)
        by = self.counts.setdefault(kind, {})
        by[status] = by.get(status, 0) + 1

    def outcome(self, name: str) -> None:
        self.outcomes[name] = self.outcomes.get(name, 0) + 1

    def take_round(self) -> tuple[Identity, int] | None:
        """The next fresh identity and its round number, at most ``rounds_per_s``."""
        now = time.monotonic()
        if not self.pool or now < self.next_round_at:
            return None
        self.next_round_at = max(self.next_round_at, now - 1.0) + 1.0 / self.rounds_per_s
        self.rounds += 1
        return self.pool.pop(), self.rounds

    # -- requests --------------------------------------------------------------------------

    async def upload(self, who: Identity, clip: str, *, cut: bool = False) -> None:
        body = self.clips[clip]
        quota = self.quotas.setdefault(who.did, Quota())
        headers = {"authorization": f"Bearer {who.token(SERVICE_DID, UPLOAD)}",
                   "content-type": "video/mp4", "content-length": str(len(body))}
        content: Any = body
        if cut:
            async def halves() -> Any:
                yield body[: len(body) // 2]
                await asyncio.sleep(0.05)
                raise CutOff

            content = halves()
        started = time.monotonic()
        try:
            resp = await self.client.post(f"{self.url}/xrpc/{UPLOAD}", content=content,
                                          params={"did": who.did, "name": f"{clip}.mp4"},
                                          headers=headers)
        except CutOff:
            self.note("upload_cut", "cut", time.monotonic() - started)
            self.outcome("cut_off")
            await self.wait_released(who, quota)
            return
        except httpx.HTTPError as exc:
            self.note("upload", f"error:{type(exc).__name__}", time.monotonic() - started)
            self.mismatches.append(f"upload {clip} as {who.did}: {type(exc).__name__} {exc}")
            return
        elapsed = time.monotonic() - started
        self.note("upload", str(resp.status_code), elapsed)
        if cut:
            self.mismatches.append(f"cut-off upload answered {resp.status_code}: {resp.text}")
            return
        self.check_upload(who, clip, quota, resp, elapsed)

    def check_upload(self, who: Identity, clip: str, quota: Quota, resp: httpx.Response,
                     elapsed: float) -> None:
        size = len(self.clips[clip])
        body: dict[str, Any] = {}
        with contextlib.suppress(ValueError):
            body = resp.json()
        if quota.videos + 1 > self.limit_videos:
            expected: tuple[int, str | None] = (429, QUOTA_VIDEOS)
            kind = "over_videos"
        elif quota.bytes + size > self.limit_bytes:
            expected, kind = (429, QUOTA_BYTES), "over_bytes"
        elif clip in quota.jobs:
            expected, kind = (200, "already_exists"), "duplicate"
        else:
            expected, kind = (200, None), "accepted"
        got = (resp.status_code, body.get("error"))
        if got != expected:
            self.mismatches.append(f"{kind} {clip} as {who.did}: expected {expected}, "
                                   f"got {resp.status_code} {resp.text[:300]}")
            return
        self.outcome(kind)
        if kind == "duplicate" and body.get("jobId") != quota.jobs[clip]:
            self.mismatches.append(f"duplicate of {quota.jobs[clip]} answered {body}")
        if kind == "accepted":
            self.latency.setdefault("upload_accepted", []).append(elapsed)
            job_id = body["jobId"]
            quota.videos += 1
            quota.bytes += size
            quota.jobs[clip] = job_id
            self.jobs.append({"did": who.did, "job_id": job_id, "bytes": size})
            self.unfinished.add(job_id)

    async def limits(self, who: Identity) -> dict[str, Any] | None:
        headers = {"authorization": f"Bearer {who.token(SERVICE_DID, LIMITS)}"}
        started = time.monotonic()
        try:
            resp = await self.client.get(f"{self.url}/xrpc/{LIMITS}", headers=headers)
        except httpx.HTTPError as exc:
            self.note("getUploadLimits", f"error:{type(exc).__name__}",
                      time.monotonic() - started)
            self.mismatches.append(f"getUploadLimits: {type(exc).__name__} {exc}")
            return None
        self.note("getUploadLimits", str(resp.status_code), time.monotonic() - started)
        if resp.status_code != 200:
            self.mismatches.append(f"getUploadLimits answered {resp.status_code}: {resp.text}")
            return None
        answer: dict[str, Any] = resp.json()
        return answer

    async def wait_released(self, who: Identity, quota: Quota) -> None:
        """Until the cut-off upload's reservation is given back (the model stays exact)."""
        started = time.monotonic()
        want = (self.limit_videos - quota.videos, self.limit_bytes - quota.bytes)
        while time.monotonic() - started < 30:
            got = await self.limits(who)
            if got is None:
                return
            if (got.get("remainingDailyVideos"), got.get("remainingDailyBytes")) == want:
                self.release_s.append(time.monotonic() - started)
                return
            await asyncio.sleep(0.1)
        self.mismatches.append(f"reservation of a cut-off upload by {who.did} not released "
                               f"in 30 s: want {want}")

    async def status(self, job_id: str) -> None:
        """One poll, on aiohttp: at 200 pollers httpx's own CPU (about 6 ms a request here)
        starved this process's loop and its latencies measured the client."""
        started = time.monotonic()
        try:
            async with self.polls.get(f"{self.url}/xrpc/{STATUS}",
                                      params={"jobId": job_id}) as resp:
                code, text = resp.status, await resp.text()
        except (aiohttp.ClientError, TimeoutError) as exc:
            self.note("getJobStatus", f"error:{type(exc).__name__}", time.monotonic() - started)
            self.mismatches.append(f"getJobStatus {job_id}: {type(exc).__name__} {exc}")
            return
        self.note("getJobStatus", str(code), time.monotonic() - started)
        if code != 200:
            self.mismatches.append(f"getJobStatus {job_id}: {code} {text}")
            return
        if json.loads(text)["jobStatus"]["state"] in TERMINAL:
            self.unfinished.discard(job_id)

    # -- tasks -----------------------------------------------------------------------------

    async def uploader(self, number: int) -> None:
        rng = random.Random(number)
        spent: Identity | None = None
        await asyncio.sleep(rng.uniform(0, 1))
        while not self.over:
            taken = self.take_round()
            if taken is not None:
                who, number = taken
                for action, clip in SCRIPTS[number % len(SCRIPTS)]:
                    await self.upload(who, clip, cut=action == "cut")
                    await asyncio.sleep(rng.uniform(0.05, 0.2))
                spent = who
            elif spent is not None:  # uploads over the spent quota meanwhile
                await self.upload(spent, rng.choice(FILLER))
            await asyncio.sleep(rng.uniform(0.2, 0.6))

    async def poller(self, number: int) -> None:
        rng = random.Random(1000 + number)
        await asyncio.sleep(rng.uniform(0, 1))
        while not self.over:
            pick = list(self.unfinished) or [j["job_id"] for j in self.jobs]
            if pick:
                await self.status(rng.choice(pick))
            await asyncio.sleep(rng.uniform(0.5, 1.5))

    async def sample_rss(self) -> None:
        while not self.over:
            self.rss.append((round(time.monotonic() - self.t0, 1), vm_rss_kb(self.pid)))
            await asyncio.sleep(2)
        self.rss.append((round(time.monotonic() - self.t0, 1), vm_rss_kb(self.pid)))

    async def loop_lag(self) -> None:
        """How late this process's own loop wakes up: a saturated client shows here, so its
        latencies are not blamed on the service."""
        while not self.over:
            started = time.monotonic()
            await asyncio.sleep(0.1)
            self.latency.setdefault("client_loop_lag", []).append(
                time.monotonic() - started - 0.1)

    async def run(self) -> dict[str, Any]:
        self.t0 = self.next_round_at = time.monotonic()
        cpu0, api0 = time.process_time(), cpu_seconds(self.pid)
        await asyncio.gather(self.sample_rss(), self.loop_lag(),
                             *(self.uploader(n) for n in range(self.uploaders)),
                             *(self.poller(n) for n in range(self.pollers)))
        elapsed = time.monotonic() - self.t0
        cpu = {"client": round(time.process_time() - cpu0, 1),
               "api": round(cpu_seconds(self.pid) - api0, 1)}
        warm = [kb for t, kb in self.rss if t >= self.warmup_s] or [self.rss[-1][1]]
        return {
            "seconds": round(elapsed, 1), "uploaders": self.uploaders, "pollers": self.pollers,
            "rounds": self.rounds, "counts": self.counts, "outcomes": self.outcomes,
            "latency": {k: percentiles(v) for k, v in sorted(self.latency.items())},
            "rps": {k: round(len(v) / elapsed, 1) for k, v in sorted(self.latency.items())
                    if k != "client_loop_lag"},
            "cpu_s": cpu,
            "cut_release": percentiles(self.release_s),
            "rss_kb": {"warm": warm[0], "end": self.rss[-1][1], "max": max(warm),
                       "series": self.rss},
            "mismatches": self.mismatches,
            "jobs": self.jobs,
            "quotas": {did: {"videos": q.videos, "bytes": q.bytes}
                       for did, q in self.quotas.items()},
        }


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process so far (/proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def main(plan: dict[str, Any]) -> dict[str, Any]:
    limits = httpx.Limits(max_connections=plan["uploaders"] + 10,
                          max_keepalive_connections=plan["uploaders"] + 10)
    connector = aiohttp.TCPConnector(limit=plan["pollers"] + 10)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client, \
            aiohttp.ClientSession(connector=connector,
                                  timeout=aiohttp.ClientTimeout(total=60)) as polls:
        run = Run(url=plan["url"], seconds=plan["seconds"], warmup_s=plan["warmup_s"],
                  pid=plan["pid"], limit_videos=plan["limit_videos"],
                  limit_bytes=plan["limit_bytes"],
                  clips={k: Path(v).read_bytes() for k, v in plan["clips"].items()},
                  pool=[identity_from(r) for r in plan["identities"]],
                  rounds_per_s=plan["rounds_per_s"], uploaders=plan["uploaders"],
                  pollers=plan["pollers"], client=client, polls=polls)
        return await run.run()


if __name__ == "__main__":
    plan_path, result_path = Path(sys.argv[1]), Path(sys.argv[2])
    result = asyncio.run(main(json.loads(plan_path.read_text())))
    result_path.write_text(json.dumps(result))


REPO = Path(__file__).resolve().parents[2]


def run_load(
    workdir: Path,
    *,
    url: str,
    pid: int,
    clips: dict[str, Path],
    identities: list[Identity],
    limit_videos: int,
    limit_bytes: int,
    rounds_per_s: float,
    seconds: float,
    warmup_s: float,
    uploaders: int = 20,
    pollers: int = 200,
) -> dict[str, Any]:
    """Run the load in its own process (this module's ``__main__``) and return its result."""
    plan = {"url": url, "pid": pid, "clips": {k: str(v) for k, v in clips.items()},
            "identities": [identity_record(w) for w in identities],
            "limit_videos": limit_videos, "limit_bytes": limit_bytes,
            "rounds_per_s": rounds_per_s, "seconds": seconds, "warmup_s": warmup_s,
            "uploaders": uploaders, "pollers": pollers}
    plan_path, result_path = workdir / "load-plan.json", workdir / "load-result.json"
    plan_path.write_text(json.dumps(plan))
    proc = subprocess.Popen([sys.executable, "-m", "tests.support.load", str(plan_path),
                             str(result_path)], cwd=REPO)
    try:
        code = proc.wait(timeout=seconds + 120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert code == 0, f"the load process exited {code}"
    result: dict[str, Any] = json.loads(result_path.read_text())
    return result
