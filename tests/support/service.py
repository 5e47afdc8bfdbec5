"""Run ``atproto-video serve`` as a real process on a free loopback port."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

from atproto_video.core.lexicon import STATE_ORDER
from tests.support.waiting import free_port, wait_healthy


class ServiceProcess:
    def __init__(self, data_dir: Path, env: dict[str, str]) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "VIDEO_SERVICE_DID": "did:web:video.test",
            "VIDEO_HOST": "127.0.0.1",
            "VIDEO_DATA_DIR": str(data_dir),
            "VIDEO_ALLOW_PRIVATE_ENDPOINTS": "1",
            **env,
            "VIDEO_PORT": str(self.port),
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir / "service.log"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 60.0) -> ServiceProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "atproto_video.cli", "serve"],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.data_dir,
        )
        wait_healthy(self.proc, f"{self.url}/xrpc/_health", timeout=timeout, logs=self.logs)
        return self

    def stop(self, timeout: float = 30.0) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")


def vm_hwm_kb(pid: int) -> int:
    """Peak resident memory of a process (VmHWM), in KiB: memory tests and bench/upload.py."""
    return _proc_status_kb(pid, "VmHWM")


def vm_rss_kb(pid: int) -> int:
    """Current resident memory of a process (VmRSS), in KiB."""
    return _proc_status_kb(pid, "VmRSS")


def _proc_status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} for pid {pid}")


def assert_monotonic(seen: list[tuple[str, int]]) -> None:
    """Polled (state, progress) pairs: states only move forward (lexicon order) and progress
    never goes back within a state."""
    order = [s.value for s in STATE_ORDER]
    ranks = [order.index(s) for s, _ in seen]
    assert ranks == sorted(ranks), seen
    for state in {s for s, _ in seen}:
        values = [p for s, p in seen if s == state]
        assert values == sorted(values), (state, values)


def job_count(svc: ServiceProcess, did: str) -> int:
    """Jobs of ``did`` in an embedded service's SQLite database."""
    with sqlite3.connect(svc.data_dir / "video.sqlite3") as conn:
        return int(
            conn.execute("SELECT count(*) FROM video_job WHERE did = ?", (did,)).fetchone()[0]
        )
