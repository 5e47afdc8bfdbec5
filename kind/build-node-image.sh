#!/usr/bin/env bash
# Build the kind node image localhost/atproto-video-kind-node:v<K8S>-<hash> in kind's dockerd,
# with no container registry:
#   - the project's debootstrap base (transcoder-image/make-base.sh), Debian's systemd,
#     containerd 1.6, runc and CNI plugins (bridge, host-local, portmap, loopback);
#   - kubelet, kubeadm and kubectl from cluster/build.sh (the pinned version, built from the Go
#     module proxy);
#   - kind's entrypoint, unit files and /kind/bin scripts from the sigs.k8s.io/kind module of the
#     kind version used (Go module proxy), with this directory's containerd config and units;
#   - the control-plane images kubeadm asks for, made here from the same binaries and tagged with
#     their registry.k8s.io names: kube-apiserver, kube-controller-manager, kube-scheduler (one
#     static binary each), pause (cluster/pause), etcd (Debian's 3.4.23 on the base image);
#     preloaded into the image's containerd (`ctr import --no-unpack`, as `kind build` does).
#     kube-proxy and CoreDNS are not built: kind/config.yaml turns both off (the chart's kind
#     values put the project's pods on the node's network and need neither).
#
#   kind/build-node-image.sh        # build unless the image for this hash exists; print its name
#   kind/build-node-image.sh tag    # print the name only
# Needs kind's dockerd running (kind/up.sh starts it; or VIDEO_KIND_DOCKER_STATE's daemon).
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
export PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:$PATH"
BASE_IMAGE="${VIDEO_BASE_IMAGE:-localhost/atproto-video-base:bookworm}"

node_hash() {  # everything that goes into the image, by content
  (cd "$REPO_DIR" && find kind/build-node-image.sh kind/node cluster/pause cluster/k8s/go.mod \
     -type f | LC_ALL=C sort | xargs cat; echo "$KIND_VERSION $K8S $ETCD_TAG $PAUSE_TAG") \
    | sha256sum | cut -c1-12
}
IMAGE="$KIND_NODE_REPO:v$K8S-$(node_hash)"
[ "${1:-}" = tag ] && { echo "$IMAGE"; exit 0; }

[ "$(id -u)" = 0 ] || kdie "kind/build-node-image.sh must run as root"
kdocker info >/dev/null 2>&1 || kdie "kind's dockerd is not running ($KIND_DOCKER_HOST); kind/up.sh starts it"
if kdocker image inspect "$IMAGE" >/dev/null 2>&1; then
  klog "$IMAGE already built"; echo "$IMAGE"; exit 0
fi
t0=$(date +%s)

bash "$REPO_DIR/cluster/build.sh" >&2     # kubelet, kubeadm, kubectl, control-plane binaries
GO="$(go_bin)"; [ -n "$GO" ] || kdie "no Go >= 1.24 (cluster/deps.sh fetches one)"
# kind's node files, from the module of the kind version used (downloaded by the Go toolchain).
KIND_MOD="$(cd /tmp && GOFLAGS= GOTOOLCHAIN=local "$GO" mod download -json "sigs.k8s.io/kind@$KIND_VERSION" \
  | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
[ -f "$KIND_MOD/images/base/files/usr/local/bin/entrypoint" ] \
  || kdie "sigs.k8s.io/kind@$KIND_VERSION not downloadable through the Go module proxy"

# The base: from the image-building dockerd if it has it (seconds), else debootstrap here.
if ! kdocker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
  if DOCKER_HOST="unix://${VIDEO_DOCKER_STATE:-/var/lib/atproto-video/docker}/docker.sock" \
       /usr/bin/docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
    klog "copying $BASE_IMAGE from the image-building dockerd"
    DOCKER_HOST="unix://${VIDEO_DOCKER_STATE:-/var/lib/atproto-video/docker}/docker.sock" \
      /usr/bin/docker save "$BASE_IMAGE" | kdocker load >&2
  else
    VIDEO_DOCKER_STATE="$KIND_DOCKER_STATE" bash "$REPO_DIR/transcoder-image/make-base.sh"
  fi
fi

mkdir -p "$CACHE_ROOT"
CTX="$(mktemp -d "$CACHE_ROOT/kind-node-context.XXXXXX")"
PRELOAD=""
cleanup() {
  rm -rf "$CTX"
  [ -n "$PRELOAD" ] && kdocker rm -f "$PRELOAD" >/dev/null 2>&1 || true
}
trap cleanup EXIT

# ---- the control-plane images
mkdir -p "$CTX/bin" "$CTX/kind-files/usr/local/bin" "$CTX/pause"
static_image() {  # static_image NAME:TAG BINARY [ENTRYPOINT]
  local dir="$CTX/img-${1//[:\/]/_}"
  mkdir -p "$dir/usr/local/bin"
  cp "$2" "$dir/usr/local/bin/"
  local change=(--change 'ENV PATH=/usr/local/bin')
  [ -n "${3:-}" ] && change+=(--change "ENTRYPOINT [\"$3\"]" --change 'USER 65535:65535')
  tar --numeric-owner --owner=0 --group=0 -C "$dir" -c . | kdocker import "${change[@]}" - "$1" >/dev/null
  rm -rf "$dir"
}
for c in kube-apiserver kube-controller-manager kube-scheduler; do
  static_image "registry.k8s.io/$c:v$K8S" "$BIN/$c"
done
cp "$REPO_DIR/cluster/pause/main.go" "$REPO_DIR/cluster/pause/go.mod" "$CTX/pause/"
(cd "$CTX/pause" && CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS= "$GO" build -trimpath -ldflags='-s -w' -o "$CTX/pause/pause" .)
static_image "registry.k8s.io/pause:$PAUSE_TAG" "$CTX/pause/pause" /usr/local/bin/pause
command -v etcd >/dev/null || bash "$REPO_DIR/cluster/deps.sh" >&2
mkdir -p "$CTX/etcd/bin"; cp "$(command -v etcd)" "$CTX/etcd/bin/etcd"
cp "$KIND_DIR/node/Dockerfile.etcd" "$CTX/etcd/Dockerfile"
kdocker build --network none --build-arg "BASE_IMAGE=$BASE_IMAGE" -t "registry.k8s.io/etcd:$ETCD_TAG" "$CTX/etcd" >&2
COMPONENTS="registry.k8s.io/kube-apiserver:v$K8S registry.k8s.io/kube-controller-manager:v$K8S
  registry.k8s.io/kube-scheduler:v$K8S registry.k8s.io/pause:$PAUSE_TAG registry.k8s.io/etcd:$ETCD_TAG"

# ---- the node image
F="$KIND_MOD/images/base/files"
cp "$F/usr/local/bin/entrypoint" "$F/usr/local/bin/clean-install" "$CTX/kind-files/usr/local/bin/"
cp -r "$F/kind" "$CTX/kind-files/kind"
cp -r "$F/etc" "$CTX/kind-files/etc"
chmod -R u+w "$CTX/kind-files"
echo "v$K8S" >"$CTX/kind-files/kind/version"
cp "$BIN/kubelet" "$BIN/kubeadm" "$BIN/kubectl" "$CTX/bin/"
mkdir -p "$CTX/node"; cp -r "$KIND_DIR/node/." "$CTX/node/"
cp "$KIND_DIR/node/Dockerfile" "$CTX/Dockerfile"
klog "docker build of the node image (apt: systemd, containerd, runc, CNI plugins)"
kdocker build --network host --build-arg "BASE_IMAGE=$BASE_IMAGE" -t "$IMAGE-unloaded" "$CTX" >&2

# ---- preload: containerd in a container of the image, `ctr import --no-unpack`, commit.
PRELOAD="$(kdocker run -d --privileged --network none --entrypoint sleep "$IMAGE-unloaded" infinity)"
kdocker exec "$PRELOAD" bash -c 'containerd >/var/log/containerd-preload.log 2>&1 & echo $! >/run/preload-containerd.pid'
for i in $(seq 1 150); do
  kdocker exec "$PRELOAD" ctr version >/dev/null 2>&1 && break
  sleep 0.2
done
for img in $COMPONENTS; do
  klog "preloading $img"
  kdocker save "$img" | kdocker exec -i "$PRELOAD" ctr --namespace=k8s.io images import \
    --label=io.cri-containerd.pinned=pinned --all-platforms --no-unpack --digests - >&2
done
# (`sleep` as PID 1 reaps nothing: containerd stays a zombie once it has exited.)
kdocker exec "$PRELOAD" bash -c 'p="$(cat /run/preload-containerd.pid)"; kill "$p"
  while [ -e "/proc/$p" ] && [ "$(cut -d" " -f3 "/proc/$p/stat" 2>/dev/null)" != Z ]; do sleep 0.2; done
  rm -f /run/preload-containerd.pid /var/log/containerd-preload.log'
# The container keeps the image's ENV and STOPSIGNAL; only the entrypoint was replaced.
kdocker commit \
  --change 'ENTRYPOINT ["/usr/local/bin/entrypoint", "/sbin/init"]' --change 'CMD []' \
  "$PRELOAD" "$IMAGE" >/dev/null
[ "$(kdocker image inspect -f '{{.Config.StopSignal}}' "$IMAGE")" = "SIGRTMIN+3" ] \
  || kdie "$IMAGE lost its stop signal"
kdocker rm -f "$PRELOAD" >/dev/null; PRELOAD=""
kdocker rmi "$IMAGE-unloaded" $COMPONENTS >/dev/null
# Older node images (about 1 GB each) and dangling layers of kind's own engine.
for old in $(kdocker images "$KIND_NODE_REPO" --format '{{.Repository}}:{{.Tag}}' | grep -vx "$IMAGE" || true); do
  kdocker rmi "$old" >/dev/null 2>&1 || true
done
kdocker image prune -f >/dev/null
klog "built $IMAGE in $(( $(date +%s) - t0 ))s"
echo "$IMAGE"
