"""Figures measured by the fault and load tests: recorded, never asserted on (README table).

Each figure is appended as one JSON line to ``$VIDEO_FAULT_FIGURES`` (default
``bench/results/faults.jsonl``, not committed) and printed, so ``pytest -s`` shows it too.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path
from typing import Any

_DEFAULT = Path(__file__).resolve().parents[2] / "bench" / "results" / "faults.jsonl"


def record_figure(test: str, name: str, seconds: float) -> None:
    path = Path(os.environ.get("VIDEO_FAULT_FIGURES", str(_DEFAULT)))
    path.parent.mkdir(parents=True, exist_ok=True)
    line = {"test": test, "figure": name, "seconds": round(seconds, 2),
            "at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
    with path.open("a", encoding="utf-8") as f:
        f.write(json.dumps(line) + "\n")
    print(f"[figure] {test}: {name} = {seconds:.2f} s")


_LOAD_DEFAULT = _DEFAULT.parent / "load.jsonl"


def record_load(mode: str, figures: dict[str, Any]) -> None:
    """One line per load run (``$VIDEO_LOAD_FIGURES``, default ``bench/results/load.jsonl``):
    latency percentiles, rates, answers by status, RSS; recorded, never asserted on."""
    path = Path(os.environ.get("VIDEO_LOAD_FIGURES", str(_LOAD_DEFAULT)))
    path.parent.mkdir(parents=True, exist_ok=True)
    line = {"test": "load", "mode": mode, **figures,
            "at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
    with path.open("a", encoding="utf-8") as f:
        f.write(json.dumps(line) + "\n")
    print(f"[load] {mode}: {json.dumps(line)}")
