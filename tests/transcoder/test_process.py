"""run(): children under a timeout and an address-space cap, killed with everything they spawn.

Children are small Python programs (the real subprocess machinery, no ffmpeg needed) so each
behaviour is shown directly; ffmpeg itself runs under `run` in test_probe and test_inputs.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import signal
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from atproto_video.transcoder.process import RunGroup, RunResult, clean_message, run
from tests.support.waiting import wait_for

#: Children that need the address-space cap first wait until prlimit(2) has applied it.
WAIT_FOR_CAP = """
import resource, time
for _ in range(1000):
    if resource.getrlimit(resource.RLIMIT_AS)[0] != resource.RLIM_INFINITY:
        break
    time.sleep(0.01)
"""


def python(code: str) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(code)]


def gone(pid: int) -> bool:
    """Exited (or a zombie nobody reaped yet): it runs no more code either way."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def test_stdout_and_exit_code() -> None:
    ok = run(python("print('hello'); print('world')"), timeout_s=30)
    assert (ok.returncode, ok.timed_out, ok.ok) == (0, False, True)
    assert ok.stdout == "hello\nworld\n"
    failed = run(python("import sys; sys.exit(3)"), timeout_s=30)
    assert (failed.returncode, failed.ok, failed.out_of_resources) == (3, False, False)


def test_lines_go_to_the_callback_in_order_instead_of_stdout() -> None:
    lines: list[str] = []
    result = run(python("for i in range(5): print(f'n={i}', flush=True)"), timeout_s=30,
                 on_line=lines.append)
    assert result.ok
    assert lines == [f"n={i}\n" for i in range(5)]
    assert result.stdout == ""


def test_stderr_keeps_only_the_last_lines() -> None:
    result = run(python("""
        import sys
        for i in range(100):
            print(f"line {i}  ", file=sys.stderr)
        sys.stderr.buffer.write(b"bad \\xff byte\\n")
    """), timeout_s=30)
    assert len(result.stderr_tail) == 40
    assert result.stderr_tail[0] == "line 61"  # right-stripped
    assert result.stderr_tail[-2] == "line 99"
    assert result.stderr_tail[-1] == "bad \ufffd byte"


def test_child_runs_in_its_own_session_with_a_quiet_small_malloc_environment() -> None:
    result = run(python("""
        import json, os
        print(json.dumps([os.getsid(0), os.environ.get("AV_LOG_FORCE_NOCOLOR"),
                          os.environ.get("MALLOC_ARENA_MAX")]))
    """), timeout_s=30)
    sid, nocolor, arenas = json.loads(result.stdout)
    assert sid != os.getsid(0)  # a timeout's killpg can never reach the caller
    assert (nocolor, arenas) == ("1", "2")


def test_missing_executable_is_a_spawn_error(tmp_path: Path) -> None:
    result = run([str(tmp_path / "no-such-ffmpeg"), "-version"], timeout_s=30)
    assert result.returncode == 127 and not result.ok and not result.timed_out
    assert result.spawn_error == f"{tmp_path / 'no-such-ffmpeg'}: No such file or directory"


def test_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    """The grandchild has its own stdio, so only killpg (not killing the child) can end it."""
    pid_file = tmp_path / "grandchild.pid"
    result = run(python(f"""
        import subprocess, time
        grandchild = subprocess.Popen(["sleep", "600"], stdin=subprocess.DEVNULL,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        open({str(pid_file)!r}, "w").write(str(grandchild.pid))
        print("started", flush=True)
        time.sleep(600)
    """), timeout_s=3.0)
    grandchild = int(pid_file.read_text())
    try:
        assert result.timed_out and not result.ok
        assert result.returncode == -signal.SIGKILL
        assert result.stdout == "started\n"
        wait_for(lambda: gone(grandchild), timeout=10, what=f"grandchild {grandchild} killed")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(grandchild, signal.SIGKILL)


def test_a_failing_callback_stops_the_child() -> None:
    started: list[int] = []

    def on_line(line: str) -> None:
        started.append(int(line))
        raise RuntimeError("progress sink failed")

    with pytest.raises(RuntimeError, match="progress sink failed"):
        run(python("import os, time; print(os.getpid(), flush=True); time.sleep(600)"),
            timeout_s=600, on_line=on_line)
    assert len(started) == 1
    assert gone(started[0])


def test_stopping_a_group_kills_its_running_members_and_any_started_later() -> None:
    group = RunGroup()
    pids: list[int] = []
    results: list[RunResult] = []
    sleeper = python("import os, time; print(os.getpid(), flush=True); time.sleep(600)")
    member = threading.Thread(target=lambda: results.append(
        run(sleeper, timeout_s=600, group=group, on_line=lambda line: pids.append(int(line)))))
    member.start()
    wait_for(lambda: pids, timeout=30, what="the member started")
    group.stop()
    member.join(timeout=30)
    assert not member.is_alive() and gone(pids[0])
    (killed,) = results
    assert killed.stopped and not killed.ok and not killed.timed_out
    late = run(sleeper, timeout_s=600, group=group)
    assert late.stopped and late.returncode == -signal.SIGKILL
    # A run that succeeds is not "stopped", even in a stopped group; one outside a group never.
    assert run(python("pass"), timeout_s=30).stopped is False


def test_niceness_lowers_the_child_and_its_session_autogroup() -> None:
    """Applied after spawn (no preexec_fn): the child waits until it sees it."""
    ours = os.getpriority(os.PRIO_PROCESS, 0)
    result = run(python("""
        import os, time
        for _ in range(1000):
            if os.getpriority(os.PRIO_PROCESS, 0) > 0:
                break
            time.sleep(0.01)
        try:
            autogroup = open("/proc/self/autogroup").read().split()[-1]
        except OSError:  # a kernel without autogrouping
            autogroup = "absent"
        print(os.getpriority(os.PRIO_PROCESS, 0), autogroup)
    """), timeout_s=30, niceness=10)
    nice, autogroup = result.stdout.split()
    assert nice == "10"
    assert autogroup in ("10", "absent")
    assert os.getpriority(os.PRIO_PROCESS, 0) == ours  # the caller's own is untouched


def test_address_space_cap_is_applied_to_the_child() -> None:
    cap = 1024**3
    result = run(python(WAIT_FOR_CAP + "print(resource.getrlimit(resource.RLIMIT_AS))"),
                 timeout_s=30, max_memory_bytes=cap)
    assert result.stdout.strip() == f"({cap}, {cap})"
    # The cap is the child's alone.
    assert resource.getrlimit(resource.RLIMIT_AS)[0] == resource.RLIM_INFINITY


def test_allocating_past_the_cap_fails_in_the_child() -> None:
    grab = "b = bytearray(256 * 1024 * 1024); print(len(b))"
    capped = run(python(WAIT_FOR_CAP + grab), timeout_s=30, max_memory_bytes=128 * 1024**2)
    assert not capped.ok and "MemoryError" in capped.stderr_tail[-1]
    uncapped = run(python(grab), timeout_s=30)
    assert uncapped.ok and uncapped.stdout.strip() == str(256 * 1024 * 1024)


@pytest.mark.parametrize(
    ("returncode", "stderr", "expected"),
    [
        (-9, [], True),  # the OOM killer
        (1, ["[h264 @ 0x1] Cannot allocate memory"], True),
        (127, ["ffmpeg: error while loading shared libraries: libx264.so"], True),
        (1, ["Invalid data found when processing input"], False),
        (0, [], False),
    ],
)
def test_out_of_resources_means_our_limits_not_the_input(
    returncode: int, stderr: list[str], expected: bool
) -> None:
    assert RunResult(returncode, False, stderr_tail=stderr).out_of_resources is expected


def test_clean_message_is_short_and_path_free() -> None:
    line = "[mov,mp4,m4a @ 0x55d1c0de] file:/srv/jobs/abc/source: Invalid data found  "
    cleaned = clean_message(line)
    assert cleaned == "<input>: Invalid data found"
    assert clean_message("Error opening input file:/a/b/c.") == "Error opening input <input>"
    assert clean_message("file:/x/source") == "<input>"
    assert "/srv" not in cleaned and "0x55d1c0de" not in cleaned
    assert len(clean_message("x" * 500)) == 200
