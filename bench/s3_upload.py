"""s3_upload_throughput_ratio and s3_upload_peak_rss_mb: a 300 MB upload into a real S3 server
(SeaweedFS, as in the tests) against boto3's own ``upload_file`` of the same bytes to the same
server in the same run."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from boto3.s3.transfer import TransferConfig

from atproto_video.core.s3 import PART_SIZE
from bench.harness import Bench
from bench.upload import SIZE, _upload
from tests.support.s3 import running_s3
from tests.support.service import vm_hwm_kb, vm_rss_kb

#: boto3's default concurrency (parts in flight); the service has one part in flight.
BOTO3_CONCURRENCY = TransferConfig().max_request_concurrency


def run(workdir: Path, rounds: int = 3) -> dict[str, Any]:
    workdir.mkdir(parents=True, exist_ok=True)
    src = workdir / "upload.bin"
    with src.open("wb") as f:  # incompressible, written once, then read from the page cache
        block = os.urandom(1 << 20)
        for _ in range(SIZE // len(block)):
            f.write(block)
        f.write(block[: SIZE % len(block)])
    config = TransferConfig(multipart_threshold=PART_SIZE, multipart_chunksize=PART_SIZE,
                            max_concurrency=BOTO3_CONCURRENCY)
    baselines: list[float] = []
    uploads: list[float] = []
    rss_growth: list[float] = []
    left_over: list[str] = []
    try:
        with running_s3(workdir / "s3") as server:
            bucket = server.new_bucket()
            client = server.client()
            with Bench(workdir / "svc", env=server.env(bucket)) as bench:
                for i in range(rounds):
                    key = f"baseline/{i}"
                    t0 = time.perf_counter()
                    client.upload_file(str(src), bucket, key, Config=config)
                    baselines.append(time.perf_counter() - t0)
                    client.delete_object(Bucket=bucket, Key=key)

                    rss0 = vm_rss_kb(bench.service.pid)
                    hwm0 = vm_hwm_kb(bench.service.pid)
                    t0 = time.perf_counter()
                    job = _upload(bench, src)
                    uploads.append(time.perf_counter() - t0)
                    rss_growth.append((vm_hwm_kb(bench.service.pid) - max(hwm0, rss0)) / 1024)
                    # Random bytes fail validation quickly; removing the job removes the object.
                    bench.wait(job["jobId"])
            left_over = server.keys(bucket)
    finally:
        src.unlink(missing_ok=True)
    boto3_tp = SIZE / min(baselines)
    service_tp = SIZE / min(uploads)
    return {
        "s3_upload_throughput_ratio": {
            "value": round(service_tp / boto3_tp, 3),
            "service_mb_s": round(service_tp / 1e6, 1),
            "boto3_upload_file_mb_s": round(boto3_tp / 1e6, 1),
            "service_seconds": [round(x, 3) for x in uploads],
            "boto3_upload_file_seconds": [round(x, 3) for x in baselines],
            "part_size": PART_SIZE,
            "boto3_max_concurrency": BOTO3_CONCURRENCY,
            "bytes": SIZE,
            "objects_left": len(left_over),
            "note": "the service also hashes sha-256 and receives over HTTP (curl -T); "
                    "boto3 reads the file from the page cache",
        },
        "s3_upload_peak_rss_mb": {
            "value": round(max(0.0, max(rss_growth)), 1),
            "per_round_mb": [round(x, 1) for x in rss_growth],
        },
    }
