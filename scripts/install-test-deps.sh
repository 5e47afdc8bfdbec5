#!/usr/bin/env bash
# Install what the test fixtures in tests/support/ need that pip does not:
#   - PostgreSQL server binaries (Debian package), for tests/support/postgres.py
#   - the loopback PDS/PLC node modules (tests/support/pds/package-lock.json),
#     for tests/support/pds.py, installed OUTSIDE the repo in a cache directory
#     keyed by the lock file and the Node ABI:
#       $ATPROTO_VIDEO_CACHE_DIR/pds-node/<key>/node_modules
#     (ATPROTO_VIDEO_CACHE_DIR defaults to /var/cache/atproto-video when
#     writable, else ${XDG_CACHE_HOME:-~/.cache}/atproto-video).
#   - playwright-core (tests/support/browser/package-lock.json), which drives Debian's
#     chromium in the page tests (tests/support/browser.py), in the same cache:
#       $ATPROTO_VIDEO_CACHE_DIR/browser-node/<key>/node_modules
# Idempotent; a warm run only checks and exits. Safe to run concurrently (flock).
#
# Usage: scripts/install-test-deps.sh [--postgres] [--pds] [--browser] [--print-node-modules]
#   no component flag = all components; --print-node-modules prints the
#   node_modules path on stdout (everything else goes to stderr).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PDS_DIR="$ROOT/tests/support/pds"

BROWSER_DIR="$ROOT/tests/support/browser"

want_pg=0 want_pds=0 want_browser=0 print_nm=0
for arg in "$@"; do
  case "$arg" in
    --postgres) want_pg=1 ;;
    --pds) want_pds=1 ;;
    --browser) want_browser=1 ;;
    --print-node-modules) print_nm=1 ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "unknown argument: $arg" >&2; exit 2 ;;
  esac
done
if [ $want_pg = 0 ] && [ $want_pds = 0 ] && [ $want_browser = 0 ]; then
  want_pg=1; want_pds=1; want_browser=1
fi

log() { echo "install-test-deps: $*" >&2; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    log "need root for: $*"; return 1; fi
}

apt_updated=0
apt_install() {
  if [ $apt_updated = 0 ]; then
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q >&2
    apt_updated=1
  fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" >&2
}

# ---------------------------------------------------------------- PostgreSQL
pg_bindir() {
  local d
  for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k4 -V -r); do
    if [ -x "$d/initdb" ] && [ -x "$d/postgres" ] && [ -x "$d/pg_ctl" ]; then echo "$d"; return 0; fi
  done
  if command -v initdb >/dev/null && command -v pg_ctl >/dev/null; then
    dirname "$(command -v initdb)"; return 0
  fi
  return 1
}

install_postgres() {
  if bindir=$(pg_bindir); then
    log "postgres: $bindir"
  else
    log "postgres: installing the Debian package"
    # Tests start their own throwaway servers: do not let the package create
    # (and possibly start) a default cluster on port 5432.
    if [ ! -e /etc/postgresql-common/createcluster.conf ]; then
      as_root mkdir -p /etc/postgresql-common/createcluster.d
      echo "create_main_cluster = false" \
        | as_root tee /etc/postgresql-common/createcluster.d/atproto-video-tests.conf >/dev/null
    fi
    apt_install postgresql
    bindir=$(pg_bindir) || { log "postgres binaries still missing"; exit 1; }
    log "postgres: $bindir"
  fi
  # initdb/postgres refuse to run as root: the fixture then runs them as the
  # 'postgres' system user that the Debian package creates.
  if [ "$(id -u)" = 0 ] && ! id postgres >/dev/null 2>&1; then
    log "postgres: creating the 'postgres' system user"
    useradd --system --home-dir /var/lib/postgresql --shell /usr/sbin/nologin postgres
  fi
}

# ---------------------------------------------------------------- PDS (node)
cache_root() {
  if [ -n "${ATPROTO_VIDEO_CACHE_DIR:-}" ]; then echo "$ATPROTO_VIDEO_CACHE_DIR"; return; fi
  if mkdir -p /var/cache/atproto-video 2>/dev/null && [ -w /var/cache/atproto-video ]; then
    echo /var/cache/atproto-video
  else
    echo "${XDG_CACHE_HOME:-$HOME/.cache}/atproto-video"
  fi
}

# Must match tests/support/pds.py (node_modules_key): sha256 of the lock file,
# first 16 hex digits, then the Node module ABI (native better-sqlite3).
pds_key() {
  local h abi
  h=$(sha256sum "$PDS_DIR/package-lock.json" | cut -c1-16)
  abi=$(node -p 'process.versions.modules')
  echo "${h}-abi${abi}"
}

ensure_node() {
  if command -v node >/dev/null && command -v npm >/dev/null; then return; fi
  log "node/npm missing: installing Debian's nodejs and npm"
  apt_install nodejs npm
}

ensure_build_tools() {
  # better-sqlite3 is compiled from source (no prebuilt download possible here).
  local missing=()
  command -v make >/dev/null || missing+=(make)
  command -v g++ >/dev/null || missing+=(g++)
  command -v python3 >/dev/null || missing+=(python3)
  if [ ${#missing[@]} -gt 0 ]; then apt_install "${missing[@]}"; fi
  if [ ! -e /usr/include/node/node.h ] && [ ! -e /usr/include/node/node_api.h ]; then
    log "node headers missing in /usr/include/node: installing libnode-dev"
    apt_install libnode-dev
  fi
}

pds_ready() {
  # node_modules complete and the native module loads with this node
  [ -f "$1/.complete" ] && [ -f "$1/node_modules/@atproto/pds/package.json" ] \
    && (cd "$1" && node -e "new (require('better-sqlite3'))(':memory:').close()" >/dev/null 2>&1)
}

install_pds() {
  ensure_node
  local root key dest
  root=$(cache_root)/pds-node
  key=$(pds_key)
  dest="$root/$key"
  mkdir -p "$root"
  if pds_ready "$dest"; then
    log "pds node modules: $dest/node_modules (cached)"
    NODE_MODULES="$dest/node_modules"
    return
  fi
  exec 9>"$root/.lock"
  flock 9
  if pds_ready "$dest"; then  # another process installed it while we waited
    NODE_MODULES="$dest/node_modules"; exec 9>&-; return
  fi
  ensure_build_tools
  local stage="$root/.stage-$key-$$"
  rm -rf "$stage" "$dest"
  mkdir -p "$stage"
  cp "$PDS_DIR/package.json" "$PDS_DIR/package-lock.json" "$stage/"
  log "pds node modules: npm ci into $dest (cold: a few minutes, mostly compiling better-sqlite3)"
  local t0=$SECONDS
  # nodedir + build_from_source: node-gyp/prebuild-install must not try to
  # download headers or prebuilt binaries (only package registries are reachable).
  (cd "$stage" && JOBS=max npm_config_nodedir=/usr npm_config_build_from_source=true \
    npm ci --no-audit --no-fund --loglevel=error >&2)
  touch "$stage/.complete"
  mv "$stage" "$dest"
  if ! pds_ready "$dest"; then log "pds node modules: installed but better-sqlite3 does not load"; exit 1; fi
  log "pds node modules: done in $((SECONDS - t0)) s"
  # Drop installs for other lock files / node versions (keep the cache small).
  find "$root" -mindepth 1 -maxdepth 1 -type d ! -name "$key" -name '*-abi*' -mtime +7 \
    -exec rm -rf {} + 2>/dev/null || true
  exec 9>&-
  NODE_MODULES="$dest/node_modules"
}

# ---------------------------------------------------------------- browser (node)
# Must match tests/support/browser.py (node_modules_dir): sha256 of the lock file, first 16
# hex digits. playwright-core only: it downloads no browser; the tests use Debian's chromium
# (scripts/install-system-deps.sh --test).
install_browser() {
  ensure_node
  local root key dest stage
  root=$(cache_root)/browser-node
  key=$(sha256sum "$BROWSER_DIR/package-lock.json" | cut -c1-16)
  dest="$root/$key"
  mkdir -p "$root"
  if [ -f "$dest/.complete" ]; then log "browser node modules: $dest/node_modules (cached)"; return; fi
  exec 8>"$root/.lock"
  flock 8
  if [ ! -f "$dest/.complete" ]; then
    stage="$root/.stage-$key-$$"
    rm -rf "$stage" "$dest"
    mkdir -p "$stage"
    cp "$BROWSER_DIR/package.json" "$BROWSER_DIR/package-lock.json" "$stage/"
    log "browser node modules: npm ci into $dest"
    (cd "$stage" && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error >&2)
    touch "$stage/.complete"
    mv "$stage" "$dest"
  fi
  exec 8>&-
  log "browser node modules: $dest/node_modules"
}

[ $want_pg = 1 ] && install_postgres
[ $want_browser = 1 ] && install_browser
if [ $want_pds = 1 ]; then
  install_pds
  [ $print_nm = 1 ] && echo "$NODE_MODULES"
fi
exit 0
