"""DID resolution (did:plc through a PLC directory, did:web) and the keys in DID documents.

Results are cached; ``force=True`` bypasses the cache (key rotation, SPEC section 3), at most
once per DID per ``refresh_interval``. An unreachable resolver raises
:class:`ResolverUnavailable` (a 503), never an auth failure. Error messages reach clients, so
they never carry what an upstream answered (status codes, addresses): that goes to the log.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote

import httpx
from cryptography.hazmat.primitives.asymmetric import ec

from atproto_video.core.netguard import (
    PinnedUrl,
    Resolver,
    UnsafeEndpoint,
    pin_endpoint,
    system_resolve,
)

log = logging.getLogger(__name__)

# Largest DID document read (real ones are a few KiB); a hostile host gets no further.
MAX_DOCUMENT_BYTES = 64 * 1024
# Shortest time between two fetches of one DID when a bad signature forces a re-resolution.
DEFAULT_REFRESH_INTERVAL_S = 60.0
_MAX_ENTRIES = 50_000

# An uncompressed point with a multicodec prefix is 67 bytes, about 92 base58 characters.
MAX_MULTIBASE_CHARS = 128

# A did:web host after percent-decoding: DNS labels, and a port (allowed for localhost only).
_WEB_HOST = re.compile(
    r"(?P<host>[A-Za-z0-9_-]{1,63}(?:\.[A-Za-z0-9_-]{1,63})*)(?::(?P<port>[0-9]{1,5}))?"
)

_B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_B58_INDEX = {c: i for i, c in enumerate(_B58)}

MULTICODEC_SECP256K1 = bytes([0xE7, 0x01])
MULTICODEC_P256 = bytes([0x80, 0x24])
LEGACY_TYPES = {
    "EcdsaSecp256k1VerificationKey2019": "ES256K",
    "EcdsaSecp256r1VerificationKey2019": "ES256",
}
_CURVES: dict[str, ec.EllipticCurve] = {"ES256K": ec.SECP256K1(), "ES256": ec.SECP256R1()}


class DidError(Exception):
    """The DID or its document is unusable (not found, malformed, no key)."""


class ResolverUnavailable(Exception):
    """The resolver could not be reached or answered with a server error: try later."""


@dataclass(frozen=True)
class SigningKey:
    alg: str  # "ES256K" or "ES256"
    key: ec.EllipticCurvePublicKey


@dataclass(frozen=True)
class DidDocument:
    did: str
    signing_key: SigningKey | None
    pds_endpoint: str | None
    raw: dict[str, Any]


def b58decode(text: str) -> bytes:
    num = 0
    for ch in text:
        try:
            num = num * 58 + _B58_INDEX[ch]
        except KeyError:
            raise ValueError("invalid base58 character") from None
    body = num.to_bytes((num.bit_length() + 7) // 8, "big") if num else b""
    pad = len(text) - len(text.lstrip("1"))
    return b"\x00" * pad + body


def b58encode(data: bytes) -> str:
    num = int.from_bytes(data, "big")
    out = ""
    while num:
        num, rem = divmod(num, 58)
        out = _B58[rem] + out
    pad = len(data) - len(data.lstrip(b"\x00"))
    return "1" * pad + out


def parse_multikey(multibase: str) -> SigningKey:
    """``z`` + base58btc(multicodec varint + compressed point)."""
    raw = _multibase_bytes(multibase)
    if raw.startswith(MULTICODEC_SECP256K1):
        alg = "ES256K"
    elif raw.startswith(MULTICODEC_P256):
        alg = "ES256"
    else:
        raise DidError("unsupported key type in publicKeyMultibase")
    return _load_point(alg, raw[2:])


def _multibase_bytes(multibase: str) -> bytes:
    """The bytes of a ``z`` (base58btc) key; bounded, since base58 decoding is quadratic."""
    if not multibase.startswith("z"):
        raise DidError("publicKeyMultibase must be base58btc ('z')")
    if len(multibase) > MAX_MULTIBASE_CHARS:
        raise DidError("publicKeyMultibase is too long for a public key")
    try:
        return b58decode(multibase[1:])
    except ValueError:
        raise DidError("publicKeyMultibase is not valid base58btc") from None


def _load_point(alg: str, point: bytes) -> SigningKey:
    try:
        return SigningKey(alg, ec.EllipticCurvePublicKey.from_encoded_point(_CURVES[alg], point))
    except ValueError as exc:
        raise DidError(f"invalid public key: {exc}") from None


def parse_document(did: str, doc: Any) -> DidDocument:
    """The #atproto key and #atproto_pds endpoint of a document its host wrote: any JSON."""
    if not isinstance(doc, dict) or doc.get("id") != did:
        raise DidError("DID document id does not match the DID")
    key: SigningKey | None = None
    for vm in _entries(doc, "verificationMethod"):
        if not isinstance(vm, dict):
            continue
        if vm.get("id") not in ("#atproto", f"{did}#atproto"):
            continue
        mb = vm.get("publicKeyMultibase")
        if not isinstance(mb, str):
            continue
        vtype = vm.get("type")
        if vtype == "Multikey":
            key = parse_multikey(mb)
        elif isinstance(vtype, str) and vtype in LEGACY_TYPES and mb.startswith("z"):
            key = _load_point(LEGACY_TYPES[vtype], _multibase_bytes(mb))
        break
    pds: str | None = None
    for svc in _entries(doc, "service"):
        if not isinstance(svc, dict):
            continue
        if (
            svc.get("id") in ("#atproto_pds", f"{did}#atproto_pds")
            and svc.get("type") == "AtprotoPersonalDataServer"
        ):
            endpoint = svc.get("serviceEndpoint")
            if isinstance(endpoint, str):
                pds = endpoint.rstrip("/")
            break
    return DidDocument(did=did, signing_key=key, pds_endpoint=pds, raw=doc)


def _entries(doc: dict[str, Any], name: str) -> list[Any]:
    """A list property of the document; absent or null is empty, anything else malformed."""
    value = doc.get(name)
    if value is None:
        return []
    if not isinstance(value, list):
        raise DidError(f"DID document {name} is not a list")
    return value


def did_web_url(did: str) -> str:
    """did:web:<host> -> https://<host>/.well-known/did.json (http and ports: localhost only)."""
    ident = did.removeprefix("did:web:")
    if not ident or ":" in ident:
        raise DidError("did:web with a path is not supported")
    # Decoded, the identifier must still be a host name: %40, %2F, %23 or %5B would otherwise
    # move the request to another host ("localhost:1@evil.com"), path or fragment.
    match = _WEB_HOST.fullmatch(unquote(ident))
    if match is None:
        raise DidError("did:web must name a host")
    hostname, port = match.group("host"), match.group("port")
    local = hostname.lower() == "localhost"
    if port is not None and not (local and 0 < int(port) < 65536):
        raise DidError("did:web ports are only allowed for localhost")
    scheme = "http" if local else "https"
    netloc = hostname if port is None else f"{hostname}:{port}"
    return f"{scheme}://{netloc}/.well-known/did.json"


def document_url(did: str, plc_url: str) -> str:
    """Where ``did``'s document lives: the PLC directory for did:plc, the host for did:web."""
    if did.startswith("did:plc:"):
        return f"{plc_url.rstrip('/')}/{quote(did, safe=':')}"
    if did.startswith("did:web:"):
        return did_web_url(did)
    raise DidError("unsupported DID method")


class DidResolver:
    """Resolves DIDs to documents, bounded in every way a hostile DID could push on.

    One lookup per DID at a time, shared by every request that waits for it (a waiter that is
    cancelled stops waiting; the lookup carries on for the others). ``force=True`` (a signature
    that did not verify: key rotation) fetches again only when the DID was last fetched at least
    ``refresh_interval`` seconds ago; otherwise it is answered like a normal lookup, so bad
    signatures cannot buy an upstream fetch per request. A document is read up to
    :data:`MAX_DOCUMENT_BYTES` within ``timeout`` seconds in all, and a did:web request goes to
    the address that passed the SSRF check (:func:`~atproto_video.core.netguard.pin_endpoint`).
    """

    def __init__(
        self,
        plc_url: str,
        *,
        timeout: float = 3.0,
        cache_ttl: float = 600.0,
        refresh_interval: float = DEFAULT_REFRESH_INTERVAL_S,
        allow_private: bool = False,
        client: httpx.AsyncClient | None = None,
        resolve: Resolver = system_resolve,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.plc_url = plc_url.rstrip("/")
        self.timeout = timeout
        self.cache_ttl = cache_ttl
        self.refresh_interval = refresh_interval
        self.allow_private = allow_private
        self._client = client or httpx.AsyncClient(
            timeout=timeout, follow_redirects=False, trust_env=False
        )
        self._resolve_host = resolve
        self._clock = clock
        # did -> (when its fetch started, document)
        self._cache: dict[str, tuple[float, DidDocument]] = {}
        # did -> when a fetch of it last started, successful or not (oldest first)
        self._last_fetch: dict[str, float] = {}
        self._inflight: dict[str, asyncio.Task[DidDocument]] = {}

    async def aclose(self) -> None:
        for task in list(self._inflight.values()):
            task.cancel()
        await self._client.aclose()

    async def resolve(self, did: str, *, force: bool = False) -> DidDocument:
        now = self._clock()
        if force and now - self._last_fetch.get(did, -math.inf) < self.refresh_interval:
            force = False  # fetched moments ago: a bad signature does not buy another fetch
        if force:
            task = self._start(did)
        else:
            hit = self._cache.get(did)
            if hit and now - hit[0] < self.cache_ttl:
                return hit[1]
            task = self._inflight.get(did) or self._start(did)
        # Cancelling this caller cancels its wait, never the lookup other callers share.
        return await asyncio.shield(task)

    def _start(self, did: str) -> asyncio.Task[DidDocument]:
        started = self._clock()
        self._last_fetch.pop(did, None)
        self._last_fetch[did] = started
        if len(self._last_fetch) > _MAX_ENTRIES:
            self._last_fetch.pop(next(iter(self._last_fetch)))
        task = asyncio.get_running_loop().create_task(self._fetch_and_keep(did, started))
        self._inflight[did] = task
        task.add_done_callback(lambda done: self._finished(did, done))
        return task

    def _finished(self, did: str, task: asyncio.Task[DidDocument]) -> None:
        if self._inflight.get(did) is task:
            del self._inflight[did]
        if not task.cancelled():
            task.exception()  # retrieved: every waiter re-raises it itself

    async def _fetch_and_keep(self, did: str, started: float) -> DidDocument:
        doc = await self._fetch(did)
        hit = self._cache.get(did)
        if hit is None or hit[0] <= started:  # an older lookup never replaces a newer one
            self._cache.pop(did, None)
            self._cache[did] = (started, doc)
            if len(self._cache) > _MAX_ENTRIES:
                self._cache.pop(next(iter(self._cache)))
        return doc

    async def _fetch(self, did: str) -> DidDocument:
        try:
            async with asyncio.timeout(self.timeout):
                body = await self._fetch_body(did)
        except TimeoutError:
            log.warning("DID resolution timed out", extra={"did": did})
            raise ResolverUnavailable("the DID resolver did not answer in time") from None
        try:
            doc = json.loads(body)
        except (ValueError, RecursionError):
            raise DidError("DID document is not JSON") from None
        return parse_document(did, doc)

    async def _fetch_body(self, did: str) -> bytes:
        url = document_url(did, self.plc_url)
        if did.startswith("did:plc:"):
            target = PinnedUrl(url, None, None)
        else:
            try:
                target = await pin_endpoint(
                    url, allow_private=self.allow_private, resolve=self._resolve_host
                )
            except UnsafeEndpoint as exc:
                log.info("did:web host refused: %s", exc, extra={"did": did})
                raise DidError("the did:web host is not allowed") from None
        # identity: the cap below counts the bytes on the wire, not what they inflate to.
        headers = {"accept": "application/json", "accept-encoding": "identity"}
        try:
            async with self._client.stream(
                "GET", target.url, headers={**headers, **target.headers()},
                extensions=target.extensions(),
            ) as resp:
                status = resp.status_code
                if status == 200:
                    return await _read_document(resp, did)
        except httpx.HTTPError as exc:
            log.warning("DID resolver unreachable: %s", type(exc).__name__, extra={"did": did})
            raise ResolverUnavailable("the DID resolver could not be reached") from None
        if status in (404, 410):
            raise DidError("DID not found")
        # The upstream status goes to the log, not to the client.
        if status >= 500:
            log.warning("DID resolver failed", extra={"did": did, "status": status})
            raise ResolverUnavailable("the DID resolver is unavailable")
        log.info("DID resolver refused", extra={"did": did, "status": status})
        raise DidError("the DID document could not be fetched")


async def _read_document(resp: httpx.Response, did: str) -> bytes:
    """At most MAX_DOCUMENT_BYTES of an unencoded body; a hostile host gets no further."""
    encoding = resp.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        log.info("DID document compressed (%s)", encoding[:40], extra={"did": did})
        raise DidError("the DID document must not be compressed")
    declared = resp.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_DOCUMENT_BYTES:
        raise DidError("the DID document is too large")
    body = bytearray()
    async for chunk in resp.aiter_bytes():  # identity only (above): the bytes as sent
        body += chunk
        if len(body) > MAX_DOCUMENT_BYTES:
            raise DidError("the DID document is too large")
    return bytes(body)
