"""A real S3 server for the tests: SeaweedFS (``weed server -s3``) on loopback.

Built from the Go module proxy by ``scripts/install-tools.sh`` (cached outside the repo),
started once per test session with its own data directory and one identity, and stopped by
PID. Each test gets its own bucket.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config as BotoConfig

from tests.support.waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]
ACCESS_KEY = "atproto-video-test"
SECRET_KEY = "atproto-video-test-secret-key"


def weed_binary() -> Path:
    """The cached ``weed`` (built by install-tools.sh on first use)."""
    out = subprocess.run(["bash", str(ROOT / "scripts/install-tools.sh"), "--print-weed"],
                         check=True, capture_output=True, text=True).stdout.strip()
    return Path(out)


def _free_port_pair() -> int:
    """A port p with p and p+10000 free (weed puts each gRPC port 10000 above its HTTP port)."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port + 10000 > 65535:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair on loopback")


@dataclass
class S3Server:
    """One ``weed server`` with master, volume, filer and S3 gateway in one process."""

    binary: Path
    workdir: Path
    endpoint: str = ""
    s3_port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    _ports: tuple[int, int, int] = (0, 0, 0)

    def start(self, *, keep_ports: bool = False) -> S3Server:
        data = self.workdir / "data"
        data.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "s3.json"
        config.write_text(json.dumps({"identities": [{
            "name": "test",
            "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }]}))
        if not keep_ports or not self.s3_port:
            self.s3_port = _free_port_pair()
            self._ports = (_free_port_pair(), _free_port_pair(), _free_port_pair())
        master, volume, filer = self._ports
        self.endpoint = f"http://127.0.0.1:{self.s3_port}"
        log = (self.workdir / "weed.log").open("ab")
        self.proc = subprocess.Popen(
            [str(self.binary), "server", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
             f"-master.port={master}", f"-volume.port={volume}", f"-filer.port={filer}",
             "-master.volumeSizeLimitMB=256", "-volume.max=0",
             "-s3", f"-s3.port={self.s3_port}", f"-s3.config={config}",
             "-s3.port.iceberg=0", "-s3.port.lance=0"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        log.close()
        client = self.client()
        wait_for(lambda: self._ready(client), timeout=60, interval=0.2,
                 what=f"weed S3 on {self.endpoint} (log: {self.workdir / 'weed.log'})")
        return self

    def _ready(self, client: Any) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"weed exited: {self.logs()[-2000:]}")
        bucket = f"probe-{uuid.uuid4().hex[:8]}"
        try:
            client.create_bucket(Bucket=bucket)
            client.put_object(Bucket=bucket, Key="k", Body=b"x")
            client.delete_object(Bucket=bucket, Key="k")
            client.delete_bucket(Bucket=bucket)
        except Exception:
            return False
        return True

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)

    def kill(self) -> None:
        """Take the store away at once (fault tests); ``start(keep_ports=True)`` brings it back."""
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
            self.proc = None

    def logs(self) -> str:
        path = self.workdir / "weed.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def client(self, *, secret: str = SECRET_KEY) -> Any:
        return boto3.session.Session().client(
            "s3", endpoint_url=self.endpoint, region_name="us-east-1",
            aws_access_key_id=ACCESS_KEY, aws_secret_access_key=secret,
            config=BotoConfig(s3={"addressing_style": "path"},
                              retries={"max_attempts": 1, "mode": "standard"},
                              connect_timeout=2, read_timeout=30))

    def env(self, bucket: str, *, prefix: str = "") -> dict[str, str]:
        """The service's settings for this server and bucket (credentials from the env)."""
        return {
            "VIDEO_STORAGE": "s3",
            "VIDEO_S3_BUCKET": bucket,
            "VIDEO_S3_PREFIX": prefix,
            "VIDEO_S3_ENDPOINT": self.endpoint,
            "VIDEO_S3_REGION": "us-east-1",
            "VIDEO_S3_FORCE_PATH_STYLE": "true",
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        }

    def new_bucket(self) -> str:
        bucket = f"t-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=bucket)
        return bucket

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        out: list[str] = []
        for page in self.client().get_paginator("list_objects_v2").paginate(
                Bucket=bucket, Prefix=prefix):
            out += [str(o["Key"]) for o in page.get("Contents", [])]
        return sorted(out)

    def multipart_uploads(self, bucket: str) -> list[dict[str, Any]]:
        uploads: list[dict[str, Any]] = self.client().list_multipart_uploads(
            Bucket=bucket).get("Uploads", [])
        return uploads


@contextlib.contextmanager
def running_s3(workdir: Path) -> Iterator[S3Server]:
    server = S3Server(weed_binary(), workdir).start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(workdir / "data", ignore_errors=True)


def aws_env(monkeypatch: Any, server: S3Server) -> None:
    """Credentials for code under test, the way boto3's chain finds them in a pod."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    for name in ("AWS_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        monkeypatch.delenv(name, raising=False)
