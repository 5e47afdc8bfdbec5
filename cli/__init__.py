"""The ``atproto-video`` console script: serve, migrate, transcode, operator, try-upload, upload.

The top of the dependency graph: the only module that knows every part. Each subcommand
imports its part when it runs, so ``transcode`` in the worker image loads no web stack.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from atproto_video.core import __version__
from atproto_video.core.config import ConfigError, VideoConfig
from atproto_video.transcoder.command import register as register_transcode

if TYPE_CHECKING:
    from sqlalchemy import Engine


def cmd_serve(_args: argparse.Namespace) -> int:
    cfg = VideoConfig.from_env()
    from atproto_video.api.service import VideoService
    from atproto_video.core import logs

    logs.setup(cfg.service.log_level)
    VideoService.create(cfg).run()
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    cfg = VideoConfig.from_env()
    from atproto_video.core import logs
    from atproto_video.core.db import make_engine
    from atproto_video.core.migrate import upgrade

    logs.setup(cfg.service.log_level)
    cfg.service.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(cfg.database_url)
    if args.wait > 0 and not _wait_for_database(engine, args.wait):
        engine.dispose()
        return 1
    revision = upgrade(engine)
    engine.dispose()
    print(f"database at revision {revision}")
    return 0


def _wait_for_database(engine: Engine, seconds: float, interval: float = 1.0) -> bool:
    """Until the database accepts a connection (a Postgres still starting, a failover), at
    most ``seconds``; False, with the last error on stderr, if it never did."""
    from sqlalchemy import exc, text

    deadline = time.monotonic() + seconds
    said = 0.0
    while True:
        try:
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            return True
        except exc.OperationalError as err:
            last = str(err.orig or err).strip().splitlines()[0]
            now = time.monotonic()
            if now >= deadline:
                print(f"atproto-video migrate: database not reachable after {seconds:g}s: {last}",
                      file=sys.stderr)  # fmt: skip
                return False
            if now - said >= 10:
                print(f"atproto-video migrate: waiting for the database: {last}", file=sys.stderr)
                said = now
            time.sleep(min(interval, max(0.0, deadline - now)))


def _top_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="atproto-video",
        description="Video processing service for the AT Protocol (app.bsky.video.*). "
        "Configuration comes from VIDEO_* environment variables (see README).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser


def _worker_parser() -> argparse.ArgumentParser:
    """Only ``transcode``: the worker image's entrypoint runs once per Job (per segment of a
    long video), and the other subcommands' modules (HTTP client, JWT, kopf) would cost each
    run about 0.2 CPU-s of imports (bench/segments.py)."""
    parser = _top_parser()
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    register_transcode(sub)
    return parser


def build_parser() -> argparse.ArgumentParser:
    from atproto_video.operator.command import register as register_operator

    from .tryupload import register as register_try_upload
    from .upload import register as register_upload

    parser = _top_parser()
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser(
        "serve",
        help="run the XRPC service (embedded executor unless VIDEO_EXECUTOR=kubernetes)",
        description="Run the XRPC service on VIDEO_HOST:VIDEO_PORT. Migrates the database "
        "first. SIGTERM/SIGINT stop it gracefully; interrupted jobs resume at the next start.",
    )
    serve.set_defaults(func=cmd_serve)

    migrate = sub.add_parser(
        "migrate",
        help="bring the database schema up to date and exit",
        description="Apply pending migrations to VIDEO_DB_URL (or the embedded SQLite database "
        "under VIDEO_DATA_DIR). Safe to run from several processes at once.",
    )
    migrate.add_argument(
        "--wait", type=float, default=0, metavar="SECONDS",
        help="first wait up to SECONDS for the database to accept connections (exit 1 if it "
        "never does); default 0: fail at once",
    )  # fmt: skip
    migrate.set_defaults(func=cmd_migrate)

    register_transcode(sub)
    register_operator(sub)
    register_try_upload(sub)
    register_upload(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    parser = _worker_parser() if words[:1] == ["transcode"] else build_parser()
    args = parser.parse_args(words)
    try:
        result: int = args.func(args)
    except ConfigError as exc:
        print(f"atproto-video: configuration error: {exc}", file=sys.stderr)
        return 2
    return result


if __name__ == "__main__":
    raise SystemExit(main())
