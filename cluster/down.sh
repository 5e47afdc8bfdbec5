#!/usr/bin/env bash
# Tear down the test cluster started by cluster/up.sh. Safe to run any number of times.
# Order: delete pods (kubelet unmounts volumes) -> kubelet -> CRI tasks/containers ->
# containerd -> leftover shims of OUR socket -> scheduler, controller-manager, apiserver ->
# etcd -> unmount leftovers under $STATE -> kubepods cgroups we created -> blackhole route
# -> state dir. The build cache ($BIN) and image tarballs are kept.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
export PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:$PATH"

#   bash cluster/down.sh                 # tear down unconditionally
#   bash cluster/down.sh --release PID[:TAG]   # drop that lease; tear down only if no other live
#                                        # lease remains and a lease holder started the cluster
[ "$(id -u)" = 0 ] || die "cluster/down.sh must run as root"
take_lock
trap 'log "failed at line $LINENO: $BASH_COMMAND"' ERR
case "${1:-}" in
  --release)
    lease_id="${2:?usage: down.sh --release PID[:TAG]}"
    check_lease_id "$lease_id"
    rm -f "$LEASES/$lease_id"
    rmdir "$LEASES" 2>/dev/null || true
    others="$(live_leases | tr '\n' ' ')"
    if [ -n "${others// /}" ]; then
      log "cluster still leased by pid(s) $others; leaving it up"
      exit 0
    fi
    if [ -n "$(ls -A "$STATE/pid" 2>/dev/null)" ] && [ ! -e "$STATE/owned/started-by-lease" ]; then
      log "cluster was not started by a test session; leaving it up (cluster/down.sh stops it)"
      exit 0
    fi ;;
  "")
    others="$(live_leases | tr '\n' ' ')"
    if [ -n "${others// /}" ]; then log "WARNING: tearing down although pid(s) $others hold leases"; fi
    rm -rf "$LEASES" ;;
  *) die "usage: cluster/down.sh [--release PID[:TAG]]" ;;
esac
if [ ! -d "$STATE" ]; then
  log "no cluster state in $STATE; nothing to do"
  exit 0
fi
T0=$(date +%s)

# stop NAME EXE: TERM the recorded PID (only if it still runs EXE), wait, then KILL.
stop() {
  local n="$1" exe="$2" p i
  p="$(cat "$STATE/pid/$n" 2>/dev/null)" || return 0
  [ -n "$p" ] && kill -0 "$p" 2>/dev/null || { rm -f "$STATE/pid/$n"; return 0; }
  if ! tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | grep -F -- "$exe" >/dev/null; then
    log "pid $p recorded for $n no longer runs $exe; not touching it"
    rm -f "$STATE/pid/$n"; return 0
  fi
  kill -TERM "$p" 2>/dev/null || true
  for ((i = 0; i < 75; i++)); do kill -0 "$p" 2>/dev/null || break; sleep 0.2; done
  if kill -0 "$p" 2>/dev/null; then
    log "$n (pid $p) ignored SIGTERM for 15s; SIGKILL"
    kill -KILL "$p" 2>/dev/null || true
    for ((i = 0; i < 25; i++)); do kill -0 "$p" 2>/dev/null || break; sleep 0.2; done
  fi
  rm -f "$STATE/pid/$n"
  log "stopped $n"
}

# 1. Let kubelet tear the pods down properly (unmounts volumes, removes sandboxes).
if pid_alive kube-apiserver && pid_alive kubelet && [ -x "$BIN/kubectl" ]; then
  log "deleting all pods and jobs"
  kctl delete jobs,pods --all --all-namespaces --wait=true --timeout=60s \
    --grace-period=5 >/dev/null 2>&1 || log "pod deletion did not finish cleanly; continuing"
fi
stop kubelet "$BIN/kubelet"

# 2. Remove whatever containers are left through containerd, then stop it.
if pid_alive containerd && [ -S "$SOCK" ]; then
  C=(ctr -a "$SOCK" -n k8s.io)
  for t in $("${C[@]}" tasks ls -q 2>/dev/null); do "${C[@]}" tasks kill -a -s SIGKILL "$t" >/dev/null 2>&1 || true; done
  sleep 1
  for t in $("${C[@]}" tasks ls -q 2>/dev/null); do "${C[@]}" tasks delete -f "$t" >/dev/null 2>&1 || true; done
  for c in $("${C[@]}" containers ls -q 2>/dev/null); do "${C[@]}" containers delete "$c" >/dev/null 2>&1 || true; done
fi
stop containerd containerd

# 3. Shims outlive containerd: kill only those started for our socket.
shims() {  # PIDs of containerd-shim* processes whose command line names our socket
  local d p
  for d in /proc/[0-9]*; do
    p="${d#/proc/}"
    case "$(cat "$d/comm" 2>/dev/null)" in containerd-shim*) ;; *) continue ;; esac
    tr '\0' ' ' <"$d/cmdline" 2>/dev/null | grep -F -- "$SOCK" >/dev/null && echo "$p"
  done
  return 0
}
for p in $(shims); do kill -KILL "$p" 2>/dev/null || true; done
for ((i = 0; i < 25; i++)); do [ -z "$(shims)" ] && break; sleep 0.2; done
[ -z "$(shims)" ] || log "WARNING: shims still running: $(shims | tr '\n' ' ')"
# Container processes whose shim died are reparented; kill any left in our kubepods cgroups.
if [ ! -e "$STATE/owned/kubepods-preexisted" ]; then
  for f in $(find /sys/fs/cgroup/*/kubepods -name cgroup.procs 2>/dev/null); do
    for p in $(cat "$f" 2>/dev/null); do kill -KILL "$p" 2>/dev/null || true; done
  done
fi

# 4. Control plane, then etcd.
stop kube-scheduler "$BIN/kube-scheduler"
stop kube-controller-manager "$BIN/kube-controller-manager"
stop kube-apiserver "$BIN/kube-apiserver"
stop etcd etcd

# 5. Unmount leftovers under our state dir (pod volumes, CRI shm, overlay rootfs), deepest first.
our_mounts() { awk -v s="$STATE/" 'index($5, s) == 1 {print $5}' /proc/self/mountinfo | sort -r; }
unmount_all() {
  our_mounts | while read -r m; do
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || log "WARNING: cannot unmount $m"
  done
}
unmount_all; unmount_all
# Pod network namespaces containerd created (/run/netns/cni-*) after our start; normally
# removed with the sandboxes, left behind only if containerd was killed.
# `ip netns add` (anyone's) bind-mounts /run/netns onto itself: namespaces mounted before that
# are hidden under the bind, where they can be neither unmounted nor removed ("busy"). Drop such
# a bind when nothing is mounted on it, which uncovers them.
netns_bind=$(awk '$4 == "/run/netns" && $5 == "/run/netns" {print $1}' /proc/self/mountinfo | tail -n 1)
if [ -n "$netns_bind" ] && ! awk -v p="$netns_bind" '$2 == p {found = 1} END {exit !found}' /proc/self/mountinfo; then
  umount /run/netns 2>/dev/null || true
fi
if [ -e "$STATE/owned/started" ] && [ -d /run/netns ]; then
  find /run/netns -maxdepth 1 -name 'cni-*' -newer "$STATE/owned/started" 2>/dev/null |
    while read -r ns; do
      umount "$ns" 2>/dev/null || umount -l "$ns" 2>/dev/null || true
      rm -f "$ns" 2>/dev/null || log "WARNING: cannot remove $ns"
    done
fi
if [ -n "$(our_mounts)" ]; then
  die "mounts still present under $STATE: $(our_mounts | tr '\n' ' ')"
fi

# 6. cgroups kubelet created (cgroupfs driver, cgroupRoot "/"): /kubepods{,/burstable,/besteffort,/pod*}
if [ ! -e "$STATE/owned/kubepods-preexisted" ]; then
  for d in /sys/fs/cgroup/*/kubepods; do
    if [ -d "$d" ]; then find "$d" -depth -type d -exec rmdir {} \; 2>/dev/null || true; fi
    if [ -d "$d" ]; then log "WARNING: could not remove cgroup $d"; fi
  done
fi

# 7. The blackhole routes (service and pod CIDR) that up.sh added.
if [ -f "$STATE/owned/routes" ]; then
  while read -r cidr; do ip route del blackhole "$cidr" 2>/dev/null || true; done <"$STATE/owned/routes"
fi
if [ -e "$STATE/owned/route" ]; then ip route del blackhole "$SERVICE_CIDR" 2>/dev/null || true; fi

# 8. Files outside $STATE that kubelet/containerd created for us.
if [ -d /var/log/containers ]; then
  find /var/log/containers -maxdepth 1 -type l -lname "$STATE/*" -delete 2>/dev/null || true
  if [ -e "$STATE/owned/var-log-containers" ]; then rmdir /var/log/containers 2>/dev/null || true; fi
fi
# kubelet creates /var/lib/kubelet/device-plugins even with --root-dir elsewhere.
if [ -e "$STATE/owned/var-lib-kubelet" ]; then rm -rf /var/lib/kubelet; fi
if [ -e "$STATE/owned/runc-k8s-io" ]; then rm -rf /run/containerd/runc/k8s.io; fi
if [ -e "$STATE/owned/run-netns" ]; then rmdir /run/netns 2>/dev/null || true; fi
if [ -e "$STATE/owned/run-containerd" ]; then
  rmdir /run/containerd/runc /run/containerd/s /run/containerd 2>/dev/null || true
fi

rm -rf "$STATE"
rmdir "$LEASES" 2>/dev/null || true
log "cluster down in $(( $(date +%s) - T0 ))s (build cache kept in $BIN)"
