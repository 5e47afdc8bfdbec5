"""One typed config object, read from flat ``VIDEO_*`` environment variables.

A bad value raises :class:`ConfigError` whose message is one line naming the variable, so
``atproto-video serve`` can stop with exactly that line.
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

from atproto_video import __version__

T = TypeVar("T")

Executor = Literal["local", "kubernetes"]
Strategy = Literal["single", "per_rendition"]


class ConfigError(ValueError):
    """A configuration variable is missing or malformed."""


@dataclass(frozen=True)
class VideoConfig:
    service_did: str
    did_plc_url: str = "https://plc.directory"
    host: str = "127.0.0.1"
    port: int = 2585
    public_url: str = ""
    data_dir: Path = Path(".data")
    db_url: str = ""
    storage_dir: Path = Path(".data/storage")
    processing_concurrency: int = 1
    ffmpeg_path: str = "ffmpeg"
    ffprobe_path: str = "ffprobe"
    max_upload_bytes: int = 300_000_000
    max_duration_s: int = 600
    max_fps: int = 60
    transcode_threads: int = 0
    encoding_strategy: Strategy = "single"
    daily_video_limit: int = 25
    daily_byte_limit: int = 10_000_000_000
    executor: Executor = "local"
    log_level: str = "info"
    # Bluesky mode: PDS endpoints come from user documents (SSRF), tokens are kept encrypted.
    allow_private_endpoints: bool = False
    token_key: bytes | None = field(default=None, repr=False)
    pds_timeout_s: float = 60.0
    pds_retry_max_s: float = 30.0
    scan_hook: str = ""
    # Cluster mode (VIDEO_EXECUTOR=kubernetes): the VideoJob namespace and the worker Jobs.
    k8s_namespace: str = "default"
    k8s_poll_interval_s: float = 1.0
    k8s_reconcile_interval_s: float = 10.0
    k8s_job_timeout_s: int = 0
    worker_image: str = "localhost/atproto-video-worker:0.1.0"
    worker_pull_policy: str = "IfNotPresent"
    worker_host_network: bool = False
    worker_storage_hostpath: str = ""
    worker_storage_pvc: str = ""
    worker_cpu_request: str = "500m"
    worker_cpu_limit: str = "2"
    worker_memory_request: str = "512Mi"
    worker_memory_limit: str = "2Gi"
    worker_uid: int = 10001
    worker_gid: int = 10001
    worker_backoff_limit: int = 2
    worker_deadline_s: int = 3600
    worker_ttl_s: int = 600
    worker_node_selector: Mapping[str, str] = field(default_factory=dict)
    worker_tolerations: tuple[Mapping[str, Any], ...] = ()
    # Extra fields that later components read; kept here so there is one config object.
    extra: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)

    @property
    def service_did_bare(self) -> str:
        return self.service_did.split("#", 1)[0]

    @property
    def database_url(self) -> str:
        """The SQLAlchemy URL: Postgres when configured, else the embedded SQLite file."""
        if self.db_url:
            return _normalise_pg_url(self.db_url)
        return f"sqlite:///{(self.data_dir / 'video.sqlite3').resolve()}"

    @property
    def embedded_db(self) -> bool:
        return not self.db_url

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> VideoConfig:
        env = os.environ if env is None else env
        service_did = env.get("VIDEO_SERVICE_DID", "").strip()
        if not service_did:
            raise ConfigError("VIDEO_SERVICE_DID is required (e.g. did:web:video.example.com)")
        if not service_did.startswith("did:"):
            raise ConfigError(f"VIDEO_SERVICE_DID must be a DID, got {service_did!r}")
        data_dir = Path(_get(env, "VIDEO_DATA_DIR", str, ".data"))
        storage = env.get("VIDEO_STORAGE_DIR", "").strip()
        port = _get(env, "VIDEO_PORT", _int_range(0, 65535), 2585)
        host = _get(env, "VIDEO_HOST", str, "127.0.0.1")
        db_url = _get(env, "VIDEO_DB_URL", _pg_url, "")
        return cls(
            service_did=service_did,
            did_plc_url=_get(env, "VIDEO_DID_PLC_URL", _http_url, "https://plc.directory"),
            host=host,
            port=port,
            public_url=_get(env, "VIDEO_PUBLIC_URL", _http_url, "").rstrip("/"),
            data_dir=data_dir,
            db_url=db_url,
            storage_dir=Path(storage) if storage else data_dir / "storage",
            processing_concurrency=_get(env, "VIDEO_PROCESSING_CONCURRENCY", _int_range(1, 256), 1),
            ffmpeg_path=_get(env, "VIDEO_FFMPEG_PATH", str, "ffmpeg"),
            ffprobe_path=_get(env, "VIDEO_FFPROBE_PATH", str, "ffprobe"),
            max_upload_bytes=_get(
                env, "VIDEO_MAX_UPLOAD_BYTES", _int_range(1, 1 << 40), 300_000_000
            ),
            max_duration_s=_get(env, "VIDEO_MAX_DURATION_S", _int_range(1, 86_400), 600),
            max_fps=_get(env, "VIDEO_MAX_FPS", _int_range(1, 240), 60),
            transcode_threads=_get(env, "VIDEO_TRANSCODE_THREADS", _int_range(0, 64), 0),
            encoding_strategy=_get(
                env, "VIDEO_ENCODING_STRATEGY", _choice("single", "per_rendition"), "single"
            ),
            daily_video_limit=_get(env, "VIDEO_DAILY_VIDEO_LIMIT", _int_range(0, 1 << 31), 25),
            daily_byte_limit=_get(
                env, "VIDEO_DAILY_BYTE_LIMIT", _int_range(0, 1 << 50), 10_000_000_000
            ),
            executor=_get(env, "VIDEO_EXECUTOR", _choice("local", "kubernetes"), "local"),
            log_level=_get(
                env, "VIDEO_LOG_LEVEL", _choice("debug", "info", "warning", "error"), "info"
            ),
            allow_private_endpoints=_get(env, "VIDEO_ALLOW_PRIVATE_ENDPOINTS", _bool, False),
            token_key=_get(env, "VIDEO_TOKEN_KEY", _aes_key, None),
            pds_timeout_s=_get(env, "VIDEO_PDS_TIMEOUT_S", _float_range(1, 3600), 60.0),
            pds_retry_max_s=_get(env, "VIDEO_PDS_RETRY_MAX_S", _float_range(0.1, 600), 30.0),
            scan_hook=_get(env, "VIDEO_SCAN_HOOK", _hook, ""),
            k8s_namespace=_get(env, "VIDEO_K8S_NAMESPACE", _dns_label, "default"),
            k8s_poll_interval_s=_get(env, "VIDEO_K8S_POLL_INTERVAL_S", _float_range(0.1, 60), 1.0),
            k8s_reconcile_interval_s=_get(
                env, "VIDEO_K8S_RECONCILE_INTERVAL_S", _float_range(0.5, 3600), 10.0
            ),
            k8s_job_timeout_s=_get(env, "VIDEO_K8S_JOB_TIMEOUT_S", _int_range(0, 7 * 86_400), 0),
            worker_image=_get(
                env, "VIDEO_WORKER_IMAGE", str, f"localhost/atproto-video-worker:{__version__}"
            ),
            worker_pull_policy=_get(
                env, "VIDEO_WORKER_PULL_POLICY", _pull_policy, "IfNotPresent"
            ),
            worker_host_network=_get(env, "VIDEO_WORKER_HOST_NETWORK", _bool, False),
            worker_storage_hostpath=_get(env, "VIDEO_WORKER_STORAGE_HOSTPATH", _abs_path, ""),
            worker_storage_pvc=_get(env, "VIDEO_WORKER_STORAGE_PVC", _dns_label, ""),
            worker_cpu_request=_get(env, "VIDEO_WORKER_CPU_REQUEST", _quantity, "500m"),
            worker_cpu_limit=_get(env, "VIDEO_WORKER_CPU_LIMIT", _quantity, "2"),
            worker_memory_request=_get(env, "VIDEO_WORKER_MEMORY_REQUEST", _quantity, "512Mi"),
            worker_memory_limit=_get(env, "VIDEO_WORKER_MEMORY_LIMIT", _quantity, "2Gi"),
            worker_uid=_get(env, "VIDEO_WORKER_UID", _int_range(1, 2**31 - 1), 10001),
            worker_gid=_get(env, "VIDEO_WORKER_GID", _int_range(1, 2**31 - 1), 10001),
            worker_backoff_limit=_get(env, "VIDEO_WORKER_BACKOFF_LIMIT", _int_range(0, 20), 2),
            worker_deadline_s=_get(env, "VIDEO_WORKER_DEADLINE_S", _int_range(1, 7 * 86_400), 3600),
            worker_ttl_s=_get(env, "VIDEO_WORKER_TTL_S", _int_range(0, 30 * 86_400), 600),
            worker_node_selector=_get(env, "VIDEO_WORKER_NODE_SELECTOR", _key_values, {}),
            worker_tolerations=_get(env, "VIDEO_WORKER_TOLERATIONS", _json_objects, ()),
            extra={k: v for k, v in env.items() if k.startswith("VIDEO_")},
        )

    @property
    def job_timeout_s(self) -> int:
        """How long a cluster job may stay unfinished before the operator fails it."""
        return self.k8s_job_timeout_s or self.worker_deadline_s + 300

    def describe(self) -> dict[str, Any]:
        """The effective settings, safe to log (the token key and DB password are redacted)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            if f.name == "extra":
                continue
            out[f.name] = str(getattr(self, f.name))
        out["token_key"] = "<set>" if self.token_key else "<unset>"
        out["db_url"] = "<embedded sqlite>" if self.embedded_db else _redact(self.db_url)
        return out


def _get(env: Mapping[str, str], name: str, parse: Callable[[str], T], default: T) -> T:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return parse(raw.strip())
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{name}: {exc}") from None


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


def _pg_url(raw: str) -> str:
    if not raw.startswith(("postgres://", "postgresql://", "postgresql+psycopg://")):
        raise ValueError("expected a postgresql:// URL")
    return raw


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
