"""Fuzzed DID documents and identifiers: a document its host wrote is any JSON, and a did:web
is any text, so parsing them may refuse (DidError) but never fail otherwise or point elsewhere.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote, urlsplit

from hypothesis import given
from hypothesis import strategies as st

from atproto_video.api.identity import (
    LEGACY_TYPES,
    MULTICODEC_P256,
    MULTICODEC_SECP256K1,
    DidDocument,
    DidError,
    b58decode,
    b58encode,
    did_web_url,
    parse_document,
    parse_multikey,
)
from tests.support.fuzzing import JSON, SCALARS, bounded, mutated
from tests.support.identity import Identity

DID = "did:plc:fuzzfuzzfuzzfuzzfuzzfuzz"
B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
KEYS = [Identity(DID, alg=alg, key_form=form)
        for alg in ("ES256K", "ES256") for form in ("multikey", "legacy")]  # fmt: skip


@st.composite
def multibases(draw: st.DrawFn) -> str:
    """Real keys, real keys with one character changed, and made-up multicodec points."""
    kind = draw(st.sampled_from(["real", "mutated", "made up", "text"]))
    if kind in ("real", "mutated"):
        real = draw(st.sampled_from(KEYS)).public_multibase()
        return real if kind == "real" else draw(mutated(real, B58 + "0OIl+z"))
    if kind == "made up":
        prefix = draw(st.sampled_from([MULTICODEC_SECP256K1, MULTICODEC_P256, b"", b"\xed\x01"]))
        point = draw(st.binary(min_size=0, max_size=70))
        head = draw(st.sampled_from([b"", b"\x02", b"\x03", b"\x04"]))
        return draw(st.sampled_from(["z", "m", ""])) + b58encode(prefix + head + point)
    return draw(st.text(max_size=40) | st.text(B58, max_size=400).map(lambda t: "z" + t))


def methods() -> st.SearchStrategy[Any]:
    """verificationMethod entries: near-valid ones, with odd types in every field."""
    vm_id = st.sampled_from(["#atproto", f"{DID}#atproto", "#other"]) | JSON
    vm_type = st.sampled_from(["Multikey", *LEGACY_TYPES]) | JSON
    entry = st.fixed_dictionaries(
        {"id": vm_id, "type": vm_type, "publicKeyMultibase": multibases() | SCALARS},
        optional={"controller": JSON},
    )
    return st.one_of(st.lists(entry | JSON, max_size=3), st.lists(entry, max_size=2), JSON)


def services() -> st.SearchStrategy[Any]:
    svc_id = st.sampled_from(["#atproto_pds", f"{DID}#atproto_pds"]) | JSON
    svc_type = st.just("AtprotoPersonalDataServer") | JSON
    entry = st.fixed_dictionaries(
        {"id": svc_id, "type": svc_type, "serviceEndpoint": st.text(max_size=30) | JSON}
    )
    return st.one_of(st.lists(entry | JSON, max_size=3), st.lists(entry, max_size=2), JSON)


@st.composite
def documents(draw: st.DrawFn) -> Any:
    if draw(st.integers(0, 9)) == 0:
        return draw(JSON)
    doc: dict[str, Any] = {"id": draw(st.just(DID) | st.just(DID) | JSON)}
    for name, values in (("verificationMethod", methods()), ("service", services())):
        if draw(st.booleans()):
            doc[name] = draw(values)
    if draw(st.booleans()):
        doc["alsoKnownAs"] = draw(JSON)
    return doc


@bounded(500)
@given(documents())
def test_parse_document_raises_only_did_error(doc: Any) -> None:
    try:
        parsed = parse_document(DID, doc)
    except DidError:
        return
    assert isinstance(parsed, DidDocument) and parsed.did == DID
    assert parsed.signing_key is None or parsed.signing_key.alg in ("ES256K", "ES256")
    assert parsed.pds_endpoint is None or isinstance(parsed.pds_endpoint, str)


@bounded(300)
@given(multibases())
def test_parse_multikey_raises_only_did_error(multibase: str) -> None:
    try:
        key = parse_multikey(multibase)
    except DidError:
        return
    assert key.alg in ("ES256K", "ES256")


@bounded(300)
@given(st.text(max_size=60) | st.text(B58, max_size=120))
def test_b58decode_round_trips_or_raises_value_error(text: str) -> None:
    try:
        data = b58decode(text)
    except ValueError:
        assert any(c not in B58 for c in text)
        return
    assert b58encode(data) == text


@bounded(200)
@given(st.binary(max_size=80))
def test_b58encode_round_trips(data: bytes) -> None:
    assert b58decode(b58encode(data)) == data


@st.composite
def did_webs(draw: st.DrawFn) -> str:
    """did:web identifiers from host names, ports and the escapes that change a URL's shape."""
    pieces = st.sampled_from([
        "localhost", "example.com", "evil.com", "LOCALHOST", "a-b", "%3A", "%3a", ":", "%40",
        "%2F", "%23", "%3F", "%5B", "%5D", "%25", "%20", "..", ".", "8080", "0", "99999", "_",
    ])  # fmt: skip
    ident = "".join(draw(st.lists(pieces | st.text(max_size=3), max_size=6)))
    return draw(st.sampled_from(["did:web:", "did:web:", "did:plc:", ""])) + ident


@bounded(400)
@given(did_webs())
def test_did_web_url_names_exactly_the_host(did: str) -> None:
    """The URL goes to the decoded host, at the well-known path, http and ports for localhost."""
    try:
        url = did_web_url(did)
    except DidError:
        return
    parts = urlsplit(url)
    host = unquote(did.removeprefix("did:web:"))
    assert parts.path == "/.well-known/did.json" and not parts.query and not parts.fragment
    assert parts.username is None and parts.password is None
    assert parts.netloc.lower() == host.lower()
    local = parts.hostname == "localhost"
    assert parts.scheme == ("http" if local else "https")
    assert parts.port is None or (local and 0 < parts.port < 65536)
