#!/usr/bin/env bash
# Build the Go tools the tests use (helm) from the Go module proxy into a cache outside the
# repo, once per version. Prints nothing on a warm run. Usage: install-tools.sh [--print-helm]
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
[ "${1:-}" = "--print-helm" ] && echo "$helm_bin"
exit 0
