"""Upload a video to a running service as a throwaway did:web identity (development only).

The identity's DID document is served on loopback by this script while it runs, so the
service must allow private endpoints (VIDEO_ALLOW_PRIVATE_ENDPOINTS=1, as `make run` and
charts/atproto-video/values-local.yaml do). Usage, from the repository root:

    PYTHONPATH=. .venv/bin/python scripts/try_upload.py http://127.0.0.1:2585 clip.mp4 \\
        [--service-did did:web:localhost%3A2585]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tests.support.didserver import DidServer
from tests.support.identity import Identity
from tests.support.xrpc import upload_as, wait_for_job


class Service:
    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", help="the service's base URL")
    parser.add_argument("video", type=Path)
    parser.add_argument("--service-did", default="did:web:localhost%3A2585",
                        help="the service's VIDEO_SERVICE_DID (the token's audience)")
    args = parser.parse_args()
    dids = DidServer().start()
    try:
        # did:web allows a port only on localhost (the DID server listens on 127.0.0.1).
        who = Identity(f"did:web:localhost%3A{dids.port}")
        dids.web_did = who.did
        dids.publish(who)
        token = who.token(args.service_did, "app.bsky.video.uploadVideo")
        resp = upload_as(Service(args.url), who, args.video.read_bytes(), token=token)
        print(resp.status_code, resp.text)
        if resp.status_code != 200:
            return 1
        status, _ = wait_for_job(Service(args.url), resp.json()["jobId"], timeout=1800,
                                 interval=1.0)
        print(json.dumps(status, indent=2))
        return 0 if status["state"] == "JOB_STATE_COMPLETED" else 1
    finally:
        dids.stop()


if __name__ == "__main__":
    sys.exit(main())
