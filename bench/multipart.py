"""multipart_throughput_ratio: a 300 MB upload in 8 MiB parts with 3 in flight against a
single-shot uploadVideo of the same file to the same service in the same run, both sent by
curl (so the client is not what is measured); with local storage, and with a real S3 server
(``s3_multipart_throughput_ratio``). The Python test client's time for the same algorithm is
kept beside it.

Also ``multipart_finish_cpu_s``: the service's CPU time for finishUpload of 300 MB (the
content hash was kept while the parts arrived, so finishing is a rename or a
CompleteMultipartUpload), and the cost of the fallback that reads the file back in order.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import time
from pathlib import Path
from typing import Any

from atproto_video.core.config import StorageSettings
from atproto_video.core.s3 import S3Storage
from atproto_video.core.sessions import PART_SIZE
from atproto_video.core.storage import LocalStorage, Storage
from bench.harness import Bench, cpu_seconds
from bench.upload import SIZE, _upload
from tests.support.multipart import PART, MultipartClient
from tests.support.s3 import running_s3
from tests.support.xrpc import SERVICE_DID

#: An MP4 signature: finishUpload checks the container; the probe fails the job later.
_MP4_HEAD = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom"


def _write_parts(data: bytes, workdir: Path) -> list[Path]:
    """The parts as files for curl, written before the clock starts (page cache)."""
    paths = []
    for n, offset in enumerate(range(0, len(data), PART_SIZE), start=1):
        path = workdir / f"part-{n:03d}"
        path.write_bytes(data[offset:offset + PART_SIZE])
        paths.append(path)
    return paths


def _curl_parts(bench: Bench, job_id: str, parts: list[Path]) -> None:
    """All parts, 3 in flight, by curl (C, as the single-shot baseline's client)."""
    token = bench.who.token(SERVICE_DID, PART)
    args = ["curl", "-sS", "--parallel", "--parallel-max", "3", "-X", "POST",
            "-H", f"authorization: Bearer {token}", "-H", "content-type: application/octet-stream",
            "-H", "expect:", "-w", "%{http_code}\n"]
    for n, path in enumerate(parts, start=1):
        args += ["-T", str(path), "-o", "/dev/null",
                 f"{bench.service.url}/xrpc/{PART}?jobId={job_id}&partNumber={n}"]
    out = subprocess.run(args, capture_output=True, text=True, check=True)
    codes = out.stdout.split()
    if codes != ["200"] * len(parts):
        raise RuntimeError(f"uploadPart answers: {codes} {out.stderr[-500:]}")


def _multipart(bench: Bench, data: bytes, parts: list[Path]) -> tuple[float, float, float]:
    """One upload in parts: (seconds with curl, service CPU of the finish, seconds of the
    same upload by the Python test client)."""
    client = MultipartClient(bench.service.url, bench.who.did,
                             lambda nsid: bench.who.token(SERVICE_DID, nsid))
    try:
        t0 = time.perf_counter()
        session = client.start(len(data))
        _curl_parts(bench, session["jobId"], parts)
        cpu0 = cpu_seconds(bench.service.pid)
        resp = client.finish(session["jobId"])
        cpu = cpu_seconds(bench.service.pid) - cpu0
        seconds = time.perf_counter() - t0
        resp.raise_for_status()
        job_id = str(resp.json()["completedJobId"])
        bench.wait(job_id)
        # The same algorithm in Python (httpx, 3 threads), for reference: other bytes.
        other = data[:len(_MP4_HEAD)] + os.urandom(16) + data[len(_MP4_HEAD) + 16:]
        t0 = time.perf_counter()
        answer = client.upload(other, multipart=True)
        python_seconds = time.perf_counter() - t0
        bench.wait(answer["completedJobId"])
        return seconds, cpu, python_seconds
    finally:
        client.close()


def _fallback_cpu(storage: Storage, data: bytes) -> float:
    """CPU of reading a stored 300 MB upload back in order and hashing it: what a finish
    costs when the running hash cannot be used (parts sent to another replica, or re-sent
    after hashing). Measured on a copy stored through the backend's own part methods."""
    job_id = f"bench-fallback-{os.getpid()}"
    ref = storage.start_parts(job_id, len(data))
    try:
        parts = {n: storage.put_part(job_id, ref, n, off, [data[off:off + PART_SIZE]])
                 for n, off in enumerate(range(0, len(data), PART_SIZE), start=1)}
        storage.finish_parts(job_id, ref, parts)
        t0 = time.process_time()
        storage.source_digest(job_id)
        return time.process_time() - t0
    finally:
        storage.abort_parts(job_id, ref)


def _rounds(bench: Bench, src: Path, data: bytes, rounds: int,
            storage: Storage) -> dict[str, Any]:
    singles: list[float] = []
    multis: list[float] = []
    pythons: list[float] = []
    finish_cpu: list[float] = []
    fallback: list[float] = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        job = _upload(bench, src)
        singles.append(time.perf_counter() - t0)
        bench.wait(job["jobId"])
        # Distinct bytes each round, or finishUpload would answer with the earlier job.
        data = data[:len(_MP4_HEAD)] + os.urandom(16) + data[len(_MP4_HEAD) + 16:]
        parts = _write_parts(data, src.parent)
        try:
            seconds, cpu, python_seconds = _multipart(bench, data, parts)
        finally:
            for path in parts:
                path.unlink()
        multis.append(seconds)
        pythons.append(python_seconds)
        finish_cpu.append(cpu)
        fallback.append(_fallback_cpu(storage, data))
    return {"single": singles, "multi": multis, "python": pythons, "finish_cpu": finish_cpu,
            "fallback_cpu": fallback}


def _entry(r: dict[str, Any]) -> dict[str, Any]:
    single_tp, multi_tp = SIZE / min(r["single"]), SIZE / min(r["multi"])
    return {
        "value": round(multi_tp / single_tp, 3),
        "multipart_mb_s": round(multi_tp / 1e6, 1),
        "single_shot_mb_s": round(single_tp / 1e6, 1),
        "multipart_seconds": [round(x, 3) for x in r["multi"]],
        "python_client_seconds": [round(x, 3) for x in r["python"]],
        "python_client_ratio": round(min(r["single"]) / min(r["python"]), 3),
        "single_shot_seconds": [round(x, 3) for x in r["single"]],
        "finish_cpu_s": [round(x, 3) for x in r["finish_cpu"]],
        "fallback_read_and_hash_cpu_s": [round(x, 3) for x in r["fallback_cpu"]],
        "part_size": PART_SIZE,
        "parts_in_flight": 3,
        "bytes": SIZE,
        "note": "single shot: curl -T; multipart: start, the parts by curl --parallel "
                "(3 in flight), finish; python_client: the test client's algorithm (httpx)",
    }


def run(workdir: Path, rounds: int = 3) -> dict[str, Any]:
    workdir.mkdir(parents=True, exist_ok=True)
    src = workdir / "upload.bin"
    data = _MP4_HEAD + os.urandom(SIZE - len(_MP4_HEAD))
    src.write_bytes(data)
    hashlib.sha256(data)  # warm
    out: dict[str, Any] = {}
    try:
        with Bench(workdir / "svc") as bench:
            storage = LocalStorage(bench.service.data_dir / "storage")
            local = _rounds(bench, src, data, rounds, storage)
        out["multipart_throughput_ratio"] = _entry(local)
        with running_s3(workdir / "s3") as server:
            bucket = server.new_bucket()
            env = server.env(bucket)
            for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):  # for S3Storage here
                os.environ[name] = env[name]
            with Bench(workdir / "svc-s3", env=env) as bench:
                s3 = S3Storage.from_settings(StorageSettings.from_env(env), workdir / "scratch")
                try:
                    remote = _rounds(bench, src, data, rounds, s3)
                finally:
                    s3.close()
        out["s3_multipart_throughput_ratio"] = _entry(remote)
    finally:
        src.unlink(missing_ok=True)
    out["multipart_finish_cpu_s"] = {
        "value": round(max(local["finish_cpu"] + remote["finish_cpu"]), 3),
        "local_s": [round(x, 3) for x in local["finish_cpu"]],
        "s3_s": [round(x, 3) for x in remote["finish_cpu"]],
        "fallback_local_s": [round(x, 3) for x in local["fallback_cpu"]],
        "fallback_s3_s": [round(x, 3) for x in remote["fallback_cpu"]],
    }
    return out
