"""The values table of charts/atproto-video/README.md, generated from the comments in values.yaml.

    python scripts/chart_readme.py           # rewrite the table in the README (make chart-readme)
    python scripts/chart_readme.py --check   # exit 1 if the README is not up to date

The comment lines directly above a key (no blank line between) and a comment at the end of its
line are its description. Nested keys become dotted paths. A map is one row, its whole value
the default, when no key inside it has a comment of its own (resources, annotations, security
contexts); otherwise each of its keys is a row, and the map's own comment, if any, a row
without a default. Only the text between the markers below is rewritten.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

CHART = Path(__file__).resolve().parents[1] / "charts" / "atproto-video"
START = "<!-- values:start -->"
END = "<!-- values:end -->"

_KEY = re.compile(r"^(?P<indent> *)(?P<key>[^\s#:'\"-][^:#]*?|\"[^\"]+\"|'[^']+'):(?:\s|$)")


@dataclass(frozen=True)
class Row:
    path: tuple[str, ...]
    description: str
    value: Any
    leaf: bool

    @property
    def key(self) -> str:
        return ".".join(self.path)


def _inline_comment(rest: str) -> str:
    """The comment after a key's value, ignoring '#' inside quotes."""
    quote = ""
    for i, ch in enumerate(rest):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or rest[i - 1].isspace()):
            return rest[i + 1:].strip()
    return ""


def comments(text: str) -> dict[tuple[str, ...], str]:
    """Every key path of a values file (block mappings) with its comment text ("" if none)."""
    found: dict[tuple[str, ...], str] = {}
    stack: list[tuple[int, str]] = []
    pending: list[str] = []
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped:
            pending = []
            continue
        if stripped.startswith("#"):
            pending.append(stripped.lstrip("#").strip())
            continue
        match = _KEY.match(line)
        if not match:  # a list item or a continuation line: not a key
            pending = []
            continue
        indent = len(match["indent"])
        while stack and stack[-1][0] >= indent:
            stack.pop()
        key = match["key"].strip("\"'")
        stack.append((indent, key))
        path = tuple(k for _, k in stack)
        inline = _inline_comment(line[match.end() - 1:])
        found[path] = " ".join(part for part in (*pending, inline) if part)
        pending = []
    return found


def _get(values: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        values = values[key]
    return values


def rows(text: str) -> list[Row]:
    """The table rows of a values file, in file order."""
    values = yaml.safe_load(text)
    described = comments(text)
    out: list[Row] = []
    folded: list[tuple[str, ...]] = []
    for path, description in described.items():
        if any(path[:len(f)] == f for f in folded):
            continue
        value = _get(values, path)
        inner = [p for p in described if len(p) > len(path) and p[:len(path)] == path]
        if isinstance(value, dict) and value and any(described[p] for p in inner):
            if description:
                out.append(Row(path, description, value, leaf=False))
            continue
        if isinstance(value, dict):
            folded.append(path)
        out.append(Row(path, description, value, leaf=True))
    return out


def _cell(text: str) -> str:
    """Table-safe: no column breaks, and <fullname> stays text instead of an HTML tag."""
    return text.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


def _default(value: Any) -> str:
    return "`" + json.dumps(value, separators=(", ", ": ")).replace("|", "\\|") + "`"


def table(text: str) -> str:
    lines = ["| Key | Default | Description |", "|---|---|---|"]
    for row in rows(text):
        default = _default(row.value) if row.leaf else ""
        lines.append(f"| `{row.key}` | {default} | {_cell(row.description)} |")
    return "\n".join(lines) + "\n"


def render(readme: str, values_text: str) -> str:
    """``readme`` with the text between the markers replaced by a fresh table."""
    head, found, rest = readme.partition(START)
    _, found_end, tail = rest.partition(END)
    if not found or not found_end:
        raise ValueError(f"the README has no {START} ... {END} markers")
    note = ("<!-- Generated from values.yaml by scripts/chart_readme.py (make chart-readme): "
            "edit the comments there. -->\n")
    return f"{head}{START}\n{note}{table(values_text)}{END}{tail}"


def main(argv: list[str]) -> int:
    readme_path = CHART / "README.md"
    readme = readme_path.read_text()
    fresh = render(readme, (CHART / "values.yaml").read_text())
    if "--check" in argv:
        if fresh != readme:
            print(f"{readme_path} is out of date: make chart-readme", file=sys.stderr)
            return 1
        return 0
    readme_path.write_text(fresh)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
