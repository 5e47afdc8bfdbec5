"""Shared pieces of the property-based fuzz runs: bounded settings and near-valid JSON.

Every run is bounded by its example count, never by a clock (no timed assertions). The
example database is off: a run does not replay another machine's or run's failures, and
whatever a run finds becomes a plain test next to the module's other tests.
"""

from __future__ import annotations

import base64
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st


def bounded(examples: int) -> settings:
    """``examples`` generated inputs, no per-example deadline (a loaded CI machine is slow)."""
    return settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


#: JSON scalars a hostile writer can send, including what JSON parsers disagree on:
#: integers beyond float range, NaN and Infinity (Python's json reads them), lone surrogates.
SCALARS: st.SearchStrategy[Any] = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from([10**400, -(10**400), 2**63, 2**64 + 1]),
    st.floats(),
    st.text(max_size=12),
)

#: Any JSON value, a few levels deep.
JSON: st.SearchStrategy[Any] = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


@st.composite
def nested_json(draw: st.DrawFn) -> bytes:
    """JSON nested deeper than a recursive parser goes (``[[[...]]]``), closed or not."""
    depth = draw(st.integers(min_value=500, max_value=20_000))
    opener = draw(st.sampled_from([b"[", b'{"a":']))
    closer = b"]" if opener == b"[" else b"}"
    body = opener * depth + b"1"
    return body + (closer * depth if draw(st.booleans()) else b"")


@st.composite
def mutated(draw: st.DrawFn, text: str, alphabet: str) -> str:
    """``text`` with one edit: a character replaced, inserted or deleted, or a cut."""
    edit = draw(st.sampled_from(["replace", "insert", "delete", "cut"]))
    if not text:
        return draw(st.text(alphabet, max_size=4))
    at = draw(st.integers(min_value=0, max_value=len(text) - 1))
    char = draw(st.sampled_from(alphabet))
    if edit == "replace":
        return text[:at] + char + text[at + 1 :]
    if edit == "insert":
        return text[:at] + char + text[at:]
    if edit == "delete":
        return text[:at] + text[at + 1 :]
    return text[:at]
