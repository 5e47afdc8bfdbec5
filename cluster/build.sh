#!/usr/bin/env bash
# Build kube-apiserver, kube-controller-manager, kube-scheduler, kubelet, kubectl and kubeadm
# (kubeadm: for the kind node image, kind/build-node-image.sh) from the Go module proxy, at the
# version pinned in cluster/k8s/go.mod, into $BIN
# (default /var/cache/atproto-video/k8s/v$K8S/bin; override with VIDEO_K8S_BIN).
# Builds only the binaries that are missing (all of them if kubelet reports another version).
#
#   cluster/build.sh                 build (or reuse) the pinned version
#   cluster/build.sh --pin 1.34.10   rewrite cluster/k8s/go.mod + go.sum for another version
#
# Why a tools module: k8s.io/kubernetes requires its staging modules at v0.0.0 with
# `replace => ./staging/...`, so `go install k8s.io/kubernetes/cmd/kubelet@v1.34.x` fails;
# the tools module replaces each staging module with its published v0.34.x tag.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

CMDS="kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl kubeadm"
MODDIR="$CLUSTER_DIR/k8s"

GO="$(go_bin)"
if [ -z "$GO" ]; then
  bash "$CLUSTER_DIR/deps.sh"
  GO="$(go_bin)"
fi
[ -n "$GO" ] || die "no Go >= 1.24 available (cluster/deps.sh failed?)"
export GOTOOLCHAIN="${GOTOOLCHAIN:-local}"
export GOFLAGS="${GOFLAGS:-}"

pin() {  # pin VERSION: regenerate go.mod/go.sum in a temp dir, then copy them in
  local v="$1" tmp staging gomod
  tmp="$(mktemp -d)"
  gomod="$(cd "$tmp" && "$GO" mod download -json "k8s.io/kubernetes@v$v" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')"
  [ -f "$gomod" ] || die "k8s.io/kubernetes@v$v not downloadable/verifiable through the proxy"
  staging="$(awk '/=> \.\/staging\/src\//{sub("k8s.io/","",$1); print $1}' "$gomod")"
  {
    printf '// Pin file for the test cluster binaries (built by cluster/build.sh).\n'
    printf '// Regenerate with: cluster/build.sh --pin %s\n' "$v"
    printf 'module local/atproto-video-k8s-bins\n\ngo 1.24.0\n\nrequire k8s.io/kubernetes v%s\n\nreplace (\n' "$v"
    for m in $staging; do printf '\tk8s.io/%s => k8s.io/%s v0.%s\n' "$m" "$m" "${v#1.}"; done
    printf ')\n\ntool (\n'
    for c in $CMDS; do printf '\tk8s.io/kubernetes/cmd/%s\n' "$c"; done
    printf ')\n'
  } > "$tmp/go.mod"
  (cd "$tmp" && "$GO" mod tidy)
  cp "$tmp/go.mod" "$tmp/go.sum" "$MODDIR/"
  rm -rf "$tmp"
  log "pinned k8s.io/kubernetes v$v in $MODDIR/go.mod"
}

if [ "${1:-}" = "--pin" ]; then
  [ -n "${2:-}" ] || die "usage: cluster/build.sh --pin 1.34.x"
  mkdir -p "$MODDIR"; pin "$2"; exit 0
fi

have_all() {
  local c
  for c in $CMDS; do [ -x "$BIN/$c" ] || return 1; done
  "$BIN/kubelet" --version 2>/dev/null | grep -x "Kubernetes v$K8S" >/dev/null
}
if have_all; then
  log "k8s v$K8S binaries present in $BIN (skipping build)"
  exit 0
fi
# Only what is missing (a cache from before kubeadm was added needs kubeadm alone, ~3 min warm).
MISSING=""
if "$BIN/kubelet" --version 2>/dev/null | grep -x "Kubernetes v$K8S" >/dev/null; then
  for c in $CMDS; do [ -x "$BIN/$c" ] || MISSING="$MISSING $c"; done
else
  MISSING="$CMDS"
fi

[ -f "$MODDIR/go.mod" ] || die "$MODDIR/go.mod missing; run cluster/build.sh --pin 1.34.x"
# Build from a copy of the pin file so the repository is never written to.
WORK="$CACHE_ROOT/k8s/v$K8S/src"
rm -rf "$WORK"; mkdir -p "$WORK" "$BIN"
cp "$MODDIR/go.mod" "$MODDIR/go.sum" "$WORK/"
MINOR="$(echo "$K8S" | cut -d. -f2)"
NOW="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
LDFLAGS="-s -w \
 -X k8s.io/component-base/version.gitVersion=v$K8S \
 -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$MINOR \
 -X k8s.io/component-base/version.gitTreeState=clean \
 -X k8s.io/component-base/version.buildDate=$NOW \
 -X k8s.io/client-go/pkg/version.gitVersion=v$K8S \
 -X k8s.io/client-go/pkg/version.gitMajor=1 -X k8s.io/client-go/pkg/version.gitMinor=$MINOR"
start=$(date +%s)
log "building k8s v$K8S ($MISSING) with $("$GO" version) into $BIN; this takes 15-30 min cold"
(
  cd "$WORK"
  "$GO" mod download
  CGO_ENABLED=0 "$GO" build -mod=readonly -trimpath -ldflags "$LDFLAGS" -o "$BIN/.new/" \
    $(for c in $MISSING; do printf 'k8s.io/kubernetes/cmd/%s ' "$c"; done)
)
for c in $MISSING; do mv -f "$BIN/.new/$c" "$BIN/$c"; done
rmdir "$BIN/.new"
have_all || die "built binaries do not report v$K8S: $("$BIN/kubelet" --version 2>&1)"
log "built k8s v$K8S in $(( $(date +%s) - start ))s"
