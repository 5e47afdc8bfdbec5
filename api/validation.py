"""Request validation failures in the reference XRPC server's words (400 InvalidRequest),
never FastAPI's 422: clients and tests match these messages.

The reference (@atproto/xrpc-server) reports the first failure only: parameters as
``Error: Params/<name> ...`` (it stringifies the error), the JSON body as ``Input/<name> ...``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from atproto_video.api.errors import InvalidRequest

_JSON_TYPES = {"application/json"}


#: Union branches pydantic names in an error's location (``int | None`` is ``("int",)``).
_BRANCH = re.compile(r"^(int|str|float|bool|none|list|dict|constrained-\w+)$|[\[\]()-]")


def _fields(loc: Sequence[Any]) -> list[Any]:
    """The property names of a location, without its source ("query", "body") and without
    the union branches pydantic inserts."""
    return [p for p in loc[1:] if isinstance(p, int) or not _BRANCH.search(str(p))]


def _path(where: str, loc: Sequence[Any]) -> str:
    return "/".join([where, *map(str, _fields(loc))])


def _describe(path: str, error: dict[str, Any]) -> str:
    kind = error.get("type", "")
    ctx = error.get("ctx") or {}
    fields = _fields(error.get("loc") or ())
    if kind == "missing":
        parent = "/".join([path.split("/")[0], *map(str, fields[:-1])])
        return f'{parent} must have the property "{fields[-1]}"'
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return f"{path} must be an integer"
    if kind in ("greater_than_equal", "greater_than"):
        return f"{path} can not be less than {ctx.get('ge', ctx.get('gt'))}"
    if kind in ("less_than_equal", "less_than"):
        return f"{path} can not be greater than {ctx.get('le', ctx.get('lt'))}"
    if kind in ("string_type", "string_unicode"):
        return f"{path} must be a string"
    if kind == "string_too_short":
        return f"{path} must not be shorter than {ctx.get('min_length')} characters"
    if kind == "string_too_long":
        return f"{path} must not be longer than {ctx.get('max_length')} characters"
    if kind in ("bool_type", "bool_parsing"):
        return f"{path} must be a boolean"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"{path} must be an object"
    if kind == "null":
        return f"{path} must not be null"
    if kind == "list_type":
        return f"{path} must be an array"
    return f"{path} is invalid"


def invalid_request(errors: Sequence[Any], content_type: str | None) -> InvalidRequest:
    """The first of FastAPI's validation errors (parameters before the body) as the reference
    server words it."""
    relevant = [e for e in errors if e.get("type") != "none_required"] or list(errors)
    ordered = sorted(relevant, key=lambda e: 0 if (e.get("loc") or ("",))[0] != "body" else 1)
    error: dict[str, Any] = ordered[0] if ordered else {}
    loc = tuple(error.get("loc") or ("body",))
    if loc[0] == "body":
        mime = (content_type or "").split(";")[0].strip().lower()
        if error.get("type") == "missing" and len(loc) == 1:
            return InvalidRequest("A request body is expected but none was provided")
        if mime and mime not in _JSON_TYPES:
            return InvalidRequest(f"Wrong request encoding (Content-Type): {mime}")
        if error.get("type") == "json_invalid":
            return InvalidRequest("Input must be valid JSON")
        return InvalidRequest(_describe(_path("Input", loc), error))
    return InvalidRequest("Error: " + _describe(_path("Params", loc), error))
