# shellcheck shell=bash
# Leases: a test session (PID[:TAG]) holds a shared daemon (the cluster, the private dockerd)
# until it exits or releases it; the last holder out stops what a holder started. Source it
# with LEASES (a directory) set and a `die` function defined.

proc_start_time() {  # start time (clock ticks since boot) of PID, to tell reused PIDs apart
  sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | awk '{print $20}'
}

check_lease_id() {
  case "$1" in *[!A-Za-z0-9:_-]*|"") die "bad lease id '$1'" ;; esac
}

add_lease() {  # add_lease PID[:TAG]: PID uses the daemon until it exits or releases the lease
  local id="$1" pid="${1%%:*}" st
  check_lease_id "$id"
  st="$(proc_start_time "$pid")"
  [ -n "$st" ] || die "lease holder pid $pid is not running"
  mkdir -p "$LEASES"
  echo "$pid $st" >"$LEASES/$id"
}

live_leases() {  # print PIDs holding leases; drop leases of processes that are gone
  local f pid st
  for f in "$LEASES"/*; do
    [ -f "$f" ] || continue
    read -r pid st <"$f" || true
    if [ -n "${pid:-}" ] && [ "$(proc_start_time "$pid")" = "${st:-x}" ]; then
      echo "$pid"
    else
      rm -f "$f"
    fi
  done
  return 0
}
