"""``atproto-video operator``: run the kopf operator for VideoJobs in VIDEO_K8S_NAMESPACE.

Registering the subcommand imports nothing but argparse, so it is always listed; without the
``operator`` extra (kopf, kubernetes) running it says so in one line.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "operator",
        help="run the Kubernetes operator (VideoJob -> worker Jobs -> status)",
        description="Watch VideoJobs in VIDEO_K8S_NAMESPACE, run one worker Job per rendition "
        "(plus thumbnail and MP4), mirror progress into the VideoJob status and the database "
        "(VIDEO_DB_URL, Postgres), and create VideoJobs for jobs the API could not hand over. "
        "Uses in-cluster config, else KUBECONFIG. Run one replica (it runs kopf standalone).",
    )
    parser.add_argument(
        "--liveness",
        default="",
        metavar="URL",
        help="serve a kopf liveness probe, e.g. http://0.0.0.0:8080/healthz",
    )
    parser.add_argument(
        "--print-crd",
        action="store_true",
        help="print the VideoJob CustomResourceDefinition (manifests/crd.yaml) and exit",
    )
    parser.add_argument(
        "--print-rbac",
        action="store_true",
        help="print the ServiceAccounts, Roles and bindings of manifests/rbac.yaml and exit",
    )
    parser.add_argument(
        "--print-chart-rbac",
        action="store_true",
        help="print the chart's RBAC rule lists (charts/atproto-video/files/rbac-rules.yaml) "
        "and exit",
    )
    parser.add_argument(
        "--drain",
        action="store_true",
        help="delete this release's VideoJobs (VIDEO_K8S_INSTANCE) and wait for the running "
        "operator to finalize them; the chart's pre-delete hook",
    )
    parser.set_defaults(func=cmd_operator)


def cmd_operator(args: argparse.Namespace) -> int:
    if args.print_crd:
        from atproto_video.operator.crd import crd_yaml

        sys.stdout.write(crd_yaml())
        return 0
    if args.print_rbac or args.print_chart_rbac:
        from atproto_video.operator.rbac import chart_rules_yaml, rbac_yaml

        sys.stdout.write(rbac_yaml() if args.print_rbac else chart_rules_yaml())
        return 0
    from atproto_video.core import logs
    from atproto_video.core.config import VideoConfig

    try:
        from atproto_video.core.kube import KubeError
        from atproto_video.operator.service import OperatorService
    except ImportError as exc:
        print(f"atproto-video: the operator needs its extra packages (kopf, kubernetes): "
              f"pip install 'atproto-video[operator]' ({exc})", file=sys.stderr)
        return 2

    cfg = VideoConfig.from_env()
    if args.drain:
        from atproto_video.core.kube import Kube
        from atproto_video.operator.drain import drain

        logs.setup(cfg.service.log_level)
        try:
            kube = Kube.from_environment()
        except KubeError as exc:
            print(f"atproto-video: {exc}", file=sys.stderr)
            return 2
        count = drain(kube, cfg.kube.namespace, cfg.kube.instance)
        print(f"deleted {count} VideoJob(s) of instance {cfg.kube.instance or '(any)'}")
        return 0
    if cfg.embedded_db:
        print("atproto-video: configuration error: VIDEO_DB_URL is required for the operator "
              "(the API and the operator share one Postgres database)", file=sys.stderr)
        return 2
    logs.setup(cfg.service.log_level)
    try:
        service = OperatorService.create(cfg, liveness=args.liveness or None)
    except KubeError as exc:
        print(f"atproto-video: {exc}", file=sys.stderr)
        return 2
    asyncio.run(service.run())
    return 0
