"""``make bench``: run every benchmark and write bench/results/latest.{json,md}.

Each figure is a ratio against a baseline measured in the same run (the machines are shared and
noisy); the raw timings are kept beside it. Select benchmarks with ``python -m bench NAME...``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import sys
import tempfile
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import e2e, multipart, playable, s3_upload, segments, status, upload

RESULTS = Path(__file__).resolve().parent / "results"

TARGETS = {
    "e2e_latency_ratio": ("<=", 1.10),
    "first_playable_ratio": ("<=", 0.35),
    "upload_throughput_ratio": (">=", 0.5),
    "upload_hashed_copy_ratio": (">=", 0.8),
    "upload_peak_rss_mb": ("<=", 64),
    "s3_upload_throughput_ratio": (">=", 0.8),
    "s3_upload_peak_rss_mb": ("<=", 64),
    "status_rps_ratio": (">=", 0.6),
    "multipart_throughput_ratio": (">=", 0.9),
    "s3_multipart_throughput_ratio": (">=", 0.9),
    "multipart_finish_cpu_s": ("<", 1.0),
    "operator_dispatch_p99_s": ("<", 2.0),
    "operator_status_p99_s": ("<", 2.0),
    "segment_cpu_overhead_ratio": ("<=", 1.05),
}


def _benchmarks() -> dict[str, Callable[[Path], dict[str, Any]]]:
    out: dict[str, Callable[[Path], dict[str, Any]]] = {
        "e2e": e2e.run,
        "playable": playable.run,
        "upload": upload.run,
        "s3_upload": s3_upload.run,
        "multipart": multipart.run,
        "status": status.run,
        "segments": segments.run,
    }
    try:
        from bench import operator_dispatch
    except ImportError:
        pass
    else:
        out["operator"] = operator_dispatch.run
    return out


def _met(key: str, value: float) -> str:
    if key not in TARGETS:
        return ""
    op, target = TARGETS[key]
    ok = {"<=": value <= target, ">=": value >= target, "<": value < target}[op]
    return f"{'met' if ok else 'MISSED'} (target {op} {target})"


def render_markdown(results: dict[str, Any]) -> str:
    lines = [
        "# Benchmark results",
        "",
        f"Run at {results['meta']['started']} on {results['meta']['machine']}.",
        "Every figure is a ratio against a baseline measured in the same run.",
        "",
        "| key | value | target |",
        "|---|---|---|",
    ]
    for key, entry in results.items():
        if key == "meta" or not isinstance(entry, dict) or "value" not in entry:
            continue
        lines.append(f"| `{key}` | {entry['value']} | {_met(key, float(entry['value']))} |")
    if results["meta"].get("errors"):
        lines += ["", "## Errors", ""]
        for name, err in results["meta"]["errors"].items():
            lines += [f"### {name}", "", "```", err.strip(), "```"]
    lines += ["", "Raw timings: `bench/results/latest.json`.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    benches = _benchmarks()
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"any of {', '.join(benches)}")
    parser.add_argument("--results", type=Path, default=RESULTS,
                        help="directory for latest.json and latest.md (default: bench/results)")
    args = parser.parse_args(argv)
    selected = args.names or list(benches)
    unknown = set(selected) - set(benches)
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
    results: dict[str, Any] = {
        "meta": {
            "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "machine": f"{platform.node()} {os.cpu_count()} cpus {platform.machine()}",
            "python": sys.version.split()[0],
            "errors": {},
        }
    }
    work = Path(tempfile.mkdtemp(prefix="atproto-video-bench-", dir="/var/tmp"))
    try:
        for name in selected:
            print(f"bench: {name} ...", file=sys.stderr, flush=True)
            try:
                results.update(benches[name](work / name))
            except Exception:
                results["meta"]["errors"][name] = traceback.format_exc()
                print(traceback.format_exc(), file=sys.stderr)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    out: Path = args.results
    out.mkdir(parents=True, exist_ok=True)
    (out / "latest.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "latest.md").write_text(render_markdown(results))
    print((out / "latest.md").read_text())
    return 1 if results["meta"]["errors"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
