#!/usr/bin/env bash
# Browser libraries the service's pages serve (api/pages.py): hls.js from the npm registry, at
# the version pinned by api/static/npm/package-lock.json, installed OUTSIDE the repo in a cache
# keyed by the lock file ($ATPROTO_VIDEO_CACHE_DIR, default /var/cache/atproto-video when
# writable, else ~/.cache/atproto-video: web-npm/<key>/node_modules), then copied into
# api/static/vendor/ (gitignored). The pages load it from the service itself: no CDN at run time.
# Run by `make deps` and by transcoder-image/build.sh (the image serves the API too).
# Idempotent; a warm run only compares two files. Safe to run concurrently (flock).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
NPM_DIR="$ROOT/api/static/npm"
VENDOR="$ROOT/api/static/vendor"
log() { echo "install-web-assets: $*" >&2; }

cache_root() {
  if [ -n "${ATPROTO_VIDEO_CACHE_DIR:-}" ]; then echo "$ATPROTO_VIDEO_CACHE_DIR"; return; fi
  if mkdir -p /var/cache/atproto-video 2>/dev/null && [ -w /var/cache/atproto-video ]; then
    echo /var/cache/atproto-video
  else
    echo "${XDG_CACHE_HOME:-$HOME/.cache}/atproto-video"
  fi
}

if ! command -v npm >/dev/null; then
  log "npm missing: installing Debian's nodejs and npm"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
fi

key=$(sha256sum "$NPM_DIR/package-lock.json" | cut -c1-16)
root="$(cache_root)/web-npm"
dest="$root/$key"
mkdir -p "$root"
if [ ! -f "$dest/.complete" ]; then
  exec 9>"$root/.lock"
  flock 9
  if [ ! -f "$dest/.complete" ]; then
    stage="$root/.stage-$key-$$"
    rm -rf "$stage" "$dest"
    mkdir -p "$stage"
    cp "$NPM_DIR/package.json" "$NPM_DIR/package-lock.json" "$stage/"
    log "npm ci into $dest"
    (cd "$stage" && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error >&2)
    touch "$stage/.complete"
    mv "$stage" "$dest"
  fi
  exec 9>&-
fi

mkdir -p "$VENDOR"
src="$dest/node_modules/hls.js"
for pair in "dist/hls.min.js:hls.min.js" "LICENSE:hls.js.LICENSE"; do
  from="$src/${pair%%:*}" to="$VENDOR/${pair##*:}"
  [ -f "$from" ] || { log "missing $from"; exit 1; }
  cmp -s "$from" "$to" 2>/dev/null || { cp "$from" "$to.tmp.$$"; mv "$to.tmp.$$" "$to"; }
done
version=$(cd "$src" && node -p 'require("./package.json").version')
echo "$version" > "$VENDOR/hls.version.tmp.$$"; mv "$VENDOR/hls.version.tmp.$$" "$VENDOR/hls.version"
log "hls.js $version in $VENDOR"
