"""Blob references (SPEC section 4): CIDv1, raw codec, sha-256, base32 multibase."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path
from typing import Any

_CID_PREFIX = bytes([0x01, 0x55, 0x12, 0x20])  # CIDv1, raw, sha2-256, 32 bytes


def cid_for_digest(sha256_digest: bytes) -> str:
    if len(sha256_digest) != 32:
        raise ValueError("expected a 32-byte sha-256 digest")
    return "b" + base64.b32encode(_CID_PREFIX + sha256_digest).decode().lower().rstrip("=")


def cid_for_bytes(data: bytes) -> str:
    return cid_for_digest(hashlib.sha256(data).digest())


def file_sha256(path: Path, chunk: int = 1 << 20) -> tuple[bytes, int]:
    h = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while block := f.read(chunk):
            h.update(block)
            size += len(block)
    return h.digest(), size


def blob_ref(cid: str, mime_type: str, size: int) -> dict[str, Any]:
    return {"$type": "blob", "ref": {"$link": cid}, "mimeType": mime_type, "size": size}


def blob_for_file(path: Path, mime_type: str = "video/mp4") -> dict[str, Any]:
    digest, size = file_sha256(path)
    return blob_ref(cid_for_digest(digest), mime_type, size)


def blob_cid(blob: dict[str, Any]) -> str:
    ref = blob.get("ref")
    if isinstance(ref, dict) and isinstance(ref.get("$link"), str):
        return str(ref["$link"])
    raise ValueError("not a blob ref")
