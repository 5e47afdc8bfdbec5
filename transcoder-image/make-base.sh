#!/usr/bin/env bash
# Build the worker's base image from Debian packages only (no container registry):
# debootstrap bookworm (minbase) from the same Debian mirror apt uses on this host, then
# `docker import` it into the private dockerd as localhost/atproto-video-base:bookworm.
# Skips when the image already exists (FORCE=1 rebuilds).
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
export PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:$PATH"

[ "$(id -u)" = 0 ] || idie "make-base.sh must run as root (debootstrap)"
command -v debootstrap >/dev/null || bash "$REPO_DIR/cluster/deps.sh" >&2
eval "$(bash "$IMAGE_DIR/dockerd.sh" start)"

if [ "${FORCE:-0}" != 1 ] && "$DOCKER" image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
  ilog "$BASE_IMAGE already present"
  exit 0
fi

# The Debian mirror apt uses here (deb822 sources or classic sources.list), overridable.
apt_uri() {  # apt_uri SUITE-SUFFIX-REGEX -> first URI serving bookworm<suffix>
  local want="$1"
  cat /etc/apt/sources.list.d/*.sources 2>/dev/null | awk -v want="$want" '
    /^URIs:/ {uri=$2} /^Suites:/ {for(i=2;i<=NF;i++) if ($i ~ "^bookworm" want "$") {print uri; exit}}' || true
  grep -hE '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
    awk -v want="$want" '{for(i=1;i<=NF;i++) if ($i ~ "^https?://") {u=$i; if ($(i+1) ~ "^bookworm" want "$") print u}}' || true
}
MIRROR="${VIDEO_DEBIAN_MIRROR:-$(apt_uri '' | head -1)}"
SECURITY="${VIDEO_DEBIAN_SECURITY_MIRROR:-$(apt_uri '-security' | head -1)}"
MIRROR="${MIRROR:-http://deb.debian.org/debian}"
SECURITY="${SECURITY:-http://deb.debian.org/debian-security}"
ilog "debootstrap bookworm minbase from $MIRROR"

WORK="$CACHE_ROOT/base-rootfs"
rm -rf "$WORK"; mkdir -p "$WORK"
trap 'rm -rf "$WORK"' EXIT
debootstrap --variant=minbase --merged-usr bookworm "$WORK/rootfs" "$MIRROR" >"$CACHE_ROOT/debootstrap.log" 2>&1 \
  || { tail -n 30 "$CACHE_ROOT/debootstrap.log" >&2; idie "debootstrap failed (log $CACHE_ROOT/debootstrap.log)"; }
R="$WORK/rootfs"
cat >"$R/etc/apt/sources.list" <<SRC
deb $MIRROR bookworm main
deb $MIRROR bookworm-updates main
deb $SECURITY bookworm-security main
SRC
# Small and reproducible: no docs/man pages from later installs, no apt caches in the image.
cat >"$R/etc/dpkg/dpkg.cfg.d/01-nodoc" <<'CFG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
CFG
cat >"$R/etc/apt/apt.conf.d/01-container" <<'CFG'
APT::Install-Recommends "false";
APT::Install-Suggests "false";
Acquire::Languages "none";
CFG
chroot "$R" apt-get clean
rm -rf "$R"/var/lib/apt/lists/* "$R"/var/cache/apt/archives/*.deb "$R"/var/log/* \
  "$R"/tmp/* "$R"/dev/* "$R"/proc/* "$R"/sys/* "$R"/run/*
: >"$R/etc/resolv.conf"; : >"$R/etc/hostname"
tar --numeric-owner -C "$R" -c . | "$DOCKER" import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'CMD ["/bin/bash"]' - "$BASE_IMAGE" >/dev/null
ilog "imported $BASE_IMAGE ($("$DOCKER" image inspect -f '{{.Size}}' "$BASE_IMAGE") bytes)"
