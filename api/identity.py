"""DID resolution (did:plc through a PLC directory, did:web) and the keys in DID documents.

Results are cached; ``force=True`` bypasses the cache (key rotation, SPEC section 3). An
unreachable resolver raises :class:`ResolverUnavailable` (a 503), never an auth failure.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote

import httpx
from cryptography.hazmat.primitives.asymmetric import ec

from atproto_video.core.netguard import UnsafeEndpoint, check_endpoint

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
    if not multibase.startswith("z"):
        raise DidError("publicKeyMultibase must be base58btc ('z')")
    raw = b58decode(multibase[1:])
    if raw.startswith(MULTICODEC_SECP256K1):
        alg = "ES256K"
    elif raw.startswith(MULTICODEC_P256):
        alg = "ES256"
    else:
        raise DidError("unsupported key type in publicKeyMultibase")
    return _load_point(alg, raw[2:])


def _load_point(alg: str, point: bytes) -> SigningKey:
    try:
        return SigningKey(alg, ec.EllipticCurvePublicKey.from_encoded_point(_CURVES[alg], point))
    except ValueError as exc:
        raise DidError(f"invalid public key: {exc}") from None


def parse_document(did: str, doc: Any) -> DidDocument:
    if not isinstance(doc, dict) or doc.get("id") != did:
        raise DidError("DID document id does not match the DID")
    key: SigningKey | None = None
    for vm in doc.get("verificationMethod") or []:
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
        elif vtype in LEGACY_TYPES and mb.startswith("z"):
            key = _load_point(LEGACY_TYPES[vtype], b58decode(mb[1:]))
        break
    pds: str | None = None
    for svc in doc.get("service") or []:
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


def did_web_url(did: str) -> str:
    """did:web:<host> -> https://<host>/.well-known/did.json (http and ports: localhost only)."""
    ident = did.removeprefix("did:web:")
    if not ident or ":" in ident:
        raise DidError("did:web with a path is not supported")
    host = unquote(ident)
    hostname = host.split(":", 1)[0]
    scheme = "http" if hostname == "localhost" else "https"
    if ":" in host and hostname != "localhost":
        raise DidError("did:web ports are only allowed for localhost")
    return f"{scheme}://{host}/.well-known/did.json"


class DidResolver:
    def __init__(
        self,
        plc_url: str,
        *,
        timeout: float = 3.0,
        cache_ttl: float = 600.0,
        allow_private: bool = False,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.plc_url = plc_url.rstrip("/")
        self.cache_ttl = cache_ttl
        self.allow_private = allow_private
        self._client = client or httpx.AsyncClient(
            timeout=timeout, follow_redirects=False, trust_env=False
        )
        self._cache: dict[str, tuple[float, DidDocument]] = {}
        self._inflight: dict[str, asyncio.Future[DidDocument]] = {}

    async def aclose(self) -> None:
        await self._client.aclose()

    async def resolve(self, did: str, *, force: bool = False) -> DidDocument:
        now = time.monotonic()
        if not force:
            hit = self._cache.get(did)
            if hit and now - hit[0] < self.cache_ttl:
                return hit[1]
            pending = self._inflight.get(did)
            if pending is not None:
                return await asyncio.shield(pending)
        fut: asyncio.Future[DidDocument] = asyncio.get_running_loop().create_future()
        self._inflight[did] = fut
        try:
            doc = await self._fetch(did)
        except BaseException as exc:
            fut.set_exception(exc)
            fut.exception()  # mark retrieved: waiters re-raise it themselves
            raise
        finally:
            self._inflight.pop(did, None)
        fut.set_result(doc)
        self._cache[did] = (time.monotonic(), doc)
        if len(self._cache) > 50_000:
            self._cache.pop(next(iter(self._cache)))
        return doc

    async def _fetch(self, did: str) -> DidDocument:
        if did.startswith("did:plc:"):
            url = f"{self.plc_url}/{quote(did, safe=':')}"
        elif did.startswith("did:web:"):
            url = did_web_url(did)
            try:
                await check_endpoint(url, allow_private=self.allow_private)
            except UnsafeEndpoint as exc:
                raise DidError(str(exc)) from None
        else:
            raise DidError("unsupported DID method")
        try:
            resp = await self._client.get(url, headers={"accept": "application/json"})
        except httpx.HTTPError as exc:
            raise ResolverUnavailable(f"DID resolution failed: {type(exc).__name__}") from None
        if resp.status_code == 404 or resp.status_code == 410:
            raise DidError("DID not found")
        if resp.status_code >= 500:
            raise ResolverUnavailable(f"DID resolver answered {resp.status_code}")
        if resp.status_code != 200:
            raise DidError(f"DID resolver answered {resp.status_code}")
        try:
            body = resp.json()
        except ValueError:
            raise DidError("DID document is not JSON") from None
        return parse_document(did, body)
