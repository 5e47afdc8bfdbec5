"""Test identities: real EC keys, DID documents in every key form, and signed service JWTs.

Tokens are signed by PyJWT. The reference signer (@atproto/crypto) always emits low-S
signatures, OpenSSL emits either; :class:`SForm` pins the form so a test can sign low-S like
the reference or high-S (which verifiers must accept) on purpose, or a DER signature (which
they must refuse). Its algorithms do not check the key's curve, so a test can also sign with
a header ``alg`` that does not match the key.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import jwt
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from atproto_video.api.identity import MULTICODEC_P256, MULTICODEC_SECP256K1, b58encode

Alg = Literal["ES256K", "ES256"]
Form = Literal["low", "high", "der"]
# Group orders: s and n - s are both valid ECDSA signatures of the same message.
CURVE_ORDER = {
    "secp256k1": 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141,
    "secp256r1": 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551,
}


class SForm(ECAlgorithm):
    """ECDSA over SHA-256 whose signatures come out in one chosen form."""

    def __init__(self, form: Form) -> None:
        super().__init__(ECAlgorithm.SHA256)
        self.form = form

    def sign(self, msg: bytes, key: ec.EllipticCurvePrivateKey) -> bytes:
        if self.form == "der":
            return key.sign(msg, ec.ECDSA(hashes.SHA256()))
        raw = super().sign(msg, key)
        n = CURVE_ORDER[key.curve.name]
        s = int.from_bytes(raw[32:], "big")
        s = min(s, n - s) if self.form == "low" else max(s, n - s)
        return raw[:32] + s.to_bytes(32, "big")


def signer(form: Form) -> jwt.PyJWS:
    jws = jwt.PyJWS(algorithms=[])
    for alg in ("ES256K", "ES256"):
        jws.register_algorithm(alg, SForm(form))
    return jws


_SIGNERS = {form: signer(form) for form in ("low", "high", "der")}


def signature_s(token: str) -> int:
    """The s half of a token's raw r||s signature (to show which form a test used)."""
    sig = jwt.PyJWS().decode_complete(token, options={"verify_signature": False})["signature"]
    assert len(sig) == 64
    return int.from_bytes(sig[32:], "big")


def is_high_s(token: str, alg: Alg) -> bool:
    n = CURVE_ORDER["secp256k1" if alg == "ES256K" else "secp256r1"]
    return signature_s(token) > n // 2


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
        der: bool = False,
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
        form: Form = "der" if der else "high" if high_s else "low"
        return _SIGNERS[form].encode(
            json.dumps(payload).encode(), self.key, algorithm=self.alg, headers=head
        )


def new_plc_did() -> str:
    alphabet = "abcdefghijklmnopqrstuvwxyz234567"
    return "did:plc:" + "".join(secrets.choice(alphabet) for _ in range(24))


def fragments(token: str, size: int = 24) -> list[str]:
    """Overlapping pieces of a token: a leak check that finds any part of it, not just all."""
    return [token[i : i + size] for i in range(0, max(1, len(token) - size + 1), size // 2)]
