"""Test identities: real EC keys, DID documents in every key form, and signed service JWTs."""

from __future__ import annotations

import base64
import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from atproto_video.api.identity import MULTICODEC_P256, MULTICODEC_SECP256K1, b58encode

Alg = Literal["ES256K", "ES256"]
_N = {
    "ES256K": 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141,
    "ES256": 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551,
}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class Identity:
    did: str
    alg: Alg = "ES256K"
    key_form: Literal["multikey", "legacy"] = "multikey"
    pds_endpoint: str | None = None
    key: ec.EllipticCurvePrivateKey = field(init=False)

    def __post_init__(self) -> None:
        self.key = ec.generate_private_key(
            ec.SECP256K1() if self.alg == "ES256K" else ec.SECP256R1()
        )

    def rotate(self) -> None:
        self.__post_init__()

    def public_multibase(self) -> str:
        pub = self.key.public_key()
        if self.key_form == "legacy":
            point = pub.public_bytes(
                serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
            )
            return "z" + b58encode(point)
        point = pub.public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.CompressedPoint
        )
        prefix = MULTICODEC_SECP256K1 if self.alg == "ES256K" else MULTICODEC_P256
        return "z" + b58encode(prefix + point)

    def document(self) -> dict[str, Any]:
        if self.key_form == "legacy":
            vm = {
                "id": "#atproto",
                "type": "EcdsaSecp256k1VerificationKey2019"
                if self.alg == "ES256K"
                else "EcdsaSecp256r1VerificationKey2019",
                "controller": self.did,
                "publicKeyMultibase": self.public_multibase(),
            }
        else:
            vm = {
                "id": f"{self.did}#atproto",
                "type": "Multikey",
                "controller": self.did,
                "publicKeyMultibase": self.public_multibase(),
            }
        doc: dict[str, Any] = {
            "@context": ["https://www.w3.org/ns/did/v1", "https://w3id.org/security/multikey/v1"],
            "id": self.did,
            "alsoKnownAs": ["at://test.example"],
            "verificationMethod": [vm],
        }
        if self.pds_endpoint:
            doc["service"] = [
                {
                    "id": "#atproto_pds",
                    "type": "AtprotoPersonalDataServer",
                    "serviceEndpoint": self.pds_endpoint,
                }
            ]
        return doc

    def token(
        self,
        aud: str,
        lxm: str | None,
        *,
        exp: float | None = None,
        iss: str | None = None,
        header: dict[str, Any] | None = None,
        high_s: bool = False,
        extra: dict[str, Any] | None = None,
    ) -> str:
        now = int(time.time())
        payload: dict[str, Any] = {
            "iat": now,
            "iss": iss or self.did,
            "aud": aud,
            "exp": exp if exp is not None else now + 60,
            "jti": secrets.token_hex(16),
        }
        if lxm is not None:
            payload["lxm"] = lxm
        payload.update(extra or {})
        head = header or {"typ": "JWT", "alg": self.alg}
        signing_input = (
            b64url(json.dumps(head).encode()) + "." + b64url(json.dumps(payload).encode())
        )
        der = self.key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        n = _N[self.alg]
        s = min(s, n - s)  # low-S, like the reference signer
        if high_s:
            s = n - s
        sig = r.to_bytes(32, "big") + s.to_bytes(32, "big")
        return signing_input + "." + b64url(sig)


def new_plc_did() -> str:
    alphabet = "abcdefghijklmnopqrstuvwxyz234567"
    return "did:plc:" + "".join(secrets.choice(alphabet) for _ in range(24))
