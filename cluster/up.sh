#!/usr/bin/env bash
# Bring up a real single-node Kubernetes on loopback for the tests (see cluster/README.md).
#
#   eval "$(bash cluster/up.sh)"     # sets VIDEO_KUBECTL and KUBECONFIG
#   bash cluster/up.sh --status      # exit 0 + exports if the cluster is up and healthy
#   bash cluster/up.sh --lease PID[:TAG]  # record that process PID uses the cluster; a
#                                    # cluster started this way is torn down by the last
#                                    # `down.sh --release PID[:TAG]` (test fixtures)
#
# etcd, kube-apiserver, kube-controller-manager, kube-scheduler, a private containerd and
# kubelet, all on 127.0.0.1, state under $VIDEO_CLUSTER_STATE (default
# /var/lib/atproto-video/cluster). Logs go to stderr and $STATE/log/; stdout carries only the
# export lines, the last one being `export KUBECONFIG=$STATE/admin.kubeconfig`.
# Idempotent: when the cluster is already up and healthy it only prints the export lines.
# Anything half-up (a crashed previous run) is torn down by cluster/down.sh first.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
export PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:$PATH"

COMPONENTS="etcd kube-apiserver kube-controller-manager kube-scheduler containerd kubelet"
T0=$(date +%s)

print_exports() {
  echo "export VIDEO_KUBECTL=$STATE/bin/kubectl"
  echo "export KUBECONFIG=$STATE/admin.kubeconfig"
}

healthy() {
  local c
  for c in $COMPONENTS; do pid_alive "$c" || return 1; done
  [ -x "$BIN/kubectl" ] || return 1
  kctl get --raw=/readyz >/dev/null 2>&1 || return 1
  [ "$(kctl get node "$NODE" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" = True ]
}

LEASE_PID=""
case "${1:-}" in
  --status)  # exit 0 (and print the exports) only if up and healthy
    if healthy; then print_exports; exit 0; fi
    exit 1 ;;
  --lease) LEASE_PID="${2:?usage: up.sh --lease PID[:TAG]}" ;;
  "") ;;
  *) die "usage: cluster/up.sh [--status | --lease PID[:TAG]]" ;;
esac
[ "$(id -u)" = 0 ] || die "cluster/up.sh must run as root (containerd, kubelet, cgroups, routes)"
take_lock
trap 'log "failed at line $LINENO: $BASH_COMMAND"' ERR

if healthy; then
  log "cluster already up and healthy (state $STATE)"
  if [ -n "$LEASE_PID" ]; then add_lease "$LEASE_PID"; fi
  print_exports
  exit 0
fi
if [ -d "$STATE" ] && [ -n "$(ls -A "$STATE" 2>/dev/null)" ]; then
  log "found a stale or half-up cluster in $STATE; tearing it down first"
  bash "$CLUSTER_DIR/down.sh" >&2
fi

# ---------------------------------------------------------------- prerequisites
bash "$CLUSTER_DIR/deps.sh" >&2
bash "$CLUSTER_DIR/build.sh" >&2
for c in kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl; do
  [ -x "$BIN/$c" ] || die "missing $BIN/$c after cluster/build.sh"
done
mkdir -p "$STATE"
case "$(stat -fc %T "$STATE")" in
  overlayfs|tmpfs) die "$STATE is on $(stat -fc %T "$STATE"); containerd overlay snapshots need a real disk (set VIDEO_CLUSTER_STATE)";;
esac
for port in 2379 2380 2381 6443 10248 10250 10257 10259; do
  if ss -Hltn "sport = :$port" | grep . >/dev/null; then
    die "port $port is already in use ($(ss -Hltnp "sport = :$port" | head -1)); another cluster or etcd is running"
  fi
done
if [ -e "$SOCK" ]; then die "$SOCK exists although nothing of ours runs; remove it or run cluster/down.sh"; fi
for ctl in cpu cpuacct cpuset memory; do
  [ -d "/sys/fs/cgroup/$ctl" ] || [ -f /sys/fs/cgroup/cgroup.controllers ] \
    || die "cgroup controller $ctl is not mounted under /sys/fs/cgroup; kubelet needs it"
done
mkdir -p "$STATE"/{log,pid,cmd,bin,owned}
on_failure() {
  local rc=$?
  [ "$rc" = 0 ] && return 0
  local keep="$CACHE_ROOT/logs/failed-up-$(date +%Y%m%d-%H%M%S)"
  mkdir -p "$keep" && cp -r "$STATE/log/." "$keep/" 2>/dev/null || true
  if [ "${VIDEO_CLUSTER_KEEP_FAILED:-0}" = 1 ]; then
    log "cluster start failed; left running for debugging (VIDEO_CLUSTER_KEEP_FAILED=1); logs in $STATE/log"
  else
    log "cluster start failed; tearing down what was started (logs kept in $keep)"
    bash "$CLUSTER_DIR/down.sh" >&2 || true
  fi
  exit "$rc"
}
trap on_failure EXIT
ln -sfn "$BIN/kubectl" "$STATE/bin/kubectl"

# ---------------------------------------------------------------- 0. keep every packet local
# Nothing serves the service CIDR (no kube-proxy): make anything that dials a ClusterIP fail
# locally instead of leaving through the default route.
# The same for the pod CIDR: pods without hostNetwork get addresses from it inside their own,
# dead-end namespaces; from the host those addresses must not route anywhere either.
touch "$STATE/owned/started"
for cidr in "$SERVICE_CIDR" "$POD_CIDR"; do
  existing="$(ip route show exact "$cidr")"
  if [ -z "$existing" ]; then
    ip route add blackhole "$cidr"
    echo "$cidr" >>"$STATE/owned/routes"
  elif ! grep -q '^blackhole' <<<"$existing"; then
    die "a non-blackhole route for $cidr exists ($existing); refusing to start"
  fi
done
# Remember what we create outside $STATE so that down.sh removes only that.
for d in /sys/fs/cgroup/*/kubepods; do
  if [ -d "$d" ]; then touch "$STATE/owned/kubepods-preexisted"; fi
done
if [ ! -d /var/lib/kubelet ]; then touch "$STATE/owned/var-lib-kubelet"; fi
if [ ! -d /var/log/containers ]; then touch "$STATE/owned/var-log-containers"; fi
if [ ! -d /run/containerd/runc/k8s.io ]; then touch "$STATE/owned/runc-k8s-io"; fi
if [ ! -d /run/containerd ]; then touch "$STATE/owned/run-containerd"; fi
if [ ! -d /run/netns ]; then touch "$STATE/owned/run-netns"; fi

start() {  # start NAME CMD...: background daemon in its own session, PID in $STATE/pid/NAME
  local n="$1" i; shift
  rm -f "$STATE/pid/$n"
  # The argv and environment, for cluster/restart.sh (restarts one component the same way).
  printf '%s\0' "$@" >"$STATE/cmd/$n"
  env -0 >"$STATE/cmd/$n.env"
  # The daemon records its own PID (exec keeps it), whether or not setsid had to fork.
  # fd 9 is the up/down lock: daemons must not inherit it.
  setsid bash -c 'echo $$ >"$0.tmp" && mv "$0.tmp" "$0" && exec "$@"' "$STATE/pid/$n" "$@" \
    </dev/null >"$STATE/log/$n.log" 2>&1 9>&- &
  for ((i = 0; i < 100; i++)); do [ -s "$STATE/pid/$n" ] && return 0; sleep 0.05; done
  die "$n did not start (log: $STATE/log/$n.log)"
}
wait_for() {  # wait_for SECONDS NAME CMD...: poll CMD; fail with the component's log tail
  local secs="$1" n="$2" i; shift 2
  for ((i = 0; i < secs * 5; i++)); do
    "$@" >/dev/null 2>&1 && return 0
    pid_alive "$n" || { tail -n 30 "$STATE/log/$n.log" >&2; die "$n exited during start-up (log: $STATE/log/$n.log)"; }
    sleep 0.2
  done
  tail -n 30 "$STATE/log/$n.log" >&2
  die "$n not ready after ${secs}s (log: $STATE/log/$n.log)"
}

# ---------------------------------------------------------------- certificates
log "generating PKI and kubeconfigs"
mkdir -p "$PKI"
(
  cd "$PKI"
  exec 2>>"$STATE/log/pki.log" >&2
  openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 3650 \
    -subj "/CN=atproto-video-test-ca" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
  mk() {  # mk NAME SUBJECT EKU [SAN]
    openssl req -newkey rsa:2048 -nodes -keyout "$1.key" -out "$1.csr" -subj "$2"
    { echo "basicConstraints=critical,CA:FALSE"
      echo "keyUsage=critical,digitalSignature,keyEncipherment"
      echo "extendedKeyUsage=$3"
      if [ -n "${4:-}" ]; then echo "subjectAltName=$4"; fi; } >"$1.ext"
    openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial \
      -days 3650 -sha256 -extfile "$1.ext" -out "$1.crt"
    rm -f "$1.csr" "$1.ext"
  }
  svc_ip="$(python3 -c 'import ipaddress,sys; print(next(ipaddress.ip_network(sys.argv[1]).hosts()))' "$SERVICE_CIDR")"
  mk apiserver "/CN=kube-apiserver" serverAuth \
    "IP:127.0.0.1,IP:$svc_ip,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
  mk apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" clientAuth
  mk admin "/O=system:masters/CN=kubernetes-admin" clientAuth
  mk controller-manager "/CN=system:kube-controller-manager" clientAuth
  mk scheduler "/CN=system:kube-scheduler" clientAuth
  mk kubelet "/O=system:nodes/CN=system:node:$NODE" clientAuth
  openssl genrsa -out sa.key 2048
  openssl rsa -in sa.key -pubout -out sa.pub
  openssl verify -CAfile ca.crt apiserver.crt kubelet.crt admin.crt
  chmod 600 ./*.key
)
kcfg() {  # kcfg NAME -> $STATE/NAME.kubeconfig from $PKI/NAME.{crt,key}
  cat >"$STATE/$1.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: atproto-video-test
  cluster:
    server: https://127.0.0.1:6443
    certificate-authority-data: $(base64 -w0 "$PKI/ca.crt")
users:
- name: $1
  user:
    client-certificate-data: $(base64 -w0 "$PKI/$1.crt")
    client-key-data: $(base64 -w0 "$PKI/$1.key")
contexts:
- name: atproto-video-test
  context: {cluster: atproto-video-test, user: $1, namespace: default}
current-context: atproto-video-test
EOF
  chmod 600 "$STATE/$1.kubeconfig"
}
for n in admin controller-manager scheduler kubelet; do kcfg "$n"; done

# ---------------------------------------------------------------- etcd
log "starting etcd"
start etcd etcd --name atproto-video --data-dir "$STATE/etcd" \
  --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
  --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
  --initial-cluster atproto-video=http://127.0.0.1:2380 \
  --listen-metrics-urls http://127.0.0.1:2381 \
  --unsafe-no-fsync --logger=zap --log-outputs=stderr
wait_for 60 etcd env ETCDCTL_API=3 etcdctl --endpoints http://127.0.0.1:2379 endpoint health

# ---------------------------------------------------------------- control plane
log "starting kube-apiserver"
start kube-apiserver "$BIN/kube-apiserver" \
  --etcd-servers=http://127.0.0.1:2379 \
  --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port=6443 \
  --endpoint-reconciler-type=none \
  --service-cluster-ip-range="$SERVICE_CIDR" \
  --client-ca-file="$PKI/ca.crt" \
  --tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" \
  --kubelet-client-certificate="$PKI/apiserver-kubelet-client.crt" \
  --kubelet-client-key="$PKI/apiserver-kubelet-client.key" \
  --kubelet-preferred-address-types=InternalIP,Hostname \
  --service-account-issuer=https://kubernetes.default.svc.cluster.local \
  --service-account-key-file="$PKI/sa.pub" \
  --service-account-signing-key-file="$PKI/sa.key" \
  --authorization-mode=Node,RBAC \
  --enable-admission-plugins=NodeRestriction \
  --allow-privileged=true --profiling=false --v=1
wait_for 120 kube-apiserver kctl get --raw=/readyz

log "starting kube-controller-manager and kube-scheduler"
start kube-controller-manager "$BIN/kube-controller-manager" \
  --kubeconfig="$STATE/controller-manager.kubeconfig" \
  --authentication-kubeconfig="$STATE/controller-manager.kubeconfig" \
  --authorization-kubeconfig="$STATE/controller-manager.kubeconfig" \
  --bind-address=127.0.0.1 --cert-dir="$STATE/kcm" --leader-elect=false \
  --use-service-account-credentials=true \
  --service-account-private-key-file="$PKI/sa.key" \
  --root-ca-file="$PKI/ca.crt" \
  --cluster-signing-cert-file="$PKI/ca.crt" --cluster-signing-key-file="$PKI/ca.key" \
  --service-cluster-ip-range="$SERVICE_CIDR" \
  --controllers='*' --profiling=false --v=1
cat >"$STATE/scheduler.yaml" <<EOF
apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
clientConnection:
  kubeconfig: $STATE/scheduler.kubeconfig
leaderElection:
  leaderElect: false
EOF
start kube-scheduler "$BIN/kube-scheduler" --config="$STATE/scheduler.yaml" \
  --authentication-kubeconfig="$STATE/scheduler.kubeconfig" \
  --authorization-kubeconfig="$STATE/scheduler.kubeconfig" \
  --bind-address=127.0.0.1 --v=1

# ---------------------------------------------------------------- containerd
log "starting containerd (private socket $SOCK)"
mkdir -p "$STATE/containerd" "$STATE/cni/net.d" "$STATE/cni/bin" "$STATE/cni/ipam"
# CNI: containerd 1.6 needs one network config to report NetworkReady. hostNetwork pods skip
# CNI; any other pod gets the "isolated" network: its own namespace with loopback and a
# dead-end eth0 (no routes), so it cannot send a packet anywhere.
ln -sfn /usr/lib/cni/loopback "$STATE/cni/bin/loopback"
install -m 0755 "$CLUSTER_DIR/cni/isolated" "$STATE/cni/bin/atproto-video-isolated"
cat >"$STATE/cni/net.d/10-isolated.conflist" <<EOF
{"cniVersion":"1.0.0","name":"isolated","plugins":[
  {"type":"atproto-video-isolated","subnet":"$POD_CIDR","dataDir":"$STATE/cni/ipam"}]}
EOF
mirrors=""
for reg in docker.io registry.k8s.io k8s.gcr.io gcr.io quay.io ghcr.io "*"; do
  mirrors+="    [plugins.\"io.containerd.grpc.v1.cri\".registry.mirrors.\"$reg\"]
      endpoint = [\"http://127.0.0.1:9\"]
"
done
cat >"$STATE/containerd/config.toml" <<EOF
version = 2
root = "$STATE/containerd/root"
state = "$STATE/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.tracing.processor.v1.otlp"]
[grpc]
  address = "$SOCK"
[ttrpc]
  address = "$STATE/containerd/containerd.sock.ttrpc"
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "$STATE/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  disable_tcp_service = true
  tolerate_missing_hugetlb_controller = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "$STATE/cni/bin"
    conf_dir = "$STATE/cni/net.d"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        BinaryName = "$(command -v runc)"
  [plugins."io.containerd.grpc.v1.cri".registry]
    [plugins."io.containerd.grpc.v1.cri".registry.mirrors]
$mirrors
EOF
start containerd containerd --config "$STATE/containerd/config.toml"
wait_for 60 containerd ctr -a "$SOCK" version

# ---------------------------------------------------------------- pause image
IMG="$CACHE_ROOT/images"
PAUSE_TAR="$IMG/pause-3.10-$(cat "$CLUSTER_DIR/pause/main.go" "$CLUSTER_DIR/pause/go.mod" | sha256sum | cut -c1-12).tar"
if [ ! -s "$PAUSE_TAR" ]; then
  log "building $PAUSE_IMAGE"
  GO="$(go_bin)"; [ -n "$GO" ] || die "no Go >= 1.24 to build the pause binary"
  tmp="$(mktemp -d)"
  mkdir -p "$IMG" "$tmp/root"
  cp "$CLUSTER_DIR/pause/main.go" "$CLUSTER_DIR/pause/go.mod" "$tmp/"
  (cd "$tmp" && CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS= "$GO" build -trimpath -ldflags='-s -w' -o "$tmp/root/pause" .)
  umoci init --layout "$tmp/layout"
  umoci new --image "$tmp/layout:3.10"
  umoci insert --image "$tmp/layout:3.10" "$tmp/root" /
  umoci config --image "$tmp/layout:3.10" --config.entrypoint /pause --config.user 65535:65535
  tar -C "$tmp/layout" -cf "$PAUSE_TAR.tmp" .
  mv "$PAUSE_TAR.tmp" "$PAUSE_TAR"
  rm -rf "$tmp"
fi
ctr -a "$SOCK" -n k8s.io images import --base-name localhost/pause "$PAUSE_TAR" >&2
ctr -a "$SOCK" -n k8s.io images ls -q | grep -x "$PAUSE_IMAGE" >/dev/null || die "$PAUSE_IMAGE not in containerd after import"

# ---------------------------------------------------------------- kubelet
log "starting kubelet (node $NODE)"
mkdir -p "$STATE/kubelet/root" "$STATE/kubelet/pki" "$STATE/pod-logs"
cat >"$STATE/kubelet/config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: 127.0.0.1
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
containerRuntimeEndpoint: unix://$SOCK
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
oomScoreAdj: 0
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $PKI/ca.crt}
authorization:
  mode: Webhook
clusterDomain: cluster.local
resolvConf: /etc/resolv.conf
podLogsDir: $STATE/pod-logs
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: "100Mi"
  nodefs.available: "0%"
  nodefs.inodesFree: "0%"
  imagefs.available: "0%"
serializeImagePulls: false
EOF
start kubelet "$BIN/kubelet" --config="$STATE/kubelet/config.yaml" \
  --kubeconfig="$STATE/kubelet.kubeconfig" \
  --hostname-override="$NODE" \
  --root-dir="$STATE/kubelet/root" --cert-dir="$STATE/kubelet/pki" --v=1

# ---------------------------------------------------------------- wait until usable
log "waiting for node $NODE to register and become Ready"
wait_for 120 kubelet kctl get node "$NODE"
node_ready() {
  [ "$(kctl get node "$NODE" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" = True ] &&
    [ -z "$(kctl get node "$NODE" -o jsonpath='{.spec.taints}')" ]
}
wait_for 180 kubelet node_ready
wait_for 120 kube-controller-manager kctl -n default get serviceaccount default
wait_for 120 kube-controller-manager kctl -n default get configmap kube-root-ca.crt
for c in $COMPONENTS; do pid_alive "$c" || die "$c died during start-up (log: $STATE/log/$c.log)"; done
log "cluster up in $(( $(date +%s) - T0 ))s; kubectl: $STATE/bin/kubectl"
trap - EXIT
if [ -n "$LEASE_PID" ]; then
  touch "$STATE/owned/started-by-lease"
  add_lease "$LEASE_PID"
fi
print_exports
