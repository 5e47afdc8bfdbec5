#!/usr/bin/env bash
# A private Docker daemon for building and test-running the worker image, isolated from any
# system dockerd: own --data-root, exec-root, unix socket and pidfile under $VIDEO_DOCKER_STATE
# (default /var/lib/atproto-video/docker), no bridge, no iptables, no IP forwarding, every
# registry mirror pointed at 127.0.0.1:9 (nothing is ever pulled).
#
#   transcoder-image/dockerd.sh start    # idempotent; prints `export DOCKER_HOST=...`
#   transcoder-image/dockerd.sh stop     # by PID from the pidfile
#   transcoder-image/dockerd.sh status
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
export PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:$PATH"

PIDFILE="$DOCKER_STATE/dockerd.pid"
LOG="$DOCKER_STATE/dockerd.log"

running() {
  local p
  p="$(cat "$PIDFILE" 2>/dev/null)" || return 1
  [ -n "$p" ] && kill -0 "$p" 2>/dev/null && tr '\0' ' ' <"/proc/$p/cmdline" | grep dockerd
}

start() {
  [ "$(id -u)" = 0 ] || idie "dockerd.sh must run as root"
  command -v dockerd >/dev/null || bash "$REPO_DIR/cluster/deps.sh" >&2
  if running && "$DOCKER" info >/dev/null 2>&1; then
    echo "export DOCKER_HOST=$DOCKER_HOST"; return 0
  fi
  running && stop
  mkdir -p "$DOCKER_STATE/data" "$DOCKER_STATE/run"
  echo '{}' >"$DOCKER_STATE/daemon.json"
  rm -f "$DOCKER_SOCK" "$PIDFILE"
  setsid dockerd \
    --config-file "$DOCKER_STATE/daemon.json" \
    --data-root "$DOCKER_STATE/data" --exec-root "$DOCKER_STATE/run" \
    -H "unix://$DOCKER_SOCK" --pidfile "$PIDFILE" \
    --bridge=none --iptables=false --ip-forward=false --ip-masq=false \
    --userland-proxy=false --registry-mirror=http://127.0.0.1:9 \
    --oom-score-adjust=0 --storage-driver=overlay2 \
    </dev/null >"$LOG" 2>&1 &
  local i
  for ((i = 0; i < 300; i++)); do
    "$DOCKER" info >/dev/null 2>&1 && { ilog "private dockerd up (pid $(cat "$PIDFILE"), $DOCKER_HOST)"; echo "export DOCKER_HOST=$DOCKER_HOST"; return 0; }
    sleep 0.2
  done
  tail -n 30 "$LOG" >&2
  idie "private dockerd did not come up (log: $LOG)"
}

stop() {
  local p i
  if ! running; then rm -f "$PIDFILE"; ilog "private dockerd not running"; return 0; fi
  p="$(cat "$PIDFILE")"
  kill -TERM "$p"
  for ((i = 0; i < 150; i++)); do kill -0 "$p" 2>/dev/null || break; sleep 0.2; done
  if kill -0 "$p" 2>/dev/null; then ilog "dockerd ignored SIGTERM for 30s; SIGKILL"; kill -KILL "$p" || true; sleep 1; fi
  # dockerd's own containerd is its child and exits with it; sweep its shims of our exec-root.
  for s in $(ps -eo pid=,args= | awk -v s="$DOCKER_STATE/" 'index($0,"containerd") && index($0,s) {print $1}'); do
    kill -KILL "$s" 2>/dev/null || true
  done
  awk '{print $5}' /proc/self/mountinfo | grep -E "^$DOCKER_STATE/" | sort -r | while read -r m; do
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
  done
  rm -f "$PIDFILE" "$DOCKER_SOCK"
  ilog "private dockerd stopped"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) if running; then echo "running pid $(cat "$PIDFILE") $DOCKER_HOST"; else echo stopped; exit 1; fi ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
