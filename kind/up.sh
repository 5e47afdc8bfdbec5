#!/usr/bin/env bash
# `make kind-up`: a one-node kind cluster with the chart installed, built and run with no
# container registry and no packet leaving the machine.
#   1. the host's DROP rules for kind's bridge, with IP forwarding checked off (kind/network.sh),
#      before any daemon or container starts;
#   2. kind's own dockerd (transcoder-image/dockerd.sh with VIDEO_DOCKER_STATE=$KIND_DOCKER_STATE:
#      own data-root/exec-root/socket/pidfile, --iptables=false --ip-forward=false --ip-masq=false);
#   3. kind from the Go module proxy (sigs.k8s.io/kind@$KIND_VERSION), the node image
#      (kind/build-node-image.sh), the "kind" network on the bridge $KIND_BRIDGE, no masquerading;
#   4. `kind create cluster` with kind/config.yaml; the worker and quickstart Postgres images
#      (transcoder-image/build.sh) loaded with `kind load image-archive`;
#   5. `helm install` with charts/atproto-video/values-kind.yaml; prints how to upload.
# Idempotent: an existing cluster is reused (the chart is upgraded). kind/down.sh undoes it all.
# Env: VIDEO_WORKER_TAG (worker image tag), VIDEO_KIND_RELEASE (helm release, default video),
#      VIDEO_KIND_NAMESPACE (default atproto-video), and those of kind/lib.sh.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
export PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:$PATH"
[ "$(id -u)" = 0 ] || kdie "kind/up.sh must run as root (a private dockerd, iptables rules)"
RELEASE="${VIDEO_KIND_RELEASE:-video}"
NAMESPACE="${VIDEO_KIND_NAMESPACE:-atproto-video}"
T0=$(date +%s)
step() { klog "[$(( $(date +%s) - T0 ))s] $*"; }

# 1. Rules first.
bash "$KIND_DIR/network.sh" apply

# 2. kind's dockerd (the userland proxy publishes the node's API server and the chart's API on
#    127.0.0.1; with --iptables=false it is the only way in, and there is no way out).
VIDEO_DOCKER_STATE="$KIND_DOCKER_STATE" VIDEO_DOCKERD_USERLAND_PROXY=true \
  VIDEO_DOCKERD_RUNTIME="$KIND_DIR/runc-bounded" bash "$REPO_DIR/transcoder-image/dockerd.sh" start >/dev/null

# 3. kind, the node image, the network.
if [ ! -x "$KIND_BIN" ]; then
  GO="$(go_bin)"; [ -n "$GO" ] || { bash "$REPO_DIR/cluster/deps.sh"; GO="$(go_bin)"; }
  step "building kind $KIND_VERSION from the Go module proxy"
  tmp="$(dirname "$KIND_BIN")/.build-$$"; mkdir -p "$tmp"
  (cd /tmp && GOBIN="$tmp" CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS= "$GO" install "sigs.k8s.io/kind@$KIND_VERSION") >&2
  mv "$tmp/kind" "$KIND_BIN"; rmdir "$tmp"
fi
NODE_IMAGE="${VIDEO_KIND_NODE_IMAGE:-$(bash "$KIND_DIR/build-node-image.sh")}"
step "node image $NODE_IMAGE"
if ! kdocker network inspect "$KIND_NETWORK" >/dev/null 2>&1; then
  kdocker network create -d bridge --subnet "$KIND_SUBNET" \
    -o "com.docker.network.bridge.name=$KIND_BRIDGE" \
    -o com.docker.network.bridge.enable_ip_masquerade=false \
    "$KIND_NETWORK" >/dev/null
fi
bash "$KIND_DIR/network.sh" check || kdie "the host's rules for $KIND_BRIDGE are not in place; not starting any container"

# 4. The cluster and the images.
if kind_ get clusters 2>/dev/null | grep -x "$KIND_CLUSTER" >/dev/null; then
  step "kind cluster $KIND_CLUSTER exists"
  kind_ export kubeconfig --name "$KIND_CLUSTER" --kubeconfig "$KIND_KUBECONFIG" >&2
else
  step "kind create cluster $KIND_CLUSTER"
  kind_ create cluster --name "$KIND_CLUSTER" --image "$NODE_IMAGE" \
    --config "$KIND_DIR/config.yaml" --kubeconfig "$KIND_KUBECONFIG" --wait 5m >&2
fi
NODE="$KIND_CLUSTER-control-plane"
KUBECTL=("$BIN/kubectl" --kubeconfig "$KIND_KUBECONFIG")

WORKER_IMAGE="$(bash "$REPO_DIR/transcoder-image/build.sh")"
POSTGRES_IMAGE="$(bash "$REPO_DIR/transcoder-image/build.sh" postgres)"
eval "$(bash "$REPO_DIR/transcoder-image/dockerd.sh" start --lease "$$:kind-up")"
trap 'bash "$REPO_DIR/transcoder-image/dockerd.sh" stop --release "$$:kind-up" >&2 || true' EXIT
mkdir -p "$CACHE_ROOT/images"
for img in "$WORKER_IMAGE" "$POSTGRES_IMAGE"; do
  id="$(/usr/bin/docker image inspect -f '{{.Id}}' "$img")"
  if kdocker exec "$NODE" ctr -n k8s.io images ls "name==$img" 2>/dev/null | grep -F "atproto-video.docker-id=$id" >/dev/null; then
    step "$img already in the node"; continue
  fi
  step "kind load image-archive $img"
  tar="$CACHE_ROOT/images/kind-load-$$.tar"
  /usr/bin/docker save -o "$tar" "$img"
  kind_ load image-archive --name "$KIND_CLUSTER" "$tar" >&2
  rm -f "$tar"
  kdocker exec "$NODE" ctr -n k8s.io images label "$img" "atproto-video.docker-id=$id" >/dev/null
done

# 5. The chart.
kdocker exec "$NODE" install -d -o 10001 -g 10001 /var/lib/atproto-video/storage
kdocker exec "$NODE" install -d -o 999 -g 999 -m 0700 /var/lib/atproto-video/postgres
HELM="$(bash "$REPO_DIR/scripts/install-tools.sh" --print-helm)"
CHART="$REPO_DIR/charts/atproto-video"
"${KUBECTL[@]}" apply -f "$CHART/crds/videojob.yaml" >&2
step "helm upgrade --install $RELEASE (namespace $NAMESPACE)"
"$HELM" --kubeconfig "$KIND_KUBECONFIG" upgrade --install "$RELEASE" "$CHART" \
  --namespace "$NAMESPACE" --create-namespace --wait --timeout 10m \
  -f "$CHART/values-kind.yaml" --set "image.tag=${WORKER_IMAGE##*:}" >&2
step "ready"
cat <<MSG

atproto-video is running on kind (cluster $KIND_CLUSTER, release $RELEASE, namespace $NAMESPACE).
  export KUBECONFIG=$KIND_KUBECONFIG
  curl http://127.0.0.1:30585/xrpc/_health
Upload a generated clip as a throwaway identity and wait until it is COMPLETED:
  $HELM test $RELEASE -n $NAMESPACE --kubeconfig $KIND_KUBECONFIG --timeout 15m
or from inside the node (any file: kubectl cp it first):
  $BIN/kubectl --kubeconfig $KIND_KUBECONFIG -n $NAMESPACE exec deploy/$RELEASE-atproto-video-api -- \\
    atproto-video try-upload http://127.0.0.1:2585 --service-did 'did:web:localhost%3A30585'
Remove everything: make kind-down
MSG
