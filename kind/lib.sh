# shellcheck shell=bash
# Shared settings for kind/*.sh (a kind cluster built and run with no container registry).
# Source it; do not run it. Everything is overridable through the environment.
KIND_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(cd "$KIND_DIR/.." && pwd)"
# The cluster scripts' settings: K8S (pinned version), BIN (the built binaries), go_bin.
VIDEO_CLUSTER_STATE="${VIDEO_CLUSTER_STATE:-/var/lib/atproto-video/cluster}"
# shellcheck source=../cluster/lib.sh
. "$REPO_DIR/cluster/lib.sh"

KIND_VERSION="${VIDEO_KIND_VERSION:-v0.33.0}"
KIND_BIN="${VIDEO_KIND_BIN:-$CACHE_ROOT/tools/kind-$KIND_VERSION/kind}"
KIND_CLUSTER="${VIDEO_KIND_CLUSTER:-atproto-video}"
# kind's own Docker engine: a private dockerd beside the image-building one (its own data-root,
# exec-root, socket and pidfile), with the one bridge kind needs and no iptables, forwarding or NAT.
KIND_DOCKER_STATE="${VIDEO_KIND_DOCKER_STATE:-/var/lib/atproto-video/kind-docker}"
# The bridge of the "kind" Docker network, made by kind/up.sh before kind runs (kind reuses a
# network of that name): a fixed name so the host's FORWARD rules can name it before it exists.
KIND_BRIDGE="${VIDEO_KIND_BRIDGE:-avkind0}"
KIND_SUBNET="${VIDEO_KIND_SUBNET:-172.31.250.0/24}"
KIND_NETWORK=kind
# iptables rules carry this comment; kind/down.sh deletes exactly those.
KIND_RULE_TAG="atproto-video-kind"
# The node image: systemd, Debian's containerd/runc/CNI plugins, the pinned Kubernetes binaries
# and the control-plane images built from them, preloaded (kind/build-node-image.sh).
KIND_NODE_REPO="localhost/atproto-video-kind-node"
KIND_KUBECONFIG="${VIDEO_KIND_KUBECONFIG:-$KIND_DOCKER_STATE/kubeconfig}"
ETCD_TAG="3.4.23-0"     # Debian bookworm's etcd (kind/node/Dockerfile.etcd), tag as kubeadm reads it
PAUSE_TAG="3.10.1"      # kubeadm v1.34's pause version (constants.PauseVersion)

klog() { printf '[kind %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
kdie() { printf '[kind] ERROR: %s\n' "$*" >&2; exit 1; }

# Docker CLI talking to kind's dockerd (Debian's client, matching Debian's dockerd).
KIND_DOCKER_HOST="unix://$KIND_DOCKER_STATE/docker.sock"
kdocker() { DOCKER_HOST="$KIND_DOCKER_HOST" /usr/bin/docker "$@"; }
kind_() { DOCKER_HOST="$KIND_DOCKER_HOST" PATH="/usr/bin:$PATH" "$KIND_BIN" "$@"; }
