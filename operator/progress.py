"""Progress from worker pods without giving them API access.

Each worker rewrites ``jobs/<id>/progress/<target>.json`` (``{"target": ..., "progress":
0-100}``, atomically) on the shared storage; the operator, which mounts the same storage,
reads these files on every poll and aggregates them. Workers need no service-account token,
no RBAC and no network; the operator is the only writer of the CR status and the database.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

from atproto_video.ladder import Variant, mp4_variant
from atproto_video.operator.templates import Target

#: The thumbnail is one frame: nearly free next to a rendition.
THUMBNAIL_WEIGHT = 0.02


def targets_for(variants: Sequence[Variant]) -> list[Target]:
    """One target per rendition, then the MP4 and the thumbnail; weights are encoded pixels."""
    if not variants:
        raise ValueError("a plan needs at least one rendition")
    top = mp4_variant(list(variants))
    targets = [Target(v.name, v.rung, float(v.width * v.height)) for v in variants]
    targets.append(Target("mp4", "mp4", float(top.width * top.height)))
    targets.append(Target("thumbnail", "thumbnail", THUMBNAIL_WEIGHT * top.width * top.height))
    return targets


def read_progress(path: Path) -> int | None:
    """The percentage in a worker's progress file, or None when absent or unreadable.

    Writers replace the file atomically, but a half-written or foreign file must never break
    the poll: anything unexpected reads as "no news".
    """
    try:
        raw = path.read_bytes()
    except OSError:
        return None
    if len(raw) > 4096:
        return None
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    value = data.get("progress") if isinstance(data, dict) else None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return max(0, min(100, int(value)))


def aggregate(targets: Sequence[Target], progress: Mapping[str, int]) -> int:
    """Weighted overall percentage; 100 only when every target is at 100."""
    total = sum(t.weight for t in targets)
    if total <= 0:
        return 0
    done = sum(t.weight * max(0, min(100, progress.get(t.name, 0))) for t in targets) / total
    if all(progress.get(t.name, 0) >= 100 for t in targets):
        return 100
    return min(99, int(done))
