"""upload_throughput_ratio and upload_peak_rss_mb: a 300 MB upload against a same-disk copy."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.harness import Bench
from tests.support.service import vm_hwm_kb, vm_rss_kb
from tests.support.xrpc import SERVICE_DID, UPLOAD

SIZE = 300_000_000


def _file_chunks(path: Path, chunk: int = 1 << 20) -> Iterator[bytes]:
    with path.open("rb") as f:
        while block := f.read(chunk):
            yield block


def _userspace_copy(src: Path, dst: Path, chunk: int = 1 << 20) -> None:
    with src.open("rb", buffering=0) as fin, dst.open("wb", buffering=0) as fout:
        while block := fin.read(chunk):
            fout.write(block)


def _sha256(block: bytes) -> None:
    """sha-256 of SIZE bytes already in memory: sequential, one core, so no upload that hashes
    its bytes can beat it (sha256_only_ratio)."""
    digest = hashlib.sha256()
    for _ in range(SIZE // len(block)):
        digest.update(block)
    digest.update(block[: SIZE % len(block)])


def _upload(bench: Bench, src: Path) -> dict[str, Any]:
    """curl streams the file (-T) from C, so the client is not what is measured."""
    curl = shutil.which("curl")
    if curl is None:
        return bench.upload(_file_chunks(src), length=SIZE)
    token = bench.who.token(SERVICE_DID, UPLOAD)
    out = subprocess.run(
        [curl, "-sS", "--fail-with-body", "-X", "POST", "-T", str(src),
         "-H", f"authorization: Bearer {token}", "-H", "content-type: video/mp4",
         "-H", "expect:", f"{bench.service.url}/xrpc/{UPLOAD}?did={bench.who.did}"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    body: dict[str, Any] = json.loads(out.stdout)
    return body


def run(workdir: Path, rounds: int = 3) -> dict[str, Any]:
    workdir.mkdir(parents=True, exist_ok=True)
    src = workdir / "upload.bin"
    with src.open("wb") as f:  # incompressible, written once, then read from the page cache
        block = os.urandom(1 << 20)
        for _ in range(SIZE // len(block)):
            f.write(block)
        f.write(block[: SIZE % len(block)])
    copies: list[float] = []
    user_copies: list[float] = []
    hashes: list[float] = []
    uploads: list[float] = []
    rss_growth: list[float] = []
    with Bench(workdir / "svc") as bench:
        for i in range(rounds):
            dst = workdir / f"copy-{i}.bin"
            t0 = time.perf_counter()
            shutil.copyfile(src, dst)
            copies.append(time.perf_counter() - t0)
            dst.unlink()
            t0 = time.perf_counter()
            _userspace_copy(src, dst)
            user_copies.append(time.perf_counter() - t0)
            dst.unlink()
            t0 = time.perf_counter()
            _sha256(block)
            hashes.append(time.perf_counter() - t0)

            rss0 = vm_rss_kb(bench.service.pid)
            hwm0 = vm_hwm_kb(bench.service.pid)
            t0 = time.perf_counter()
            job = _upload(bench, src)
            uploads.append(time.perf_counter() - t0)
            rss_growth.append((vm_hwm_kb(bench.service.pid) - max(hwm0, rss0)) / 1024)
            bench.wait(job["jobId"])  # random bytes: fails validation quickly; keeps disk tidy
    src.unlink()
    copy_tp = SIZE / min(copies)
    upload_tp = SIZE / min(uploads)
    return {
        "upload_throughput_ratio": {
            "value": round(upload_tp / copy_tp, 3),
            "upload_mb_s": round(upload_tp / 1e6, 1),
            "copy_mb_s": round(copy_tp / 1e6, 1),
            "copy_method": "shutil.copyfile (copy_file_range in the kernel, as cp does)",
            "userspace_copy_mb_s": round(SIZE / min(user_copies) / 1e6, 1),
            "ratio_to_userspace_copy": round(upload_tp / (SIZE / min(user_copies)), 3),
            "sha256_mb_s": round(SIZE / min(hashes) / 1e6, 1),
            "sha256_only_ratio": round(SIZE / min(hashes) / copy_tp, 3),
            "upload_seconds": [round(x, 3) for x in uploads],
            "copy_seconds": [round(x, 3) for x in copies],
            "bytes": SIZE,
        },
        "upload_peak_rss_mb": {
            "value": round(max(0.0, max(rss_growth)), 1),
            "per_round_mb": [round(x, 1) for x in rss_growth],
        },
    }
