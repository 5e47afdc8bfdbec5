#!/usr/bin/env bash
# Build the worker image localhost/atproto-video-worker:<project version> with a private
# dockerd, from a locally debootstrapped base (no container registry), and optionally import
# it into the test cluster's containerd.
#
#   transcoder-image/build.sh            # build (base image first if missing)
#   transcoder-image/build.sh --import   # build, then import into the cluster containerd
#   transcoder-image/build.sh import     # import only (image must exist)
#   transcoder-image/build.sh tag        # print the image reference
#   transcoder-image/build.sh postgres [--import|import|tag]   # the same for the chart's
#       quickstart Postgres image localhost/atproto-video-postgres:15 (transcoder-image/postgres/)
#
# Env: VIDEO_WORKER_TAG (default: project version), VIDEO_BASE_IMAGE,
#      VIDEO_CLUSTER_STATE (cluster containerd to import into), VIDEO_DOCKER_STATE.
# Python packages: build.sh downloads cp311/manylinux wheels from PyPI on the host (host pip,
# host CA store) into a wheelhouse cached under $VIDEO_CACHE_DIR/wheels, and the Dockerfile
# installs offline from it (--no-index). Debian packages (ffmpeg, python3) come from the same
# mirror apt uses, fetched by apt inside `docker build --network host`.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
export PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:$PATH"

TAG="${VIDEO_WORKER_TAG:-$(project_version)}"
IMAGE="$WORKER_REPO:$TAG"
# Debian bookworm ships PostgreSQL 15: the tag is the major version, as with the official image.
POSTGRES_IMAGE="${VIDEO_POSTGRES_IMAGE:-localhost/atproto-video-postgres:15}"
CLUSTER_STATE="${VIDEO_CLUSTER_STATE:-/var/lib/atproto-video/cluster}"
CLUSTER_SOCK="$CLUSTER_STATE/containerd/containerd.sock"

# wheelhouse REQUIREMENTS DEST: binary wheels for the image's Python (Debian bookworm:
# CPython 3.11, glibc 2.36) plus the build backend, cached by the requirements' hash.
wheelhouse() {
  local req="$1" dest="$2" key cache
  key="$( (cat "$req"; echo "setuptools>=69 wheel"; echo cp311-manylinux_2_36) | sha256sum | cut -c1-16)"
  cache="$CACHE_ROOT/wheels/$key"
  if [ ! -f "$cache/.complete" ]; then
    ilog "downloading wheels for the image into $cache"
    local pip=(python3 -m pip) tmp
    if ! python3 -m pip --version >/dev/null 2>&1; then   # Debian's python3 has no pip
      [ -x "$CACHE_ROOT/pip-venv/bin/pip" ] || python3 -m venv "$CACHE_ROOT/pip-venv" \
        || idie "python3 -m venv failed (apt-get install python3-venv)"
      pip=("$CACHE_ROOT/pip-venv/bin/pip")
    fi
    mkdir -p "$CACHE_ROOT/wheels"
    tmp="$(mktemp -d "$cache.tmp.XXXXXX")"
    PIP_FIND_LINKS= "${pip[@]}" download --quiet --disable-pip-version-check --dest "$tmp" \
      --only-binary=:all: --implementation cp --python-version 3.11 --abi cp311 --abi abi3 --abi none \
      $(for g in 5 12 $(seq 17 36); do printf -- '--platform manylinux_2_%s_x86_64 ' "$g"; done) \
      --platform manylinux1_x86_64 --platform manylinux2010_x86_64 --platform manylinux2014_x86_64 \
      -r "$req" "setuptools>=69" wheel >&2 \
      || { rm -rf "$tmp"; idie "pip download of the image's Python dependencies failed (is PyPI reachable?)"; }
    touch "$tmp/.complete"
    rm -rf "$cache"; mv "$tmp" "$cache"
  fi
  mkdir -p "$dest"
  cp "$cache"/*.whl "$dest/"
}

# The private dockerd is used under a lease held by this script: if this script started it, the
# release at exit stops it again (unless another session still leases it), so `make test`
# leaves no daemon behind; a dockerd someone started by hand stays up.
CTX=""
LEASED=""
cleanup() {
  [ -n "$CTX" ] && rm -rf "$CTX"
  if [ -n "$LEASED" ]; then bash "$IMAGE_DIR/dockerd.sh" stop --release "$LEASED" >&2 || true; fi
}
trap cleanup EXIT
use_dockerd() {
  if [ -z "$LEASED" ]; then
    eval "$(bash "$IMAGE_DIR/dockerd.sh" start --lease "$$:image-build")"
    LEASED="$$:image-build"
  fi
}

build() {
  [ "$(id -u)" = 0 ] || idie "transcoder-image/build.sh must run as root (private dockerd)"
  use_dockerd
  bash "$IMAGE_DIR/make-base.sh"
  # A dedicated build context: only what the image needs (no .git, venvs, caches, data).
  mkdir -p "$CACHE_ROOT"
  ctx="$(mktemp -d "$CACHE_ROOT/image-context.XXXXXX")"
  CTX="$ctx"
  mkdir -p "$ctx/project"
  python3 - "$REPO_DIR/pyproject.toml" >"$ctx/requirements.txt" <<'PY'
import sys, tomllib
with open(sys.argv[1], "rb") as f:
    project = tomllib.load(f)["project"]
# One image serves the API, the operator and the workers: the operator extra goes in too.
print("\n".join(project["dependencies"] + project["optional-dependencies"]["operator"]))
PY
  local dirs
  dirs="$(python3 - "$REPO_DIR/pyproject.toml" <<'PY'
import sys, tomllib
with open(sys.argv[1], "rb") as f:
    print(" ".join(sorted(set(tomllib.load(f)["tool"]["setuptools"]["package-dir"].values()))))
PY
)"
  # The image serves the API too: its watch and job pages need hls.js (api/static/vendor/).
  bash "$REPO_DIR/scripts/install-web-assets.sh" >&2
  (cd "$REPO_DIR" && tar -c --exclude='__pycache__' --exclude='*.pyc' --exclude='*.egg-info' \
      pyproject.toml $( [ -f README.md ] && echo README.md ) $dirs) | tar -x -C "$ctx/project"
  [ -f "$ctx/project/README.md" ] || echo "# atproto-video" >"$ctx/project/README.md"
  cp "$IMAGE_DIR/Dockerfile" "$ctx/Dockerfile"
  wheelhouse "$ctx/requirements.txt" "$ctx/wheels"
  local t0; t0=$(date +%s)
  ilog "docker build $IMAGE (context $ctx)"
  "$DOCKER" build --network host --build-arg "BASE_IMAGE=$BASE_IMAGE" \
    --label "org.opencontainers.image.version=$TAG" -t "$IMAGE" "$ctx" >&2
  rm -rf "$ctx"
  ilog "built $IMAGE in $(( $(date +%s) - t0 ))s"
}

# The chart's quickstart Postgres (postgresql.enabled): Debian's postgresql-15 on the same base,
# behind an entrypoint with the official image's interface. No Python, no wheels.
build_postgres() {
  [ "$(id -u)" = 0 ] || idie "transcoder-image/build.sh must run as root (private dockerd)"
  use_dockerd
  bash "$IMAGE_DIR/make-base.sh"
  local t0; t0=$(date +%s)
  ilog "docker build $IMAGE (context $IMAGE_DIR/postgres)"
  "$DOCKER" build --network host --build-arg "BASE_IMAGE=$BASE_IMAGE" \
    -t "$IMAGE" "$IMAGE_DIR/postgres" >&2
  ilog "built $IMAGE in $(( $(date +%s) - t0 ))s"
}

import_image() {
  [ -S "$CLUSTER_SOCK" ] || idie "cluster containerd socket $CLUSTER_SOCK not found; run cluster/up.sh first"
  use_dockerd
  "$DOCKER" image inspect "$IMAGE" >/dev/null 2>&1 || idie "$IMAGE not built; run transcoder-image/build.sh"
  local id ctr=(ctr -a "$CLUSTER_SOCK" -n k8s.io)
  id="$("$DOCKER" image inspect -f '{{.Id}}' "$IMAGE")"
  # Skip when containerd already holds exactly this build (label set by a previous import).
  if "${ctr[@]}" images ls "name==$IMAGE" 2>/dev/null | grep -F "atproto-video.docker-id=$id" >/dev/null; then
    ilog "$IMAGE ($id) already in the cluster containerd"
    return 0
  fi
  local tar="$CACHE_ROOT/images/$(basename "${IMAGE%:*}")-${IMAGE##*:}.tar"
  mkdir -p "$(dirname "$tar")"
  "$DOCKER" save -o "$tar.tmp" "$IMAGE"; mv "$tar.tmp" "$tar"
  "${ctr[@]}" images import "$tar" >&2
  rm -f "$tar"
  "${ctr[@]}" images ls -q | grep -x "$IMAGE" >/dev/null \
    || idie "$IMAGE not visible in the cluster containerd after import"
  "${ctr[@]}" images label "$IMAGE" "atproto-video.docker-id=$id" >/dev/null
  ilog "imported $IMAGE into $CLUSTER_SOCK (namespace k8s.io)"
}

case "${1:-}" in
  "") build; echo "$IMAGE" ;;
  --import) build; import_image; echo "$IMAGE" ;;
  import) import_image; echo "$IMAGE" ;;
  tag) echo "$IMAGE" ;;
  postgres)
    IMAGE="$POSTGRES_IMAGE"
    case "${2:-}" in
      "") build_postgres ;;
      --import) build_postgres; import_image ;;
      import) import_image ;;
      tag) ;;
      *) echo "usage: $0 postgres [--import|import|tag]" >&2; exit 2 ;;
    esac
    echo "$IMAGE" ;;
  *) echo "usage: $0 [--import|import|tag] | postgres [--import|import|tag]" >&2; exit 2 ;;
esac
