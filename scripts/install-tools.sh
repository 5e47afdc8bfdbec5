#!/usr/bin/env bash
# Build the Go tools the tests use (helm, the SeaweedFS S3 server) from the Go module proxy into
# a cache outside the repo, once per version. Prints nothing on a warm run.
# Usage: install-tools.sh [--print-helm | --print-weed]
set -euo pipefail
# go_bin: the Go >= 1.24 that cluster/deps.sh checks for or fetches (one definition).
. "$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/cluster/lib.sh"
HELM_VERSION=v3.22.0
CACHE=${ATPROTO_VIDEO_CACHE_DIR:-/var/cache/atproto-video}/tools
helm_bin="$CACHE/helm-$HELM_VERSION/helm"
if [ ! -x "$helm_bin" ]; then
  go="$(go_bin)"
  [ -n "$go" ] || { echo "install-tools: Go >= 1.24 is required to build helm (bash cluster/deps.sh fetches one)" >&2; exit 1; }
  echo "install-tools: building helm $HELM_VERSION (first time only, a few minutes)" >&2
  mkdir -p "$CACHE"
  tmp="$CACHE/.helm-$HELM_VERSION-$$"
  GOBIN="$tmp" CGO_ENABLED=0 "$go" install "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" >&2
  mkdir -p "$(dirname "$helm_bin")"
  mv "$tmp/helm" "$helm_bin"
  rm -rf "$tmp"
fi

# SeaweedFS publishes pseudo-versions only, and its go.mod carries a `replace` that
# `go install pkg@version` refuses, so it builds inside a throwaway module that repeats it.
WEED_VERSION=v0.0.0-20261109003541-7506e5f91cd6
weed_bin="$CACHE/weed-$WEED_VERSION/weed"
if [ ! -x "$weed_bin" ]; then
  go="$(go_bin)"
  [ -n "$go" ] || { echo "install-tools: Go >= 1.24 is required to build weed (bash cluster/deps.sh fetches one)" >&2; exit 1; }
  echo "install-tools: building the SeaweedFS S3 server (first time only, about 10 minutes)" >&2
  tmp="$CACHE/.weed-$$"
  rm -rf "$tmp" && mkdir -p "$tmp"
  printf 'module atproto-video/weed\n\ngo 1.24\n\nrequire github.com/seaweedfs/seaweedfs %s\n\nreplace github.com/tyler-smith/go-bip39 => github.com/cosmos/go-bip39 v1.0.0\n' \
    "$WEED_VERSION" >"$tmp/go.mod"
  (cd "$tmp" && CGO_ENABLED=0 GOFLAGS=-mod=mod "$go" build -o weed github.com/seaweedfs/seaweedfs/weed) >&2
  mkdir -p "$(dirname "$weed_bin")"
  mv "$tmp/weed" "$weed_bin"
  rm -rf "$tmp"
fi
case "${1:-}" in
  --print-helm) echo "$helm_bin" ;;
  --print-weed) echo "$weed_bin" ;;
esac
exit 0
