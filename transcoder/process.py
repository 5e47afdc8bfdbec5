"""Run ffmpeg/ffprobe children under a wall-clock timeout and an address-space cap.

The child gets its own session so a timeout kills it and anything it spawned, and nothing
else. RLIMIT_AS and a lower CPU priority are applied right after spawn instead of in
`preexec_fn`, which is unsafe when the caller is multi-threaded (the executor runs transcodes
in threads). Children that run together can share a :class:`RunGroup`: when one fails, the
caller stops the group and every other child is killed too.
"""

from __future__ import annotations

import collections
import contextlib
import os
import re
import resource
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

_STDERR_LINES = 40
# What ffmpeg and the dynamic loader print when RLIMIT_AS or the OOM killer strikes.
_RESOURCE_MARKERS = (
    "cannot allocate memory",
    "error while loading shared libraries",
    "failed to map segment",
    "out of memory",
)
_MAX_STDOUT_BYTES = 32 * 1024 * 1024
#: Unprivileged writes to /proc/PID/autogroup are refused (EAGAIN) within 100 ms of the last.
_AUTOGROUP_RETRY_S = 0.11
_AUTOGROUP_TRIES = 3


class RunGroup:
    """Children that live and die together: :meth:`stop` kills every running member, and
    any member started after it is killed at once (its result says ``stopped``)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._members: set[subprocess.Popen[bytes]] = set()
        self._stopped = False

    @property
    def stopped(self) -> bool:
        return self._stopped

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            members = list(self._members)
        for proc in members:
            _kill_group(proc)

    def _join(self, proc: subprocess.Popen[bytes]) -> bool:
        """Track `proc`; False (and `proc` killed) when the group was already stopped."""
        with self._lock:
            if not self._stopped:
                self._members.add(proc)
                return True
        _kill_group(proc)
        return False

    def _leave(self, proc: subprocess.Popen[bytes]) -> None:
        with self._lock:
            self._members.discard(proc)


@dataclass
class RunResult:
    returncode: int
    timed_out: bool
    stdout: str = ""
    stderr_tail: list[str] = field(default_factory=list)
    spawn_error: str | None = None
    #: Killed because its :class:`RunGroup` was stopped (another member failed).
    stopped: bool = False

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out and not self.stopped

    @property
    def out_of_resources(self) -> bool:
        """Killed by a signal (OOM killer) or hit RLIMIT_AS: our limits, not the input."""
        return self.returncode < 0 or any(
            marker in line.lower() for line in self.stderr_tail for marker in _RESOURCE_MARKERS
        )


def run(
    argv: Sequence[str],
    *,
    timeout_s: float,
    max_memory_bytes: int = 0,
    cwd: Path | None = None,
    on_line: Callable[[str], None] | None = None,
    niceness: int = 0,
    group: RunGroup | None = None,
) -> RunResult:
    """Run `argv`; stdout lines go to `on_line` if given, else are returned (bounded).

    ``niceness`` > 0 lowers the child's CPU priority (see :func:`_lower_priority`);
    ``group`` lets another thread kill the child with :meth:`RunGroup.stop`.
    """
    # Few malloc arenas: glibc reserves 64 MiB of address space per arena, which would make
    # RLIMIT_AS fail on many-core machines long before real memory use is high.
    env = dict(os.environ, AV_LOG_FORCE_NOCOLOR="1", MALLOC_ARENA_MAX="2")
    try:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=cwd,
            env=env,
            start_new_session=True,
        )
    except OSError as exc:
        return RunResult(returncode=127, timed_out=False, spawn_error=f"{argv[0]}: {exc.strerror}")
    if max_memory_bytes > 0:
        # If the process already exited, its return code tells the story.
        with contextlib.suppress(OSError, ValueError):
            resource.prlimit(proc.pid, resource.RLIMIT_AS, (max_memory_bytes, max_memory_bytes))
    if niceness > 0:
        _lower_priority(proc.pid, niceness)
    if group is not None:
        group._join(proc)
    tail: collections.deque[str] = collections.deque(maxlen=_STDERR_LINES)
    assert proc.stderr is not None and proc.stdout is not None
    stderr = proc.stderr

    def drain_stderr() -> None:
        for raw in stderr:
            tail.append(raw.decode("utf-8", "replace").rstrip())

    reader = threading.Thread(target=drain_stderr, daemon=True)
    reader.start()
    timed_out = threading.Event()

    def kill() -> None:
        timed_out.set()
        _kill_group(proc)

    timer = threading.Timer(timeout_s, kill)
    timer.daemon = True
    timer.start()
    chunks: list[bytes] = []
    size = 0
    try:
        for raw in proc.stdout:
            if on_line is not None:
                on_line(raw.decode("utf-8", "replace"))
            elif size < _MAX_STDOUT_BYTES:
                chunks.append(raw)
                size += len(raw)
        returncode = proc.wait()
    finally:
        timer.cancel()
        if proc.poll() is None:  # the callback raised, or we were interrupted
            _kill_group(proc)
            proc.wait()
        if group is not None:
            group._leave(proc)
        reader.join(timeout=5)
        proc.stdout.close()
        stderr.close()
    return RunResult(
        returncode=returncode,
        timed_out=timed_out.is_set(),
        stdout=b"".join(chunks).decode("utf-8", "replace"),
        stderr_tail=list(tail),
        stopped=returncode != 0 and group is not None and group.stopped,
    )


def clean_message(line: str) -> str:
    """Drop `[h264 @ 0x...]` prefixes and file paths: short, path-free, safe to show users."""
    line = re.sub(r"\[[^\]]+ @ 0x[0-9a-f]+\]\s*", "", line)
    # The path only: ffmpeg's "file:/path: message" keeps its colon, so callers can strip
    # the "<input>: " prefix.
    line = re.sub(r"file:/\S*?(?=:?(?:\s|$))", "<input>", line)
    return line.strip()[:200]


def _lower_priority(pid: int, niceness: int) -> None:
    """Best effort: the child's (and its threads') nice value, and its autogroup's.

    The child leads a new session, and with autogrouping (most Linux kernels) the scheduler
    first shares the CPU between sessions' autogroups and applies nice values only inside
    one: so the autogroup's own nice value (/proc/PID/autogroup) is what makes a background
    encode yield to another session's. Just after spawn the child is still one thread; the
    threads it starts inherit its value, and PRIO_PGRP covers any that already exist.
    """
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PGRP, pid, niceness)
    autogroup = Path(f"/proc/{pid}/autogroup")
    for attempt in range(_AUTOGROUP_TRIES):
        try:
            autogroup.write_text(f"{niceness}\n", encoding="ascii")
            return
        except BlockingIOError:  # rate-limited: another session's was set just now
            if attempt + 1 < _AUTOGROUP_TRIES:
                time.sleep(_AUTOGROUP_RETRY_S)
        except OSError:  # no autogrouping in this kernel, or the child is gone
            return


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
