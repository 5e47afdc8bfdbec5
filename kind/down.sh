#!/usr/bin/env bash
# `make kind-down`: delete the kind cluster, the "kind" network (its bridge), stop kind's dockerd
# by its PID and remove the host rules kind/network.sh added. Keeps the images in kind's
# dockerd data-root and the build caches. Idempotent.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
export PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:$PATH"
[ "$(id -u)" = 0 ] || kdie "kind/down.sh must run as root"
if kdocker info >/dev/null 2>&1; then
  if [ -x "$KIND_BIN" ] && kind_ get clusters 2>/dev/null | grep -x "$KIND_CLUSTER" >/dev/null; then
    klog "kind delete cluster $KIND_CLUSTER"
    kind_ delete cluster --name "$KIND_CLUSTER" --kubeconfig "$KIND_KUBECONFIG" >&2
  fi
  if kdocker network inspect "$KIND_NETWORK" >/dev/null 2>&1; then
    kdocker network rm "$KIND_NETWORK" >/dev/null
  fi
fi
VIDEO_DOCKER_STATE="$KIND_DOCKER_STATE" bash "$REPO_DIR/transcoder-image/dockerd.sh" stop
rm -f "$KIND_KUBECONFIG"
if ip link show "$KIND_BRIDGE" >/dev/null 2>&1; then
  kdie "bridge $KIND_BRIDGE still present after kind's dockerd stopped; rules left in place"
fi
bash "$KIND_DIR/network.sh" remove
