"""The chart README's values table is generated from values.yaml's comments and kept current;
every value is documented and declared in values.schema.json."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "atproto-video"


def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("chart_readme", ROOT / "scripts" /
                                                  "chart_readme.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("chart_readme", module)
    spec.loader.exec_module(module)
    return module


VALUES = (CHART / "values.yaml").read_text()


def key_paths(value: Any, prefix: tuple[str, ...] = ()) -> set[tuple[str, ...]]:
    if not isinstance(value, dict):
        return set()
    out = set()
    for key, child in value.items():
        out |= {(*prefix, key)} | key_paths(child, (*prefix, key))
    return out


def test_the_readme_is_up_to_date() -> None:
    readme = (CHART / "README.md").read_text()
    assert readme == generator().render(readme, VALUES), "regenerate: make chart-readme"
    assert "kubectl apply -f charts/atproto-video/crds/" in readme
    assert "../../README.md#try-the-chart-on-the-test-cluster" in readme
    heading = "## Try the chart on the test cluster"
    assert heading in (ROOT / "README.md").read_text(), "the README's link target"


def test_every_value_has_a_description() -> None:
    gen = generator()
    # The line scanner sees the keys YAML does, except inside flow maps ({cpu: 1}).
    scanned, parsed = set(gen.comments(VALUES)), key_paths(yaml.safe_load(VALUES))
    assert scanned <= parsed
    for path in parsed - scanned:
        flow = path[:-1]
        while flow and flow not in scanned:
            flow = flow[:-1]
        assert flow, path
        assert not [p for p in scanned if len(p) > len(flow) and p[:len(flow)] == flow], path
    rows = gen.rows(VALUES)
    undocumented = [row.key for row in rows if row.leaf and not row.description]
    assert not undocumented, "add a comment above these keys in values.yaml"
    # Every key is in the table: a row, inside a row's default, or a section holding rows.
    keys = {row.path for row in rows}
    for path in key_paths(yaml.safe_load(VALUES)):
        assert any(path[:len(k)] == k or k[:len(path)] == path for k in keys), path


def test_the_generator_reads_comments() -> None:
    text = """\
# The section.
top:
  # Above,
  # two lines.
  a: 1   # and inline
  b: "x # not a comment"  # but this is

  # Separated by a blank line: not b's.
  c:
    d: {e: 1}
# Folded: nothing inside has a comment.
f:
  g: [1]
"""
    gen = generator()
    assert gen.comments(text)[("top", "a")] == "Above, two lines. and inline"
    assert gen.comments(text)[("top", "b")] == "but this is"
    assert gen.comments(text)[("top", "c")] == "Separated by a blank line: not b's."
    assert gen.comments(text)[("top", "c", "d")] == ""
    rows = {row.key: row for row in gen.rows(text)}
    assert list(rows) == ["top", "top.a", "top.b", "top.c", "f"]
    assert rows["top"].leaf is False and rows["f"].value == {"g": [1]}
    assert "| `top.b` | `\"x # not a comment\"` | but this is |" in gen.table(text)


def test_the_schema_declares_every_value() -> None:
    """Each key of values.yaml is in values.schema.json, or inside an object the schema leaves
    open (resources, annotations, security contexts)."""
    schema = json.loads((CHART / "values.schema.json").read_text())

    def declared(path: tuple[str, ...]) -> bool:
        node = schema
        for key in path:
            properties = node.get("properties")
            if properties is None:
                return True
            if key not in properties:
                return False
            node = properties[key]
        return True

    missing = [".".join(p) for p in sorted(key_paths(yaml.safe_load(VALUES))) if not declared(p)]
    assert not missing, "declare these in values.schema.json"
