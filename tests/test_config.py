from __future__ import annotations

from pathlib import Path

import pytest

from atproto_video.config import ConfigError, VideoConfig

BASE = {"VIDEO_SERVICE_DID": "did:web:video.example.com"}


def test_defaults() -> None:
    cfg = VideoConfig.from_env(BASE)
    assert cfg.host == "127.0.0.1" and cfg.port == 2585
    assert cfg.did_plc_url == "https://plc.directory"
    assert cfg.data_dir == Path(".data")
    assert cfg.storage_dir == Path(".data/storage")
    assert cfg.max_upload_bytes == 300_000_000
    assert cfg.max_duration_s == 600
    assert cfg.daily_video_limit == 25
    assert cfg.daily_byte_limit == 10_000_000_000
    assert cfg.executor == "local"
    assert cfg.embedded_db and cfg.database_url.startswith("sqlite:///")


def test_values_are_parsed() -> None:
    cfg = VideoConfig.from_env(
        {
            **BASE,
            "VIDEO_PORT": "8080",
            "VIDEO_DATA_DIR": "/srv/video",
            "VIDEO_DB_URL": "postgres://u:secret@db:5432/video",
            "VIDEO_PROCESSING_CONCURRENCY": "4",
            "VIDEO_DAILY_BYTE_LIMIT": "1_000",
        }
    )
    assert cfg.port == 8080
    assert cfg.storage_dir == Path("/srv/video/storage")
    assert cfg.database_url == "postgresql+psycopg://u:secret@db:5432/video"
    assert cfg.processing_concurrency == 4
    assert cfg.daily_byte_limit == 1000
    assert "secret" not in str(cfg.describe())


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({}, "VIDEO_SERVICE_DID"),
        ({**BASE, "VIDEO_PORT": "http"}, "VIDEO_PORT"),
        ({**BASE, "VIDEO_PORT": "70000"}, "VIDEO_PORT"),
        ({**BASE, "VIDEO_MAX_UPLOAD_BYTES": "-1"}, "VIDEO_MAX_UPLOAD_BYTES"),
        ({**BASE, "VIDEO_DB_URL": "mysql://x"}, "VIDEO_DB_URL"),
        ({**BASE, "VIDEO_DID_PLC_URL": "plc.directory"}, "VIDEO_DID_PLC_URL"),
        ({**BASE, "VIDEO_EXECUTOR": "lambda"}, "VIDEO_EXECUTOR"),
        ({"VIDEO_SERVICE_DID": "video.example.com"}, "VIDEO_SERVICE_DID"),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError) as err:
        VideoConfig.from_env(env)
    message = str(err.value)
    assert message.startswith(variable)
    assert "\n" not in message
