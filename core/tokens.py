"""Upload tokens at rest: the user's forwarded service-auth JWT, AES-256-GCM encrypted.

A Bluesky-mode job keeps the uploader's token until the processed MP4 is on their PDS. The row
stores only ``version || nonce || ciphertext+tag``, with the job id as associated data, so a
ciphertext copied onto another job does not decrypt. The key comes from ``VIDEO_TOKEN_KEY``;
embedded mode without it generates one file under the data dir (0600), cluster mode must
configure it (every API replica and the operator need the same key).
"""

from __future__ import annotations

import contextlib
import functools
import os
import secrets
import stat
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from atproto_video.core.config import ConfigError, VideoConfig

KEY_FILE_NAME = "token.key"
_VERSION = b"\x01"
_NONCE_LEN = 12


class TokenDecryptError(Exception):
    """The stored token does not decrypt with this key (key changed, or data altered)."""


class TokenCipher:
    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError("the token key must be 32 bytes")
        self._aead = AESGCM(key)

    def __repr__(self) -> str:
        return "TokenCipher(<key>)"

    def encrypt(self, token: str, *, job_id: str) -> bytes:
        nonce = secrets.token_bytes(_NONCE_LEN)
        return _VERSION + nonce + self._aead.encrypt(nonce, token.encode(), job_id.encode())

    def decrypt(self, data: bytes, *, job_id: str) -> str:
        if len(data) < 1 + _NONCE_LEN + 16 or data[:1] != _VERSION:
            raise TokenDecryptError("not an encrypted upload token")
        nonce, body = data[1 : 1 + _NONCE_LEN], data[1 + _NONCE_LEN :]
        try:
            return self._aead.decrypt(nonce, body, job_id.encode()).decode()
        except (InvalidTag, UnicodeDecodeError):
            raise TokenDecryptError(
                "the stored upload token does not decrypt (was VIDEO_TOKEN_KEY changed?)"
            ) from None


def token_key(cfg: VideoConfig) -> bytes:
    """The configured key, or (embedded mode only) the persisted generated one."""
    return _key(cfg.secrets.token_key, cfg.service.data_dir, cfg.service.executor)


def _key(configured: bytes | None, data_dir: Path, executor: str) -> bytes:
    if configured is not None:
        return configured
    if executor == "kubernetes":
        raise ConfigError(
            "VIDEO_TOKEN_KEY is required with VIDEO_EXECUTOR=kubernetes "
            "(base64 of 32 random bytes, e.g. `openssl rand -base64 32`, from a Secret)"
        )
    return load_or_create_key_file(data_dir / KEY_FILE_NAME)


def load_or_create_key_file(path: Path) -> bytes:
    """Read the key file, creating it (0600, never overwritten) on first use.

    The key is written to a private temporary file and hard-linked into place, so concurrent
    first starts agree on one key and nobody ever reads a half-written file.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(secrets.token_bytes(32))
                f.flush()
                os.fsync(f.fileno())
            # FileExistsError: another process created it first; use theirs.
            with contextlib.suppress(FileExistsError):
                os.link(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
    if path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(f"{path}: the token key file must not be readable by others (chmod 600)")
    key = path.read_bytes()
    if len(key) != 32:
        raise ConfigError(f"{path}: expected a 32-byte token key, found {len(key)} bytes")
    return key


def cipher_for(cfg: VideoConfig) -> TokenCipher:
    """The process's cipher for this config (the key file is read once). Raises ConfigError."""
    return _cipher(cfg.secrets.token_key, cfg.service.data_dir, cfg.service.executor)


@functools.lru_cache(maxsize=8)
def _cipher(configured: bytes | None, data_dir: Path, executor: str) -> TokenCipher:
    return TokenCipher(_key(configured, data_dir, executor))
