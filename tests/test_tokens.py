"""Upload tokens at rest: AES-GCM bound to the job, and where the key comes from."""

from __future__ import annotations

import base64
import os
import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from atproto_video.core.config import ConfigError, ServiceSettings, VideoConfig
from atproto_video.core.tokens import (
    TokenCipher,
    TokenDecryptError,
    load_or_create_key_file,
    token_key,
)

TOKEN = jwt.encode(
    {"iss": "did:plc:abc", "aud": "did:web:localhost", "exp": 2_000_000_000},
    ec.generate_private_key(ec.SECP256K1()),
    algorithm="ES256K",
)


def test_round_trip_and_nothing_readable_at_rest() -> None:
    cipher = TokenCipher(os.urandom(32))
    a = cipher.encrypt(TOKEN, job_id="job-a")
    b = cipher.encrypt(TOKEN, job_id="job-a")
    assert a != b  # fresh nonce each time
    assert TOKEN.encode() not in a and b"eyJ" not in a
    assert cipher.decrypt(a, job_id="job-a") == TOKEN
    assert "key" in repr(cipher) and "TokenCipher" in repr(cipher)


def test_ciphertext_is_bound_to_its_job_and_key() -> None:
    cipher = TokenCipher(os.urandom(32))
    data = cipher.encrypt(TOKEN, job_id="job-a")
    with pytest.raises(TokenDecryptError):
        cipher.decrypt(data, job_id="job-b")  # copied onto another row
    with pytest.raises(TokenDecryptError, match="VIDEO_TOKEN_KEY"):
        TokenCipher(os.urandom(32)).decrypt(data, job_id="job-a")
    tampered = bytearray(data)
    tampered[-1] ^= 1
    with pytest.raises(TokenDecryptError):
        cipher.decrypt(bytes(tampered), job_id="job-a")
    with pytest.raises(TokenDecryptError):
        cipher.decrypt(b"\x01short", job_id="job-a")


def test_key_from_env(tmp_path: Path) -> None:
    key = os.urandom(32)
    env = {"VIDEO_SERVICE_DID": "did:web:v.example", "VIDEO_DATA_DIR": str(tmp_path)}
    cfg = VideoConfig.from_env({**env, "VIDEO_TOKEN_KEY": base64.b64encode(key).decode()})
    assert token_key(cfg) == key
    assert not (tmp_path / "token.key").exists()
    assert base64.b64encode(key).decode() not in repr(cfg)
    assert cfg.describe()["secrets"]["token_key"] == "<set>"
    assert base64.b64encode(key).decode() not in str(cfg.describe())
    urlsafe = base64.urlsafe_b64encode(key).decode().rstrip("=")
    assert VideoConfig.from_env({**env, "VIDEO_TOKEN_KEY": urlsafe}).secrets.token_key == key
    for bad in ("short", base64.b64encode(os.urandom(16)).decode(), "!!!"):
        with pytest.raises(ConfigError, match="VIDEO_TOKEN_KEY"):
            VideoConfig.from_env({**env, "VIDEO_TOKEN_KEY": bad})


def test_embedded_mode_generates_a_private_key_file_once(tmp_path: Path) -> None:
    cfg = VideoConfig(ServiceSettings(did="did:web:v.example", data_dir=tmp_path / "data"))
    first = token_key(cfg)
    path = tmp_path / "data" / "token.key"
    assert len(first) == 32 and path.read_bytes() == first
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert token_key(cfg) == first  # persisted: tokens survive a restart
    assert [p.name for p in path.parent.iterdir()] == ["token.key"]  # no temp files left

    path.chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        token_key(cfg)


def test_concurrent_first_starts_agree_on_one_key(tmp_path: Path) -> None:
    path = tmp_path / "token.key"
    with ThreadPoolExecutor(8) as pool:
        keys = set(pool.map(lambda _: load_or_create_key_file(path), range(32)))
    assert keys == {path.read_bytes()}


def test_cluster_mode_requires_a_configured_key(tmp_path: Path) -> None:
    cfg = VideoConfig(ServiceSettings(did="did:web:v.example", data_dir=tmp_path,
                                      executor="kubernetes"))
    with pytest.raises(ConfigError, match="VIDEO_TOKEN_KEY is required"):
        token_key(cfg)
    assert not (tmp_path / "token.key").exists()
