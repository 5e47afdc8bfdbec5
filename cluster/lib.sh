# shellcheck shell=bash
# Shared settings for cluster/{deps,build,up,down}.sh. Source it; do not run it.
# Everything here is overridable through the environment.

CLUSTER_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(cd "$CLUSTER_DIR/.." && pwd)"

# The Kubernetes version is the one pinned in cluster/k8s/go.mod (single source of truth).
K8S="${VIDEO_K8S_VERSION:-$(awk '{for(i=1;i<NF;i++) if($i=="k8s.io/kubernetes" && $(i+1) ~ /^v1\./){v=$(i+1); sub(/^v/,"",v); print v; exit}}' "$CLUSTER_DIR/k8s/go.mod" 2>/dev/null || true)}"
CACHE_ROOT="${VIDEO_CACHE_DIR:-/var/cache/atproto-video}"
BIN="${VIDEO_K8S_BIN:-$CACHE_ROOT/k8s/v$K8S/bin}"
STATE="${VIDEO_CLUSTER_STATE:-/var/lib/atproto-video/cluster}"
PKI="$STATE/pki"
SOCK="$STATE/containerd/containerd.sock"
SERVICE_CIDR="${VIDEO_SERVICE_CIDR:-10.0.0.0/24}"
# Addresses for pods without hostNetwork (isolated namespaces, see cluster/cni/isolated).
POD_CIDR="${VIDEO_POD_CIDR:-10.0.128.0/17}"
NODE=127.0.0.1
PAUSE_IMAGE="localhost/pause:3.10"
# Go used to build the binaries and the pause image (cluster/deps.sh fetches one if missing).
GO_TOOLCHAIN_DIR="$CACHE_ROOT/go"

log() { printf '[cluster %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf '[cluster] ERROR: %s\n' "$*" >&2; exit 1; }

# go_bin: print the path of a usable go (>= 1.24), or nothing.
go_bin() {
  local g v
  for g in "$(command -v go 2>/dev/null || true)" /usr/local/go/bin/go "$GO_TOOLCHAIN_DIR/bin/go"; do
    [ -n "$g" ] && [ -x "$g" ] || continue
    v="$("$g" env GOVERSION 2>/dev/null || true)"          # e.g. go1.26.8
    v="${v#go}"
    case "$v" in
      1.2[4-9]*|1.[3-9][0-9]*) echo "$g"; return 0 ;;
    esac
  done
  return 0
}

kctl() { "$BIN/kubectl" --kubeconfig "$STATE/admin.kubeconfig" "$@"; }

pid_alive() {  # pid_alive NAME -> 0 if the recorded PID runs
  local p
  p="$(cat "$STATE/pid/$1" 2>/dev/null)" || return 1
  [ -n "$p" ] && kill -0 "$p" 2>/dev/null
}

case "$STATE" in
  /*/*) ;;
  *) die "VIDEO_CLUSTER_STATE must be an absolute path at least two levels deep (got '$STATE')" ;;
esac
STATE="${STATE%/}"

# ------------------------------------------------------------------ locking and leases
# Several test sessions may share this host's cluster. up.sh/down.sh serialize on a lock file
# next to the state dir; test sessions take leases so that the last one out tears down a
# cluster that a test session started (a cluster started by hand is never torn down by tests).
LOCK_FILE="$STATE.lock"
LEASES="$STATE.leases"

take_lock() {
  [ "${VIDEO_CLUSTER_LOCKED:-0}" = 1 ] && return 0   # our parent (up.sh -> down.sh) holds it
  mkdir -p "$(dirname "$STATE")"
  exec 9>"$LOCK_FILE"
  if ! flock -n 9; then
    log "waiting for another cluster/up.sh or down.sh to finish (lock $LOCK_FILE)"
    flock -w 1800 9 || die "timed out waiting for $LOCK_FILE"
  fi
  export VIDEO_CLUSTER_LOCKED=1
}

# proc_start_time, check_lease_id, add_lease, live_leases (shared with the private dockerd).
. "$CLUSTER_DIR/lease.sh"
