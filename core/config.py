"""Configuration: flat ``VIDEO_*`` environment variables read once into typed sections.

Each setting is declared once, as a field of its section with its variable, parser and
default (:func:`setting`). :meth:`VideoConfig.from_env` reads every section; the worker
container reads only :class:`TranscodeSettings` with the same code. Secrets (the token key,
the database URL with its password) live in :class:`Secrets`, apart from everything that is
safe to log. A bad value raises :class:`ConfigError` whose message is one line naming the
variable, so a command can stop with exactly that line.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, TypeVar

from atproto_video.core import __version__

T = TypeVar("T")
S = TypeVar("S", bound="_Section")

Executor = Literal["local", "kubernetes"]
Strategy = Literal["single", "per_rendition"]
StorageType = Literal["local", "s3"]
PlaybackMode = Literal["redirect", "proxy"]


class ConfigError(ValueError):
    """A configuration variable is missing or malformed."""


def setting(
    env: str,
    parse: Callable[[str], Any],
    default: Any = None,
    *,
    factory: Callable[[], Any] | None = None,
) -> Any:
    """A field read from ``env`` with ``parse``; the default is written here and only here."""
    meta = {"env": env, "parse": parse}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


class _Section:
    """A frozen dataclass whose fields are :func:`setting` declarations."""

    @classmethod
    def from_env(cls: type[S], env: Mapping[str, str] | None = None) -> S:
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for f in fields(cls):  # type: ignore[arg-type]
            raw = env.get(f.metadata["env"])
            if raw is None or raw.strip() == "":
                continue  # the declared default
            try:
                values[f.name] = f.metadata["parse"](raw.strip())
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"{f.metadata['env']}: {exc}") from None
        return cls(**values)

    def to_env(self) -> dict[str, str]:
        """The variables that reproduce this section (for worker pods)."""
        return {f.metadata["env"]: str(getattr(self, f.name)) for f in fields(self)}  # type: ignore[arg-type]

    def describe(self) -> dict[str, str]:
        return {f.name: str(getattr(self, f.name)) for f in fields(self)}  # type: ignore[arg-type]


# -- parsers -------------------------------------------------------------------------------------


def _int_range(lo: int, hi: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            value = int(raw.replace("_", ""))
        except ValueError:
            raise ValueError(f"expected an integer, got {raw!r}") from None
        if not lo <= value <= hi:
            raise ValueError(f"expected a value between {lo} and {hi}, got {value}")
        return value

    return parse


def _choice(*options: str) -> Callable[[str], Any]:
    def parse(raw: str) -> str:
        value = raw.lower()
        if value not in options:
            raise ValueError(f"expected one of {', '.join(options)}, got {raw!r}")
        return value

    return parse


def _float_range(lo: float, hi: float) -> Callable[[str], float]:
    def parse(raw: str) -> float:
        try:
            value = float(raw)
        except ValueError:
            raise ValueError(f"expected a number, got {raw!r}") from None
        if not lo <= value <= hi:
            raise ValueError(f"expected a value between {lo:g} and {hi:g}, got {value:g}")
        return value

    return parse


def _bool(raw: str) -> bool:
    value = raw.lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true or false, got {raw!r}")


def _did(raw: str) -> str:
    if not raw.startswith("did:"):
        raise ValueError(f"expected a DID (e.g. did:web:video.example.com), got {raw!r}")
    return raw


_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|k|Ki|M|Mi|G|Gi|T|Ti)?$")
_LABEL_KEY = re.compile(r"^([a-z0-9.-]{1,253}/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")


def _dns_label(raw: str) -> str:
    if not _DNS_LABEL.match(raw):
        raise ValueError(f"expected a Kubernetes name (lowercase DNS label), got {raw!r}")
    return raw


def _quantity(raw: str) -> str:
    if not _QUANTITY.match(raw):
        raise ValueError(f"expected a Kubernetes quantity such as 500m, 2 or 512Mi, got {raw!r}")
    return raw


def _pull_policy(raw: str) -> str:
    for option in ("Never", "IfNotPresent", "Always"):
        if raw.lower() == option.lower():
            return option
    raise ValueError(f"expected one of Never, IfNotPresent, Always, got {raw!r}")


def _abs_path(raw: str) -> str:
    if not raw.startswith("/"):
        raise ValueError(f"expected an absolute path, got {raw!r}")
    return raw


def _label_value(raw: str) -> str:
    if not _LABEL_VALUE.match(raw) or len(raw) > 63:
        raise ValueError(f"expected a Kubernetes label value, got {raw!r}")
    return raw


def _names(raw: str) -> tuple[str, ...]:
    """``a,b``: Kubernetes object names (image pull Secrets)."""
    return tuple(_dns_label(name.strip()) for name in raw.split(",") if name.strip())


def _key_values(raw: str) -> dict[str, str]:
    """``key=value,key2=value2`` (node selector labels)."""
    out: dict[str, str] = {}
    for item in raw.split(","):
        key, sep, value = item.strip().partition("=")
        if not sep or not _LABEL_KEY.match(key) or not _LABEL_VALUE.match(value):
            raise ValueError(f"expected key=value[,key=value...] labels, got {item.strip()!r}")
        out[key] = value
    return out


def _json_objects(raw: str) -> tuple[dict[str, Any], ...]:
    """A JSON list of objects (Kubernetes tolerations)."""
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"expected a JSON list of objects: {exc.msg}") from None
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise ValueError("expected a JSON list of objects")
    return tuple(value)


def _aes_key(raw: str) -> bytes:
    """A 32-byte AES-256 key, base64 (standard or url-safe alphabet)."""
    try:
        key = base64.b64decode(raw.replace("-", "+").replace("_", "/") + "=" * (-len(raw) % 4))
    except (binascii.Error, ValueError):
        raise ValueError("expected base64 of 32 random bytes (openssl rand -base64 32)") from None
    if len(key) != 32:
        raise ValueError(f"expected base64 of 32 bytes, got {len(key)} bytes")
    return key


def _hook(raw: str) -> str:
    """``package.module:callable``."""
    module, sep, name = raw.partition(":")
    if not sep or not module or not name.isidentifier():
        raise ValueError(f"expected package.module:callable, got {raw!r}")
    return raw


def _http_url(raw: str) -> str:
    if not raw.startswith(("http://", "https://")):
        raise ValueError(f"expected an http(s) URL, got {raw!r}")
    return raw.rstrip("/")


_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


def _bucket(raw: str) -> str:
    if not _BUCKET.match(raw):
        raise ValueError(f"expected an S3 bucket name (3-63 of a-z 0-9 . -), got {raw!r}")
    return raw


def _key_prefix(raw: str) -> str:
    """An object key prefix, kept as a folder: ``video`` becomes ``video/``."""
    raw = raw.strip("/")
    if not raw:
        return ""
    if ".." in raw.split("/") or not re.match(r"^[A-Za-z0-9_./-]+$", raw):
        raise ValueError(f"expected a key prefix such as video/ (a-z A-Z 0-9 _ . - /), got {raw!r}")
    return raw + "/"


def _pg_url(raw: str) -> str:
    if not raw.startswith(("postgres://", "postgresql://", "postgresql+psycopg://")):
        raise ValueError("expected a postgresql:// URL")
    return raw


# -- sections ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServiceSettings(_Section):
    """The XRPC service: identity, listener, quotas, which executor runs the jobs."""

    did: str = setting("VIDEO_SERVICE_DID", _did, "")
    did_plc_url: str = setting("VIDEO_DID_PLC_URL", _http_url, "https://plc.directory")
    #: Shortest time between two fetches of one DID's document when a token's signature does
    #: not verify (key rotation): bad signatures cannot buy an upstream fetch per request.
    did_refresh_interval_s: float = setting(
        "VIDEO_DID_REFRESH_INTERVAL_S", _float_range(0, 3600), 60.0)
    host: str = setting("VIDEO_HOST", str, "127.0.0.1")
    port: int = setting("VIDEO_PORT", _int_range(0, 65535), 2585)
    public_url: str = setting("VIDEO_PUBLIC_URL", _http_url, "")
    data_dir: Path = setting("VIDEO_DATA_DIR", Path, Path(".data"))
    executor: Executor = setting("VIDEO_EXECUTOR", _choice("local", "kubernetes"), "local")
    processing_concurrency: int = setting(
        "VIDEO_PROCESSING_CONCURRENCY", _int_range(1, 256), 1)
    max_upload_bytes: int = setting("VIDEO_MAX_UPLOAD_BYTES", _int_range(1, 1 << 40), 300_000_000)
    daily_video_limit: int = setting("VIDEO_DAILY_VIDEO_LIMIT", _int_range(0, 1 << 31), 25)
    daily_byte_limit: int = setting(
        "VIDEO_DAILY_BYTE_LIMIT", _int_range(0, 1 << 50), 10_000_000_000)
    #: Uploads of one DID in progress at once: streaming uploadVideo plus open sessions.
    max_open_uploads: int = setting("VIDEO_MAX_OPEN_UPLOADS", _int_range(1, 10_000), 10)
    #: How long a multipart session may stay open (its expiresAt).
    upload_session_ttl_s: int = setting(
        "VIDEO_UPLOAD_SESSION_TTL_S", _int_range(10, 7 * 86_400), 7200)
    #: How often expired sessions and reservations are swept.
    upload_sweep_interval_s: float = setting(
        "VIDEO_UPLOAD_SWEEP_INTERVAL_S", _float_range(0.1, 3600), 60.0)
    log_level: str = setting(
        "VIDEO_LOG_LEVEL", _choice("debug", "info", "warning", "error"), "info")
    # PDS endpoints and did:web hosts come from user documents (SSRF): development only.
    allow_private_endpoints: bool = setting("VIDEO_ALLOW_PRIVATE_ENDPOINTS", _bool, False)

    @property
    def did_bare(self) -> str:
        return self.did.split("#", 1)[0]


@dataclass(frozen=True)
class StorageSettings(_Section):
    """Where uploads and outputs live, and how worker pods reach the same files."""

    type: StorageType = setting("VIDEO_STORAGE", _choice("local", "s3"), "local")
    #: Local storage. Empty: ``$VIDEO_DATA_DIR/storage``.
    dir: str = setting("VIDEO_STORAGE_DIR", str, "")
    # S3: credentials come from boto3's standard chain (environment, web identity, instance
    # profile), never from a setting of ours.
    s3_bucket: str = setting("VIDEO_S3_BUCKET", _bucket, "")
    s3_prefix: str = setting("VIDEO_S3_PREFIX", _key_prefix, "")
    #: Empty: AWS.
    s3_endpoint: str = setting("VIDEO_S3_ENDPOINT", _http_url, "")
    s3_region: str = setting("VIDEO_S3_REGION", str, "")
    s3_force_path_style: bool = setting("VIDEO_S3_FORCE_PATH_STYLE", _bool, False)
    #: A Secret with AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY for worker pods (cluster mode).
    s3_credentials_secret: str = setting("VIDEO_S3_CREDENTIALS_SECRET", _dns_label, "")
    #: How long a store outage may last before a job's storage step fails.
    s3_retry_s: float = setting("VIDEO_S3_RETRY_S", _float_range(0, 3600), 120.0)
    #: redirect: segments and MP4 by 307 to a presigned (or VIDEO_PLAYBACK_BASE_URL) URL;
    #: proxy: the service streams them (Range supported). Playlists are always served.
    playback: PlaybackMode = setting("VIDEO_PLAYBACK", _choice("redirect", "proxy"), "redirect")
    playback_base_url: str = setting("VIDEO_PLAYBACK_BASE_URL", _http_url, "")
    playback_url_ttl_s: int = setting(
        "VIDEO_PLAYBACK_URL_TTL_S", _int_range(60, 7 * 86_400), 3600)
    pod_hostpath: str = setting("VIDEO_WORKER_STORAGE_HOSTPATH", _abs_path, "")
    pod_pvc: str = setting("VIDEO_WORKER_STORAGE_PVC", _dns_label, "")


@dataclass(frozen=True)
class TranscodeSettings(_Section):
    """What the transcoder needs; the worker container reads only this section."""

    ffmpeg_path: str = setting("VIDEO_FFMPEG_PATH", str, "ffmpeg")
    ffprobe_path: str = setting("VIDEO_FFPROBE_PATH", str, "ffprobe")
    max_duration_s: int = setting("VIDEO_MAX_DURATION_S", _int_range(1, 86_400), 600)
    max_fps: int = setting("VIDEO_MAX_FPS", _int_range(1, 240), 60)
    threads: int = setting("VIDEO_TRANSCODE_THREADS", _int_range(0, 64), 0)
    strategy: Strategy = setting(
        "VIDEO_ENCODING_STRATEGY", _choice("single", "per_rendition"), "single")
    #: Publish the master playlist as renditions complete, lowest first. Costs the ``single``
    #: strategy a second decode of the source (a process of its own for the lowest rendition).
    playable_early: bool = setting("VIDEO_PLAYABLE_EARLY", _bool, True)


@dataclass(frozen=True)
class PdsSettings(_Section):
    """After encoding: the scan step and the upload to the user's PDS (Bluesky mode)."""

    timeout_s: float = setting("VIDEO_PDS_TIMEOUT_S", _float_range(1, 3600), 60.0)
    retry_max_s: float = setting("VIDEO_PDS_RETRY_MAX_S", _float_range(0.1, 600), 30.0)
    scan_hook: str = setting("VIDEO_SCAN_HOOK", _hook, "")


@dataclass(frozen=True)
class KubeSettings(_Section):
    """Cluster mode (VIDEO_EXECUTOR=kubernetes): the VideoJob namespace and the worker Jobs."""

    namespace: str = setting("VIDEO_K8S_NAMESPACE", _dns_label, "default")
    #: Finished VideoJobs are deleted this long after they end (0: kept); outputs stay.
    videojob_ttl_s: int = setting("VIDEO_K8S_VIDEOJOB_TTL_S", _int_range(0, 365 * 86_400), 86_400)
    #: The release: VideoJobs carry it as a label and the operator reconciles only those.
    #: Empty: every VideoJob in the namespace (one installation per namespace).
    instance: str = setting("VIDEO_K8S_INSTANCE", _label_value, "")
    #: How often the operator reads the progress of running workers (their files send no
    #: watch events; everything else wakes a VideoJob when its Jobs change).
    poll_interval_s: float = setting("VIDEO_K8S_POLL_INTERVAL_S", _float_range(0.1, 60), 1.0)
    #: Safety net: each unfinished VideoJob is reconciled at least this often, for a missed
    #: watch event and the job's deadline.
    resync_interval_s: float = setting(
        "VIDEO_K8S_RESYNC_INTERVAL_S", _float_range(1, 86_400), 30.0)
    reconcile_interval_s: float = setting(
        "VIDEO_K8S_RECONCILE_INTERVAL_S", _float_range(0.5, 3600), 10.0)
    #: 0: the worker deadline plus 5 minutes.
    job_timeout_s: int = setting("VIDEO_K8S_JOB_TIMEOUT_S", _int_range(0, 7 * 86_400), 0)
    worker_image: str = setting(
        "VIDEO_WORKER_IMAGE", str, f"localhost/atproto-video-worker:{__version__}")
    worker_pull_policy: str = setting("VIDEO_WORKER_PULL_POLICY", _pull_policy, "IfNotPresent")
    worker_host_network: bool = setting("VIDEO_WORKER_HOST_NETWORK", _bool, False)
    worker_image_pull_secrets: tuple[str, ...] = setting(
        "VIDEO_WORKER_IMAGE_PULL_SECRETS", _names, ())
    #: Workers never use its token; it exists so web identity (IRSA) can reach their S3 client.
    worker_service_account: str = setting("VIDEO_WORKER_SERVICE_ACCOUNT", _dns_label, "")
    worker_cpu_request: str = setting("VIDEO_WORKER_CPU_REQUEST", _quantity, "500m")
    worker_cpu_limit: str = setting("VIDEO_WORKER_CPU_LIMIT", _quantity, "2")
    worker_memory_request: str = setting("VIDEO_WORKER_MEMORY_REQUEST", _quantity, "512Mi")
    worker_memory_limit: str = setting("VIDEO_WORKER_MEMORY_LIMIT", _quantity, "2Gi")
    worker_uid: int = setting("VIDEO_WORKER_UID", _int_range(1, 2**31 - 1), 10001)
    worker_gid: int = setting("VIDEO_WORKER_GID", _int_range(1, 2**31 - 1), 10001)
    worker_backoff_limit: int = setting("VIDEO_WORKER_BACKOFF_LIMIT", _int_range(0, 20), 2)
    worker_deadline_s: int = setting(
        "VIDEO_WORKER_DEADLINE_S", _int_range(1, 7 * 86_400), 3600)
    worker_ttl_s: int = setting("VIDEO_WORKER_TTL_S", _int_range(0, 30 * 86_400), 600)
    #: A worker pod not running by then (Unschedulable, a volume that never mounts) fails
    #: the job with that reason instead of waiting for the deadline.
    worker_start_timeout_s: int = setting(
        "VIDEO_WORKER_START_TIMEOUT_S", _int_range(10, 86_400), 600)
    #: Segment-parallel encoding: a rendition of a source at least VIDEO_SEGMENT_MIN_SOURCE_S
    #: long is encoded as one worker Job per segment of this many seconds (rounded up to a
    #: multiple of 8), joined without re-encoding; 0 turns it off.
    segment_s: int = setting("VIDEO_SEGMENT_SECONDS", _int_range(0, 86_400), 60)
    segment_min_source_s: int = setting(
        "VIDEO_SEGMENT_MIN_SOURCE_S", _int_range(0, 86_400), 120)
    worker_node_selector: dict[str, str] = setting(
        "VIDEO_WORKER_NODE_SELECTOR", _key_values, factory=dict)
    worker_tolerations: tuple[dict[str, Any], ...] = setting(
        "VIDEO_WORKER_TOLERATIONS", _json_objects, ())

    @property
    def timeout_s(self) -> int:
        """How long a cluster job may stay unfinished before the operator fails it."""
        return self.job_timeout_s or self.worker_deadline_s + 300


@dataclass(frozen=True)
class MetricsSettings(_Section):
    """Prometheus metrics on their own port, apart from the XRPC listener (never public)."""

    #: 0: no metrics listener. Off by default so several processes on one host never collide;
    #: the chart turns it on.
    port: int = setting("VIDEO_METRICS_PORT", _int_range(0, 65535), 0)
    host: str = setting("VIDEO_METRICS_HOST", str, "127.0.0.1")


@dataclass(frozen=True)
class Secrets(_Section):
    """Never logged: the key for forwarded upload tokens and the database URL (password)."""

    #: Embedded: generated into ``$VIDEO_DATA_DIR/token.key``; required in cluster mode.
    token_key: bytes | None = field(
        default=None, repr=False, metadata={"env": "VIDEO_TOKEN_KEY", "parse": _aes_key})
    #: Empty: the embedded SQLite database under ``$VIDEO_DATA_DIR``.
    db_url: str = field(
        default="", repr=False, metadata={"env": "VIDEO_DB_URL", "parse": _pg_url})

    def describe(self) -> dict[str, str]:
        return {"token_key": "<set>" if self.token_key else "<unset>",
                "db_url": _redact(self.db_url) if self.db_url else "<embedded sqlite>"}


@dataclass(frozen=True)
class VideoConfig:
    """Every section; built by :meth:`from_env`, or directly in tests."""

    service: ServiceSettings
    storage: StorageSettings = field(default_factory=StorageSettings)
    transcode: TranscodeSettings = field(default_factory=TranscodeSettings)
    pds: PdsSettings = field(default_factory=PdsSettings)
    kube: KubeSettings = field(default_factory=KubeSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    secrets: Secrets = field(default_factory=Secrets, repr=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> VideoConfig:
        env = os.environ if env is None else env
        if not env.get("VIDEO_SERVICE_DID", "").strip():
            raise ConfigError("VIDEO_SERVICE_DID is required (e.g. did:web:video.example.com)")
        cfg = cls(
            service=ServiceSettings.from_env(env),
            storage=StorageSettings.from_env(env),
            transcode=TranscodeSettings.from_env(env),
            pds=PdsSettings.from_env(env),
            kube=KubeSettings.from_env(env),
            metrics=MetricsSettings.from_env(env),
            secrets=Secrets.from_env(env),
        )
        if cfg.storage.type == "s3" and not cfg.storage.s3_bucket:
            raise ConfigError("VIDEO_S3_BUCKET is required when VIDEO_STORAGE=s3")
        return cfg

    @property
    def storage_dir(self) -> Path:
        return Path(self.storage.dir) if self.storage.dir else self.service.data_dir / "storage"

    @property
    def database_url(self) -> str:
        """The SQLAlchemy URL: Postgres when configured, else the embedded SQLite file."""
        if self.secrets.db_url:
            return _normalise_pg_url(self.secrets.db_url)
        return f"sqlite:///{(self.service.data_dir / 'video.sqlite3').resolve()}"

    @property
    def embedded_db(self) -> bool:
        return not self.secrets.db_url

    def describe(self) -> dict[str, dict[str, str]]:
        """The effective settings by section, safe to log (secrets redacted)."""
        return {
            "service": self.service.describe(),
            "storage": {**self.storage.describe(), "root": str(self.storage_dir)},
            "transcode": self.transcode.describe(),
            "pds": self.pds.describe(),
            "kube": self.kube.describe(),
            "metrics": self.metrics.describe(),
            "secrets": self.secrets.describe(),
        }


def _normalise_pg_url(raw: str) -> str:
    for prefix in ("postgres://", "postgresql://"):
        if raw.startswith(prefix):
            return "postgresql+psycopg://" + raw[len(prefix) :]
    return raw


def _redact(url: str) -> str:
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}"
