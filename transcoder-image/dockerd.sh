#!/usr/bin/env bash
# A private Docker daemon for building and test-running the worker image, isolated from any
# system dockerd: own --data-root, exec-root, unix socket and pidfile under $VIDEO_DOCKER_STATE
# (default /var/lib/atproto-video/docker), no bridge, no iptables, no IP forwarding, every
# registry mirror pointed at 127.0.0.1:9 (nothing is ever pulled).
#
#   transcoder-image/dockerd.sh start    # idempotent; prints `export DOCKER_HOST=...`
#   transcoder-image/dockerd.sh stop     # by PID from the pidfile
#   transcoder-image/dockerd.sh status
#   transcoder-image/dockerd.sh start --lease PID[:TAG]   # test sessions: the daemon is
#   transcoder-image/dockerd.sh stop --release PID[:TAG]  # stopped by the last lease holder
#                                         # out, and only if a lease holder started it
# kind's engine (kind/up.sh) is another instance of this script: VIDEO_DOCKER_STATE elsewhere and
# VIDEO_DOCKERD_USERLAND_PROXY=true (docker-proxy publishes the kind node's API server on
# 127.0.0.1; still no iptables, forwarding or masquerading) and VIDEO_DOCKERD_RUNTIME=kind/runc-bounded
# (the default runtime: runc minus capabilities this VM does not have, for --privileged).
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
export PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:$PATH"

PIDFILE="$DOCKER_STATE/dockerd.pid"
LOG="$DOCKER_STATE/dockerd.log"
LEASES="$DOCKER_STATE.leases"

take_lock() {  # serialize start/stop between concurrent sessions
  mkdir -p "$(dirname "$DOCKER_STATE")"
  exec 8>"$DOCKER_STATE.lock"
  flock -w 900 8 || idie "timed out waiting for $DOCKER_STATE.lock"
}
die() { idie "$@"; }  # for cluster/lease.sh
# proc_start_time, check_lease_id, add_lease, live_leases: one definition with the cluster's.
. "$REPO_DIR/cluster/lease.sh"

running() {
  local p
  p="$(cat "$PIDFILE" 2>/dev/null)" || return 1
  [ -n "$p" ] && kill -0 "$p" 2>/dev/null && tr '\0' ' ' <"/proc/$p/cmdline" | grep dockerd >/dev/null
}

start() {  # start [LEASE]
  [ "$(id -u)" = 0 ] || idie "dockerd.sh must run as root"
  command -v dockerd >/dev/null || bash "$REPO_DIR/cluster/deps.sh" >&2
  if running && "$DOCKER" info >/dev/null 2>&1; then
    if [ -n "${1:-}" ]; then add_lease "$1"; fi
    echo "export DOCKER_HOST=$DOCKER_HOST"; return 0
  fi
  if running; then stop; fi
  rm -f "$DOCKER_STATE/started-by-lease"
  mkdir -p "$DOCKER_STATE/data" "$DOCKER_STATE/run"
  echo '{}' >"$DOCKER_STATE/daemon.json"
  rm -f "$DOCKER_SOCK" "$PIDFILE"
  local runtime=()
  if [ -n "${VIDEO_DOCKERD_RUNTIME:-}" ]; then
    runtime=(--add-runtime "bounded=$VIDEO_DOCKERD_RUNTIME" --default-runtime bounded)
  fi
  setsid dockerd 8>&- "${runtime[@]}" \
    --config-file "$DOCKER_STATE/daemon.json" \
    --data-root "$DOCKER_STATE/data" --exec-root "$DOCKER_STATE/run" \
    -H "unix://$DOCKER_SOCK" --pidfile "$PIDFILE" \
    --bridge=none --iptables=false --ip-forward=false --ip-masq=false \
    --userland-proxy="${VIDEO_DOCKERD_USERLAND_PROXY:-false}" --ip6tables=false --registry-mirror=http://127.0.0.1:9 \
    --oom-score-adjust=0 --storage-driver=overlay2 \
    </dev/null >"$LOG" 2>&1 &
  local i
  for ((i = 0; i < 300; i++)); do
    if "$DOCKER" info >/dev/null 2>&1; then
      ilog "private dockerd up (pid $(cat "$PIDFILE"), $DOCKER_HOST)"
      if [ -n "${1:-}" ]; then touch "$DOCKER_STATE/started-by-lease"; add_lease "$1"; fi
      echo "export DOCKER_HOST=$DOCKER_HOST"; return 0
    fi
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
  # dockerd's own containerd is its child and exits with it; sweep shims of our exec-root.
  local d
  for d in /proc/[0-9]*; do
    case "$(cat "$d/comm" 2>/dev/null)" in containerd*) ;; *) continue ;; esac
    if tr '\0' ' ' <"$d/cmdline" 2>/dev/null | grep -F -- "$DOCKER_STATE/" >/dev/null; then
      kill -KILL "${d#/proc/}" 2>/dev/null || true
    fi
  done
  awk -v s="$DOCKER_STATE/" 'index($5, s) == 1 {print $5}' /proc/self/mountinfo | sort -r |
    while read -r m; do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true; done
  rm -f "$PIDFILE" "$DOCKER_SOCK" "$DOCKER_STATE/started-by-lease"
  rmdir "$LEASES" 2>/dev/null || true
  ilog "private dockerd stopped"
}

case "${1:-}" in
  start)
    take_lock
    case "${2:-}" in --lease) start "${3:?usage: start --lease PID[:TAG]}" ;; "") start ;; *) idie "usage: $0 start [--lease ID]" ;; esac ;;
  stop)
    take_lock
    case "${2:-}" in
      --release)
        check_lease_id "${3:?usage: stop --release PID[:TAG]}"; rm -f "$LEASES/$3"
        rmdir "$LEASES" 2>/dev/null || true
        others="$(live_leases | tr '\n' ' ')"
        if [ -n "${others// /}" ]; then ilog "private dockerd still leased by pid(s) $others"; exit 0; fi
        if running && [ ! -e "$DOCKER_STATE/started-by-lease" ]; then
          ilog "private dockerd was not started by a test session; leaving it running"; exit 0
        fi
        stop ;;
      "") stop; rm -rf "$LEASES" ;;
      *) idie "usage: $0 stop [--release ID]" ;;
    esac ;;
  status) if running; then echo "running pid $(cat "$PIDFILE") $DOCKER_HOST"; else echo stopped; exit 1; fi ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
