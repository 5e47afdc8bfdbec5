# shellcheck shell=bash
# Shared settings for transcoder-image/*.sh. Source it; do not run it.
IMAGE_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(cd "$IMAGE_DIR/.." && pwd)"
DOCKER_STATE="${VIDEO_DOCKER_STATE:-/var/lib/atproto-video/docker}"
DOCKER_SOCK="$DOCKER_STATE/docker.sock"
export DOCKER_HOST="unix://$DOCKER_SOCK"
# Use the Debian docker.io client that matches the private dockerd (not a newer one on PATH).
DOCKER="${VIDEO_DOCKER_CLI:-/usr/bin/docker}"
[ -x "$DOCKER" ] || DOCKER="$(command -v docker || true)"
BASE_IMAGE="${VIDEO_BASE_IMAGE:-localhost/atproto-video-base:bookworm}"
WORKER_REPO="localhost/atproto-video-worker"
CACHE_ROOT="${VIDEO_CACHE_DIR:-/var/cache/atproto-video}"

ilog() { printf '[image %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
idie() { printf '[image] ERROR: %s\n' "$*" >&2; exit 1; }

case "$DOCKER_STATE" in
  /*/*) DOCKER_STATE="${DOCKER_STATE%/}" ;;
  *) idie "VIDEO_DOCKER_STATE must be an absolute path at least two levels deep" ;;
esac

# The project version (tag of the worker image) from pyproject.toml.
project_version() {
  python3 - "$REPO_DIR/pyproject.toml" <<'PY'
import sys, tomllib
with open(sys.argv[1], "rb") as f:
    print(tomllib.load(f)["project"]["version"])
PY
}
