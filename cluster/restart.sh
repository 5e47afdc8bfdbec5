#!/usr/bin/env bash
# Stop and start ONE component of the test cluster, exactly as cluster/up.sh started it (the
# fault tests: tests/faults/test_control_plane.py).
#
#   bash cluster/restart.sh NAME                 # SIGTERM, wait for exit, start again, wait healthy
#   bash cluster/restart.sh stop NAME [SIGNAL]   # signal the recorded PID (TERM|KILL), wait for exit
#   bash cluster/restart.sh start NAME           # start it again, wait until it answers
#
# NAME is one of etcd kube-apiserver kube-controller-manager kube-scheduler containerd kubelet.
# The argv and environment are the ones up.sh exec'd: up.sh records them in $STATE/cmd/NAME
# and NAME.env (NUL-separated); `stop` refreshes them from /proc/PID first, so a cluster started
# before this script existed can be restarted too. The new PID goes to $STATE/pid/NAME as up.sh
# does it (the daemon writes its own PID before exec), so cluster/down.sh stops it. The log is
# appended to, so the crash is kept. Only the recorded PID is ever signalled.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
export PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:$PATH"

usage() { die "usage: cluster/restart.sh [stop NAME [TERM|KILL] | start NAME | NAME]"; }
case "${1:-}" in
  stop) action=stop; name="${2:-}"; sig="${3:-TERM}" ;;
  start) action=start; name="${2:-}"; sig="" ;;
  "") usage ;;
  *) action=restart; name="$1"; sig=TERM ;;
esac
case "$name" in
  etcd|kube-apiserver|kube-controller-manager|kube-scheduler|containerd|kubelet) ;;
  *) usage ;;
esac
case "$sig" in ""|TERM|KILL) ;; *) usage ;; esac
[ "$(id -u)" = 0 ] || die "cluster/restart.sh must run as root"
[ -d "$STATE/pid" ] || die "no cluster in $STATE (run cluster/up.sh)"
take_lock

argv0_is() {  # argv0_is PID NAME: the process runs the binary NAME (by basename)
  local a0
  a0="$(tr '\0' '\n' <"/proc/$1/cmdline" 2>/dev/null | head -n1)" || return 1
  [ "$(basename -- "$a0")" = "$2" ]
}

do_stop() {
  local p i
  p="$(cat "$STATE/pid/$name" 2>/dev/null)" || die "$name has no recorded PID"
  kill -0 "$p" 2>/dev/null || die "$name (pid $p) is not running"
  argv0_is "$p" "$name" || die "pid $p recorded for $name does not run $name; not touching it"
  mkdir -p "$STATE/cmd"
  cat "/proc/$p/cmdline" >"$STATE/cmd/$name.tmp" && mv "$STATE/cmd/$name.tmp" "$STATE/cmd/$name"
  cat "/proc/$p/environ" >"$STATE/cmd/$name.env.tmp" && mv "$STATE/cmd/$name.env.tmp" "$STATE/cmd/$name.env"
  kill "-$sig" "$p"
  for ((i = 0; i < 150; i++)); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$p" 2>/dev/null; then
    log "$name (pid $p) ignored SIG$sig for 15s; SIGKILL"
    kill -KILL "$p" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  fi
  kill -0 "$p" 2>/dev/null && die "$name (pid $p) did not exit"
  rm -f "$STATE/pid/$name"
  log "stopped $name (pid $p, SIG$sig)"
}

ready() {  # ready: the component answers
  case "$name" in
    etcd) ETCDCTL_API=3 etcdctl --endpoints http://127.0.0.1:2379 endpoint health ;;
    kube-apiserver) kctl get --raw=/readyz ;;
    kube-controller-manager) curl -fsk https://127.0.0.1:10257/healthz ;;
    kube-scheduler) curl -fsk https://127.0.0.1:10259/healthz ;;
    containerd) ctr -a "$SOCK" version ;;
    kubelet) curl -fs http://127.0.0.1:10248/healthz &&
      [ "$(kctl get node "$NODE" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" = True ] ;;
  esac
}

do_start() {
  local i
  [ -s "$STATE/cmd/$name" ] || die "no recorded command line for $name ($STATE/cmd/$name)"
  if pid_alive "$name"; then die "$name is already running (pid $(cat "$STATE/pid/$name"))"; fi
  local -a argv envv
  mapfile -d '' -t argv <"$STATE/cmd/$name"
  envv=()
  if [ -s "$STATE/cmd/$name.env" ]; then mapfile -d '' -t envv <"$STATE/cmd/$name.env"; fi
  rm -f "$STATE/pid/$name"
  # As up.sh's start(): own session, the daemon records its own PID, fd 9 (the lock) closed.
  (cd / && exec env -i "${envv[@]}" setsid bash -c \
    'echo $$ >"$0.tmp" && mv "$0.tmp" "$0" && exec "$@"' "$STATE/pid/$name" "${argv[@]}" \
    </dev/null >>"$STATE/log/$name.log" 2>&1 9>&-) &
  for ((i = 0; i < 100; i++)); do [ -s "$STATE/pid/$name" ] && break; sleep 0.05; done
  [ -s "$STATE/pid/$name" ] || die "$name did not start (log: $STATE/log/$name.log)"
  for ((i = 0; i < 900; i++)); do
    ready >/dev/null 2>&1 && { log "started $name (pid $(cat "$STATE/pid/$name"))"; return 0; }
    pid_alive "$name" || { tail -n 30 "$STATE/log/$name.log" >&2; die "$name exited during start-up"; }
    sleep 0.2
  done
  tail -n 30 "$STATE/log/$name.log" >&2
  die "$name not ready after 180s (log: $STATE/log/$name.log)"
}

case "$action" in
  stop) do_stop ;;
  start) do_start ;;
  restart) do_stop; do_start ;;
esac
