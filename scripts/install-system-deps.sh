#!/usr/bin/env bash
# Debian packages the service and its tests need. Idempotent; installs only what is missing.
set -euo pipefail
want=(ffmpeg postgresql python3-venv)
case "${1:-}" in
  --test) want+=(etcd-server etcd-client containerd runc docker.io debootstrap umoci
                 containernetworking-plugins wrk chromium) ;;
  --bench) want+=(wrk) ;;
esac
missing=()
for p in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
echo "installing Debian packages: ${missing[*]}" >&2
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
