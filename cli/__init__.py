"""The ``atproto-video`` console script: serve, migrate, transcode, operator.

The top of the dependency graph: the only module that knows every part. Each subcommand
imports its part when it runs, so ``transcode`` in the worker image loads no web stack.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from atproto_video.core import __version__
from atproto_video.core.config import ConfigError, VideoConfig
from atproto_video.operator.command import register as register_operator
from atproto_video.transcoder.command import register as register_transcode


def cmd_serve(_args: argparse.Namespace) -> int:
    cfg = VideoConfig.from_env()
    from atproto_video.api.service import VideoService
    from atproto_video.core import logs

    logs.setup(cfg.service.log_level)
    VideoService.create(cfg).run()
    return 0


def cmd_migrate(_args: argparse.Namespace) -> int:
    cfg = VideoConfig.from_env()
    from atproto_video.core import logs
    from atproto_video.core.db import make_engine
    from atproto_video.core.migrate import upgrade

    logs.setup(cfg.service.log_level)
    cfg.service.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(cfg.database_url)
    revision = upgrade(engine)
    engine.dispose()
    print(f"database at revision {revision}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="atproto-video",
        description="Video processing service for the AT Protocol (app.bsky.video.*). "
        "Configuration comes from VIDEO_* environment variables (see README).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
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
    migrate.set_defaults(func=cmd_migrate)

    register_transcode(sub)
    register_operator(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result: int = args.func(args)
    except ConfigError as exc:
        print(f"atproto-video: configuration error: {exc}", file=sys.stderr)
        return 2
    return result


if __name__ == "__main__":
    raise SystemExit(main())
