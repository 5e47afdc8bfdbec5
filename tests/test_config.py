from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest

from atproto_video.core.config import (
    ConfigError,
    KubeSettings,
    MetricsSettings,
    PdsSettings,
    Secrets,
    ServiceSettings,
    StorageSettings,
    TranscodeSettings,
    VideoConfig,
)

BASE = {"VIDEO_SERVICE_DID": "did:web:video.example.com"}
SECTIONS = (ServiceSettings, StorageSettings, TranscodeSettings, PdsSettings, KubeSettings,
            MetricsSettings, Secrets)


def test_defaults() -> None:
    cfg = VideoConfig.from_env(BASE)
    assert cfg.service.host == "127.0.0.1" and cfg.service.port == 2585
    assert cfg.service.did_plc_url == "https://plc.directory"
    assert cfg.service.did_refresh_interval_s == 60
    assert cfg.service.data_dir == Path(".data")
    assert cfg.storage_dir == Path(".data/storage")
    assert cfg.service.max_upload_bytes == 300_000_000
    assert cfg.transcode.max_duration_s == 600
    assert cfg.transcode.playable_early
    assert cfg.service.daily_video_limit == 25
    assert cfg.service.daily_byte_limit == 10_000_000_000
    assert cfg.service.executor == "local"
    assert cfg.kube.timeout_s == 3600 + 300
    assert cfg.embedded_db and cfg.database_url.startswith("sqlite:///")
    # No metrics listener unless asked for (the chart asks); loopback like the service.
    assert (cfg.metrics.port, cfg.metrics.host) == (0, "127.0.0.1")


def test_s3_settings() -> None:
    cfg = VideoConfig.from_env({
        **BASE, "VIDEO_STORAGE": "S3", "VIDEO_S3_BUCKET": "videos", "VIDEO_S3_PREFIX": "/v/x/",
        "VIDEO_S3_ENDPOINT": "http://minio:9000/", "VIDEO_S3_FORCE_PATH_STYLE": "true",
        "VIDEO_PLAYBACK": "proxy"})
    s3 = cfg.storage
    assert (s3.type, s3.s3_bucket, s3.s3_prefix) == ("s3", "videos", "v/x/")
    assert s3.s3_endpoint == "http://minio:9000" and s3.s3_force_path_style
    assert s3.playback == "proxy" and s3.s3_retry_s == 120
    assert VideoConfig.from_env(BASE).storage.type == "local"
    assert StorageSettings.from_env({"VIDEO_S3_PREFIX": ""}).s3_prefix == ""


def test_values_are_parsed() -> None:
    cfg = VideoConfig.from_env(
        {
            **BASE,
            "VIDEO_PORT": "8080",
            "VIDEO_DATA_DIR": "/srv/video",
            "VIDEO_DB_URL": "postgres://u:hunter2pw@db:5432/video",
            "VIDEO_PROCESSING_CONCURRENCY": "4",
            "VIDEO_DAILY_BYTE_LIMIT": "1_000",
            "VIDEO_WORKER_NODE_SELECTOR": "pool=video",
            "VIDEO_K8S_JOB_TIMEOUT_S": "90",
            "VIDEO_PLAYABLE_EARLY": "0",
        }
    )
    assert cfg.service.port == 8080
    assert cfg.storage_dir == Path("/srv/video/storage")
    assert cfg.database_url == "postgresql+psycopg://u:hunter2pw@db:5432/video"
    assert cfg.service.processing_concurrency == 4
    assert cfg.service.daily_byte_limit == 1000
    assert cfg.kube.worker_node_selector == {"pool": "video"}
    assert cfg.kube.timeout_s == 90
    assert not cfg.transcode.playable_early


def test_secrets_stay_out_of_logs_and_reprs() -> None:
    key = "A" * 43 + "="
    cfg = VideoConfig.from_env(
        {**BASE, "VIDEO_DB_URL": "postgres://u:hunter2pw@db/video", "VIDEO_TOKEN_KEY": key})
    assert cfg.secrets.token_key is not None and cfg.secrets.db_url
    for text in (str(cfg.describe()), repr(cfg), repr(cfg.secrets)):
        assert "hunter2pw" not in text and key not in text
    assert cfg.describe()["secrets"] == {"token_key": "<set>",
                                         "db_url": "postgres://u:***@db/video"}


def test_every_setting_is_declared_once_with_its_variable() -> None:
    names = [f.metadata["env"] for section in SECTIONS for f in fields(section)]
    assert all(name.startswith("VIDEO_") for name in names)
    assert len(names) == len(set(names)), "a variable read by two settings"
    # No catch-all: the config object is exactly its sections.
    assert [f.name for f in fields(VideoConfig)] == [
        "service", "storage", "transcode", "pds", "kube", "metrics", "secrets"]
    # Unknown VIDEO_* variables are ignored, not kept anywhere.
    cfg = VideoConfig.from_env({**BASE, "VIDEO_SOMETHING_ELSE": "x"})
    assert "VIDEO_SOMETHING_ELSE" not in repr(cfg) + str(cfg.describe())


def test_the_worker_reads_the_transcode_section_alone() -> None:
    # The worker container has no service DID and no database: only this section.
    env = {"VIDEO_MAX_FPS": "30", "VIDEO_TRANSCODE_THREADS": "2"}
    settings = TranscodeSettings.from_env(env)
    assert (settings.max_fps, settings.threads, settings.max_duration_s) == (30, 2, 600)
    assert TranscodeSettings.from_env(settings.to_env()) == settings
    with pytest.raises(ConfigError, match=r"^VIDEO_MAX_FPS: "):
        TranscodeSettings.from_env({"VIDEO_MAX_FPS": "999"})
    # The service reads the same variables with the same rules.
    assert VideoConfig.from_env({**BASE, **env}).transcode == settings


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({}, "VIDEO_SERVICE_DID"),
        ({**BASE, "VIDEO_PORT": "http"}, "VIDEO_PORT"),
        ({**BASE, "VIDEO_PORT": "70000"}, "VIDEO_PORT"),
        ({**BASE, "VIDEO_MAX_UPLOAD_BYTES": "-1"}, "VIDEO_MAX_UPLOAD_BYTES"),
        ({**BASE, "VIDEO_DB_URL": "mysql://x"}, "VIDEO_DB_URL"),
        ({**BASE, "VIDEO_DID_PLC_URL": "plc.directory"}, "VIDEO_DID_PLC_URL"),
        ({**BASE, "VIDEO_DID_REFRESH_INTERVAL_S": "-1"}, "VIDEO_DID_REFRESH_INTERVAL_S"),
        ({**BASE, "VIDEO_DID_REFRESH_INTERVAL_S": "never"}, "VIDEO_DID_REFRESH_INTERVAL_S"),
        ({**BASE, "VIDEO_EXECUTOR": "lambda"}, "VIDEO_EXECUTOR"),
        ({"VIDEO_SERVICE_DID": "video.example.com"}, "VIDEO_SERVICE_DID"),
        ({**BASE, "VIDEO_TOKEN_KEY": "c2hvcnQ="}, "VIDEO_TOKEN_KEY"),
        ({**BASE, "VIDEO_WORKER_STORAGE_HOSTPATH": "relative"}, "VIDEO_WORKER_STORAGE_HOSTPATH"),
        ({**BASE, "VIDEO_MAX_FPS": "0"}, "VIDEO_MAX_FPS"),
        ({**BASE, "VIDEO_STORAGE": "gcs"}, "VIDEO_STORAGE"),
        ({**BASE, "VIDEO_STORAGE": "s3"}, "VIDEO_S3_BUCKET"),
        ({**BASE, "VIDEO_S3_BUCKET": "Not_A_Bucket"}, "VIDEO_S3_BUCKET"),
        ({**BASE, "VIDEO_S3_PREFIX": "a/../b"}, "VIDEO_S3_PREFIX"),
        ({**BASE, "VIDEO_S3_ENDPOINT": "minio:9000"}, "VIDEO_S3_ENDPOINT"),
        ({**BASE, "VIDEO_PLAYBACK": "stream"}, "VIDEO_PLAYBACK"),
        ({**BASE, "VIDEO_S3_CREDENTIALS_SECRET": "Bad_Name"}, "VIDEO_S3_CREDENTIALS_SECRET"),
        ({**BASE, "VIDEO_METRICS_PORT": "70000"}, "VIDEO_METRICS_PORT"),
        ({**BASE, "VIDEO_METRICS_PORT": "metrics"}, "VIDEO_METRICS_PORT"),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError) as err:
        VideoConfig.from_env(env)
    message = str(err.value)
    assert message.startswith(variable)
    assert "\n" not in message


def test_metrics_settings() -> None:
    env = {**BASE, "VIDEO_METRICS_PORT": "9585", "VIDEO_METRICS_HOST": "0.0.0.0"}
    cfg = VideoConfig.from_env(env)
    assert (cfg.metrics.port, cfg.metrics.host) == (9585, "0.0.0.0")
    assert MetricsSettings.from_env(cfg.metrics.to_env()) == cfg.metrics
    assert cfg.describe()["metrics"] == {"port": "9585", "host": "0.0.0.0"}
