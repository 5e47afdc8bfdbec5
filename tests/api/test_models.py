"""The pydantic models are the lexicons: every method, property, requirement, type, bound,
format, known value, description and error of ``shared/lexicons/app/bsky/video`` is in
api/models.py, and nothing else but the fields SPEC.md adds (marked ``x-spec``)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from atproto_video.api.models import JSON_SCHEMA_FORMATS, METHODS, SPEC, Method

LEXICONS = Path(__file__).resolve().parents[3] / "shared" / "lexicons" / "app" / "bsky" / "video"
_TYPES = {"string": "string", "integer": "integer", "boolean": "boolean", "array": "array"}
_BOUNDS = ("minLength", "maxLength", "minimum", "maximum")


def lexicons() -> dict[str, dict[str, Any]]:
    if not LEXICONS.is_dir():
        # shared/ sits beside the repository in CI and development, not in a user's clone
        # (shared/lexicons/README.md): there the comparison cannot run.
        pytest.skip(f"the lexicons are not at {LEXICONS} (shared/ beside the repository)")
    docs = [json.loads(p.read_text()) for p in sorted(LEXICONS.glob("*.json"))]
    return {doc["id"]: doc for doc in docs}


def _resolve(schema: dict[str, Any], root: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    """A property's schema with ``$ref`` followed, and the referenced definition's name."""
    ref = schema.get("$ref") or next(
        (s["$ref"] for s in schema.get("allOf", []) if "$ref" in s), None)
    if ref is None:
        return schema, None
    name = ref.rsplit("/", 1)[1]
    return root["$defs"][name], name


def diff_object(lex: dict[str, Any], schema: dict[str, Any], root: dict[str, Any],
                lexdocs: dict[str, dict[str, Any]], where: str) -> list[str]:
    """Differences between a lexicon object (or params) and a model's JSON schema."""
    out: list[str] = []
    props: dict[str, Any] = schema.get("properties", {})
    extras = {k for k, v in props.items() if SPEC in v}
    ours = set(props) - extras
    theirs = set(lex.get("properties", {}))
    if ours != theirs:
        out.append(f"{where}: properties {sorted(ours ^ theirs)} differ")
    if set(lex.get("required", [])) != set(schema.get("required", [])):
        out.append(f"{where}: required {lex.get('required')} != {schema.get('required')}")
    for key in sorted(ours & theirs):
        out += diff_field(lex["properties"][key], props[key], root, lexdocs, f"{where}/{key}")
    return out


def diff_field(lex: dict[str, Any], schema: dict[str, Any], root: dict[str, Any],
               lexdocs: dict[str, dict[str, Any]], where: str) -> list[str]:
    out: list[str] = []
    if lex.get("description") and lex["description"] != schema.get("description"):
        out.append(f"{where}: description differs")
    kind = lex["type"]
    if kind == "ref":
        target, name = _resolve(schema, root)
        nsid, _, defname = lex["ref"].partition("#")
        if name is None:
            return [*out, f"{where}: not a reference to a model"]
        return out + diff_object(lexdocs[nsid]["defs"][defname], target, root, lexdocs,
                                 f"{where}->{name}")
    if kind == "blob":
        target, name = _resolve(schema, root)
        ok = name is not None and {"$type", "ref", "mimeType", "size"} <= set(
            target.get("properties", {}))
        return out if ok else [*out, f"{where}: not the blob model"]
    if schema.get("type") != _TYPES[kind]:
        out.append(f"{where}: type {schema.get('type')} != {kind}")
    for bound in _BOUNDS:
        if lex.get(bound) != schema.get(bound):
            out.append(f"{where}: {bound} {schema.get(bound)} != {lex.get(bound)}")
    if lex.get("knownValues") != schema.get("x-knownValues"):
        out.append(f"{where}: knownValues differ")
    fmt = lex.get("format")
    if (JSON_SCHEMA_FORMATS.get(fmt, fmt) if fmt else None) != schema.get("format"):
        out.append(f"{where}: format {schema.get('format')} != {fmt}")
    if kind == "array":
        out += diff_field(lex["items"], schema["items"], root, lexdocs, f"{where}[]")
    return out


def _schema(model: type[BaseModel], mode: str) -> dict[str, Any]:
    return model.model_json_schema(mode=mode)  # type: ignore[arg-type]


def diff_method(lex: dict[str, Any], method: Method, lexdocs: dict[str, dict[str, Any]],
                ) -> list[str]:
    main = lex["defs"]["main"]
    out: list[str] = []
    if {"query": "GET", "procedure": "POST"}[main["type"]] != method.http:
        out.append(f"{method.nsid}: HTTP {method.http} for a {main['type']}")
    if main.get("description") != method.description:
        out.append(f"{method.nsid}: description differs")
    params = main.get("parameters")
    if method.params is not None:
        schema = _schema(method.params, "validation")
        out += diff_object(params or {}, schema, schema, lexdocs, f"{method.nsid} params")
    elif params:
        out.append(f"{method.nsid}: no params model")
    lex_input = main.get("input") or {}
    if lex_input.get("encoding") != method.input_encoding:
        out.append(f"{method.nsid}: input encoding {method.input_encoding}")
    if "schema" in lex_input and method.input is None:
        out.append(f"{method.nsid}: no input model")
    if method.input is not None:
        schema = _schema(method.input, "validation")
        out += diff_object(lex_input.get("schema", {}), schema, schema, lexdocs,
                           f"{method.nsid} input")
    schema = _schema(method.output, "serialization")
    out += diff_object(main["output"]["schema"], schema, schema, lexdocs, f"{method.nsid} output")
    lex_errors = {e["name"]: e.get("description") for e in main.get("errors", [])}
    ours = {e.name: e.description for e in method.errors}
    if lex_errors != ours:
        out.append(f"{method.nsid}: errors {sorted(set(lex_errors) ^ set(ours))} or their "
                   "descriptions differ")
    return out


def test_every_lexicon_method_has_a_model_and_no_other() -> None:
    docs = lexicons()
    methods = {nsid for nsid, doc in docs.items() if "main" in doc["defs"]}
    assert methods == set(METHODS)


@pytest.mark.parametrize("nsid", sorted(METHODS))
def test_models_match_the_lexicon(nsid: str) -> None:
    docs = lexicons()
    assert diff_method(docs[nsid], METHODS[nsid], docs) == []


def test_spec_extensions_are_only_where_spec_adds_fields() -> None:
    """The x-spec fields: uploadVideo's did/name parameters and its top-level job status."""
    marked = set()
    for nsid, method in METHODS.items():
        for part in (method.params, method.input, method.output):
            if part is not None:
                props = part.model_json_schema().get("properties", {})
                marked |= {f"{nsid}.{k}" for k, v in props.items() if SPEC in v}
    top = {"jobId", "did", "state", "progress", "blob", "error", "failureCode", "message"}
    assert marked == {f"app.bsky.video.uploadVideo.{k}" for k in {"did", "name"} | top}


@pytest.mark.parametrize("change", ["bound", "required", "property", "error", "knownValues"])
def test_the_comparison_sees_a_difference(change: str) -> None:
    """A lexicon changed upstream must fail the test above."""
    docs = copy.deepcopy(lexicons())
    main = docs["app.bsky.video.startUpload"]["defs"]["main"]
    schema = main["input"]["schema"]
    match change:
        case "bound":
            schema["properties"]["mimeType"]["maxLength"] = 128
        case "required":
            schema["required"].append("name")
        case "property":
            schema["properties"]["fps"] = {"type": "integer"}
        case "error":
            main["errors"].append({"name": "SomethingNew"})
        case "knownValues":
            docs["app.bsky.video.defs"]["defs"]["jobStatus"]["properties"]["state"][
                "knownValues"].append("JOB_STATE_PAUSED")
            main = docs["app.bsky.video.getJobStatus"]
            assert diff_method(main, METHODS["app.bsky.video.getJobStatus"], docs)
            return
    assert diff_method(docs["app.bsky.video.startUpload"],
                       METHODS["app.bsky.video.startUpload"], docs)
