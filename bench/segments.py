"""segment_cpu_overhead_ratio and the simulated speedup of segment-parallel encoding.

Measured on this machine: one rendition of a longer clip encoded by the worker's CLI (the
worker image's entrypoint, ``atproto-video transcode``) once whole and once as segments
(``--segment K/N``, one after the other, as N Jobs would run them) plus the join. The segment
length is the deployment's: ``VIDEO_SEGMENT_SECONDS`` (default 60, used as 64 s), and the clip
is four segments long. The rendition is the cheapest (480p), where a worker's fixed start-up
cost (about 0.3-0.5 CPU-s: Python, ffmpeg's start, encoder set-up) weighs most against the
encode; shorter segments weigh it more (``VIDEO_SEGMENT_SECONDS=24 python -m bench segments``
measures that case; five 24 s segments measured about 1.05 here). The ratio
is the segments' total CPU (each worker process with its ffmpeg children, plus the join) over
the single encode's (worker, ffprobe, ffmpeg). Segment workers get the probe's facts
(``--source-info``) as the operator passes them, from the probe recorded when the upload was
planned, so they run no ffprobe; that probe is charged to the segments once (``probe_plan``
in-process, as the API runs it), although the cluster pays it for an unsplit job too. The
workers run with compiled bytecode, as the image's (pip-installed) package does. Five
rounds: on this shared machine the same encode's CPU seconds vary by up to 15% between rounds,
so one round's ratio swings by about 0.1 with other load. The headline is the median of the
per-round ratios (each round's segments against the single encode run next to them); beside it
``ratio_of_min_cpu`` (the least-disturbed segments total over the least-disturbed single
encode, across rounds) and ``ratio_of_median_cpu``, with every round's load average.

``segment_speedup_simulated_n{2,4,8}`` is a SIMULATION, not a cluster measurement: the
measured per-segment times are scheduled longest-first onto N identical nodes, and the
critical path (the busiest node, then the join, then the MP4 remux of the joined rendition,
which the operator starts only after the join) is compared with the single encode. CPU
seconds stand for a worker's time alone on its node (wall times on this shared machine
mostly measure other sessions' load; they are kept as extra samples). It ignores scheduling
and pod start-up latency and the source download each worker does in object-storage mode.

``segment_mp4_remux_ratio``: the MP4 of a segmented job is a stream copy of the joined top
rendition (``--target mp4 --from-rendition``), measured here through the worker's CLI, over
the single encode it replaces (the MP4 used to be one whole encode Job, the critical path).
"""

from __future__ import annotations

import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from atproto_video.core.config import KubeSettings, TranscodeSettings
from atproto_video.operator.segments import source_facts
from atproto_video.transcoder.limits import TranscodeLimits
from atproto_video.transcoder.plan import probe_plan, summary
from atproto_video.transcoder.segments import join_segments, plan_segments, segment_length
from tests.support import hlsequiv
from tests.support.media import make_clip

SEGMENTS = 4
SIZE = "854x480"
TARGET = "480p"
NODES = (2, 4, 8)


def _segment_setting() -> int:
    """``VIDEO_SEGMENT_SECONDS`` as the operator reads it."""
    setting = KubeSettings.from_env().segment_s
    if setting <= 0:
        raise SystemExit("bench segments: VIDEO_SEGMENT_SECONDS is 0 (splitting off)")
    return setting


def make_source(path: Path, seconds: int) -> Path:
    """A phone-like upload: keyframes every 2 s (a segment's seek decodes from the one before
    its start), high quality, AAC."""
    return make_clip(path, seconds=seconds, size=SIZE, rate=30,
                     video=("-c:v", "libx264", "-preset", "veryfast", "-crf", "20", "-g", "60",
                            "-pix_fmt", "yuv420p"),
                     audio_codec=("-c:a", "aac", "-b:a", "128k"))


#: The worker image's entrypoint (``ENTRYPOINT ["atproto-video", "transcode"]``).
WORKER = Path(sys.executable).with_name("atproto-video")


def _worker_env(workdir: Path) -> dict[str, str]:
    """The workers' environment: with compiled bytecode, as in the worker image (pip
    compiles the installed package); an editable install under PYTHONDONTWRITEBYTECODE would
    compile every module again in every worker (about 0.06 CPU-s each)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env.update(VIDEO_LOG_LEVEL="error", PYTHONPYCACHEPREFIX=str(workdir / "pycache"))
    subprocess.run([str(WORKER), "transcode", "--help"], env=env, check=True,
                   stdout=subprocess.DEVNULL)  # writes the bytecode once, unmeasured
    return env


def _worker(env: dict[str, str], src: Path, out: Path, *extra: str) -> tuple[float, float]:
    """Wall and CPU seconds of one worker process (the CLI a Job runs), children included."""
    if "--target" not in extra:
        extra = ("--target", TARGET, *extra)
    argv = [str(WORKER), "transcode", str(src), str(out), *extra]
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"worker {' '.join(extra) or 'single'} failed")
    return wall, usage.ru_utime + usage.ru_stime


def _probe(src: Path, limits: TranscodeLimits) -> tuple[str, float]:
    """The planning probe, as the API runs it in-process for every cluster job (split or
    not), and the ``--source-info`` the operator makes of what it records: (facts, CPU s)."""
    before, c0 = resource.getrusage(resource.RUSAGE_CHILDREN), time.process_time()
    _, info = probe_plan(src, limits)
    facts = source_facts(summary(info))
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (time.process_time() - c0 + after.ru_utime - before.ru_utime
           + after.ru_stime - before.ru_stime)
    assert facts is not None
    return facts, cpu


def simulate(segment_walls: list[float], join_s: float, nodes: int,
             remux_s: float = 0.0) -> float:
    """Critical path with ``nodes`` nodes: longest-first onto the least-loaded node, + join,
    + the MP4 remux (which starts after the join)."""
    loads = [0.0] * nodes
    for wall in sorted(segment_walls, reverse=True):
        loads[loads.index(min(loads))] += wall
    return max(loads) + join_s + remux_s


def run(workdir: Path, rounds: int = 5) -> dict[str, Any]:
    workdir.mkdir(parents=True, exist_ok=True)
    setting = _segment_setting()
    limits = TranscodeLimits.from_settings(TranscodeSettings.from_env())
    hls_s = limits.segment_s
    length = segment_length(setting, hls_s)  # what the operator tells its workers
    seconds = SEGMENTS * length
    src = make_source(workdir / "source.mp4", seconds)
    env = _worker_env(workdir)
    segments = plan_segments(seconds, setting, 0, hls_s)
    assert len(segments) == SEGMENTS, segments
    rounds_out: list[dict[str, Any]] = []
    for i in range(rounds):  # interleaved, so drift on a shared machine hits both alike
        single_dir, split_dir = workdir / f"single-{i}", workdir / f"split-{i}"
        walls, cpus = [], []
        load = os.getloadavg()[0]
        if i % 2:
            single_wall, single_cpu = _worker(env, src, single_dir)
        # The probe whose facts the segment workers get (in the cluster: the API's, once).
        facts, probe_cpu = _probe(src, limits)
        for segment in segments:
            wall, cpu = _worker(env, src, split_dir, "--segment", segment.name,
                                "--segment-seconds", str(length), "--source-info", facts)
            walls.append(wall)
            cpus.append(cpu)
        if not i % 2:
            single_wall, single_cpu = _worker(env, src, single_dir)
        c0, t0 = time.process_time(), time.perf_counter()
        joined = join_segments(split_dir, TARGET, len(segments))
        join_cpu, join_wall = time.process_time() - c0, time.perf_counter() - t0
        remux_wall, remux_cpu = _worker(env, src, split_dir, "--target", "mp4",
                                        "--from-rendition", TARGET)
        _, startup_cpu = _worker(env, src, workdir / "plan", "--target", "plan")
        single = single_dir / TARGET / "video.m3u8"
        rounds_out.append({
            "single_wall_s": single_wall, "single_cpu_s": single_cpu,
            "segment_wall_s": walls, "segment_cpu_s": cpus,
            "join_wall_s": join_wall, "join_cpu_s": join_cpu,
            "worker_startup_cpu_s": startup_cpu, "probe_cpu_s": probe_cpu,
            "remux_wall_s": remux_wall, "remux_cpu_s": remux_cpu,
            "frames_single": hlsequiv.frame_count(single),
            "frames_joined": hlsequiv.frame_count(joined),
            "load_average_1min": round(load, 2),
        })
        if i == 0:
            rounds_out[-1]["psnr_single_db"] = hlsequiv.psnr(src, single, 854, 480, "30/1")
            rounds_out[-1]["psnr_joined_db"] = hlsequiv.psnr(src, joined, 854, 480, "30/1")
            mp4 = split_dir / "video.mp4"
            boxes = hlsequiv.top_level_boxes(mp4)
            rounds_out[-1].update({
                "frames_mp4": hlsequiv.frame_count(mp4),
                "mp4_video_s": hlsequiv.stream_seconds(mp4, "v"),
                "joined_s": hlsequiv.playlist_seconds(joined),
                "mp4_faststart": boxes.index("moov") < boxes.index("mdat"),
                "mp4_decode_errors": hlsequiv.decode_errors(mp4),
            })
        shutil.rmtree(single_dir, ignore_errors=True)
        shutil.rmtree(split_dir, ignore_errors=True)
    totals = [sum(r["segment_cpu_s"]) + r["join_cpu_s"] + r["probe_cpu_s"] for r in rounds_out]
    singles = [r["single_cpu_s"] for r in rounds_out]
    ratios = [total / single for total, single in zip(totals, singles, strict=True)]
    unprobed = [(sum(r["segment_cpu_s"]) + r["join_cpu_s"]) / r["single_cpu_s"]
                for r in rounds_out]
    out: dict[str, Any] = {
        "segment_cpu_overhead_ratio": {
            "value": round(statistics.median(ratios), 3),
            "samples": [round(x, 4) for x in ratios],
            "samples_range": [round(min(ratios), 4), round(max(ratios), 4)],
            "ratio_of_min_cpu": round(min(totals) / min(singles), 4),
            "ratio_of_median_cpu": round(statistics.median(totals)
                                         / statistics.median(singles), 4),
            "extra_cpu_s_per_extra_segment": round(
                (statistics.median(totals) - statistics.median(singles)) / (len(segments) - 1), 3),
            "clip": f"{seconds} s {SIZE} 30 fps with audio, rendition {TARGET}, "
                    f"{len(segments)} segments of {length} s "
                    f"(VIDEO_SEGMENT_SECONDS={setting})",
            "samples_without_probe": [round(x, 4) for x in unprobed],
            "how": "sum of the segment workers' CPU (atproto-video transcode with compiled "
                   "bytecode, as in the worker image: python, ffmpeg; given the probe's facts "
                   "with --source-info as the operator passes them, so no ffprobe) plus the "
                   "join plus the planning probe those facts came from (probe_cpu_s: "
                   "probe_plan in-process, as the API runs it, with its ffprobe), over the "
                   "single-encode worker's CPU (python, ffprobe, ffmpeg); value: median "
                   "of the per-round ratios of interleaved rounds. ratio_of_min_cpu: the "
                   "smallest segments total over the smallest single encode across rounds "
                   "(the least disturbed of each); ratio_of_median_cpu: the same with "
                   "medians; extra_cpu_s_per_extra_segment: (median segments total - "
                   "median single) / (segments - 1), what splitting costs per extra worker. "
                   "load_average_1min: at each round's start. "
                   "samples_without_probe leave the planning probe out (the cluster pays it "
                   "for an unsplit job as well). worker_startup_cpu_s "
                   "is one worker's fixed cost with a probe (--target plan)",
            "rounds": rounds_out,
        },
    }
    remux = [r["remux_cpu_s"] / r["single_cpu_s"] for r in rounds_out]
    out["segment_mp4_remux_ratio"] = {
        "value": round(statistics.median(remux), 4),
        "samples": [round(x, 4) for x in remux],
        "remux_cpu_s": [round(r["remux_cpu_s"], 3) for r in rounds_out],
        "remux_wall_s": [round(r["remux_wall_s"], 3) for r in rounds_out],
        "how": "CPU of the MP4 worker remuxing the joined rendition (--target mp4 "
               "--from-rendition, stream copy, faststart; python, ffmpeg) over the single "
               "encode's CPU, which a whole MP4 encode Job costs; checked in round 0: frame "
               "count, video length, faststart, clean decode",
    }
    for nodes in NODES:
        speedups = [r["single_cpu_s"] / simulate(r["segment_cpu_s"], r["join_cpu_s"], nodes,
                                                 r["remux_cpu_s"]) for r in rounds_out]
        by_wall = [r["single_wall_s"] / simulate(r["segment_wall_s"], r["join_wall_s"], nodes,
                                                 r["remux_wall_s"]) for r in rounds_out]
        out[f"segment_speedup_simulated_n{nodes}"] = {
            "value": round(statistics.median(speedups), 2),
            "samples": [round(x, 3) for x in speedups],
            "samples_from_wall_times": [round(x, 3) for x in by_wall],
            "simulated": True,
            "how": f"SIMULATION, not measured on {nodes} nodes: the {len(segments)} measured "
                   "per-segment worker times scheduled longest-first onto N identical nodes; "
                   "critical path = busiest node + join + the MP4 remux of the joined "
                   "rendition (measured, started after the join); speedup = single encode "
                   "over critical path. From CPU seconds (each worker alone on its node; wall "
                   "times on this shared 2-core machine are dominated by other load, kept as "
                   "samples_from_wall_times). Ignores pod start-up and source download.",
        }
    return out
