#!/usr/bin/env bash
# Tear down the test cluster started by cluster/up.sh. Safe to run any number of times.
# Order: delete pods (kubelet unmounts volumes) -> kubelet -> CRI tasks/containers ->
# containerd -> leftover shims of OUR socket -> scheduler, controller-manager, apiserver ->
# etcd -> unmount leftovers under $STATE -> kubepods cgroups we created -> blackhole route
# -> state dir. The build cache ($BIN) and image tarballs are kept.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
export PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:$PATH"

[ "$(id -u)" = 0 ] || die "cluster/down.sh must run as root"
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
  if ! tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | grep -q -- "$exe"; then
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
shims() { ps -eo pid=,args= | awk -v s="$SOCK" 'index($0, "containerd-shim") && index($0, s) {print $1}'; }
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
unmount_all() {
  awk '{print $5}' /proc/self/mountinfo | grep -E "^$STATE/" | sort -r | while read -r m; do
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || log "WARNING: cannot unmount $m"
  done
}
unmount_all; unmount_all
if awk '{print $5}' /proc/self/mountinfo | grep -qE "^$STATE/"; then
  die "mounts still present under $STATE: $(awk '{print $5}' /proc/self/mountinfo | grep -E "^$STATE/" | tr '\n' ' ')"
fi

# 6. cgroups kubelet created (cgroupfs driver, cgroupRoot "/"): /kubepods{,/burstable,/besteffort,/pod*}
if [ ! -e "$STATE/owned/kubepods-preexisted" ]; then
  for d in /sys/fs/cgroup/*/kubepods; do
    [ -d "$d" ] && find "$d" -depth -type d -exec rmdir {} \; 2>/dev/null || true
    [ -d "$d" ] && log "WARNING: could not remove cgroup $d"
  done
fi

# 7. The blackhole route for the service CIDR, if up.sh added it.
if [ -e "$STATE/owned/route" ]; then
  ip route del blackhole "$SERVICE_CIDR" 2>/dev/null || true
fi

# 8. Files outside $STATE that kubelet/containerd created for us.
if [ -d /var/log/containers ]; then
  find /var/log/containers -maxdepth 1 -type l -lname "$STATE/*" -delete 2>/dev/null || true
  [ -e "$STATE/owned/var-log-containers" ] && rmdir /var/log/containers 2>/dev/null || true
fi
[ -e "$STATE/owned/var-lib-kubelet" ] && rm -rf /var/lib/kubelet
[ -e "$STATE/owned/runc-k8s-io" ] && rm -rf /run/containerd/runc/k8s.io

rm -rf "$STATE"
log "cluster down in $(( $(date +%s) - T0 ))s (build cache kept in $BIN)"
