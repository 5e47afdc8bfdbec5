#!/usr/bin/env bash
# Install what the test cluster and the worker image need on a fresh Debian 12 host:
# Debian packages from the apt mirror, and a Go toolchain (from the Go module proxy,
# as the golang.org/toolchain module) when no Go >= 1.24 is on the machine.
# Idempotent: does nothing when everything is present.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

[ "$(id -u)" = 0 ] || die "cluster/deps.sh must run as root (apt-get, containerd, kubelet)"

# command -> Debian package
declare -A NEED=(
  [containerd]=containerd [runc]=runc [etcd]=etcd-server [etcdctl]=etcd-client
  [umoci]=umoci [debootstrap]=debootstrap [dockerd]=docker.io [ffmpeg]=ffmpeg
  [openssl]=openssl [curl]=curl [unzip]=unzip [ip]=iproute2 [tar]=tar
)
missing=()
for c in "${!NEED[@]}"; do
  PATH="$PATH:/usr/sbin:/sbin" command -v "$c" >/dev/null 2>&1 || missing+=("${NEED[$c]}")
done
[ -x /usr/lib/cni/loopback ] || missing+=(containernetworking-plugins)
command -v flock >/dev/null 2>&1 || missing+=(util-linux)
command -v nsenter >/dev/null 2>&1 || missing+=(util-linux)
# the worker image build makes a venv for pip when python3 has none (Debian's python3)
/usr/bin/python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || missing+=(python3-venv)
if [ "${#missing[@]}" -gt 0 ]; then
  log "apt-get install ${missing[*]}"
  # never run two apt-gets at once (another one may be running on a shared host)
  for _ in $(seq 600); do
    fuser /var/lib/dpkg/lock-frontend >/dev/null 2>&1 || break
    sleep 1
  done
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ -z "$(go_bin)" ]; then
  GO_VERSION="${VIDEO_GO_VERSION:-1.25.14}"
  log "no Go >= 1.24 found; fetching go$GO_VERSION from the Go module proxy (golang.org/toolchain)"
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  proxy="${GOPROXY:-https://proxy.golang.org}"; proxy="${proxy%%,*}"
  curl -fsSL -o "$tmp/go.zip" "$proxy/golang.org/toolchain/@v/v0.0.1-go$GO_VERSION.linux-amd64.zip"
  unzip -q "$tmp/go.zip" -d "$tmp/x"
  rm -rf "$GO_TOOLCHAIN_DIR"; mkdir -p "$(dirname "$GO_TOOLCHAIN_DIR")"
  mv "$tmp/x/golang.org/toolchain@v0.0.1-go$GO_VERSION.linux-amd64" "$GO_TOOLCHAIN_DIR"
  chmod -R u+rwX,go+rX "$GO_TOOLCHAIN_DIR"
  chmod +x "$GO_TOOLCHAIN_DIR"/bin/* "$GO_TOOLCHAIN_DIR"/pkg/tool/*/* 2>/dev/null || true
fi
log "deps ok (go: $(go_bin))"
