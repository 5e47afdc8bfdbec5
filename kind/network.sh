#!/usr/bin/env bash
# The host's traffic rules for kind's bridge, put in place BEFORE kind's dockerd or any container
# starts, and removed after the bridge is gone. No packet from a kind container may leave the
# machine: containers reach only their own bridge and loopback.
#
#   kind/network.sh apply    # check forwarding is off, insert the DROP rules (idempotent)
#   kind/network.sh check    # exit 0 only if forwarding is off and every rule is in place
#   kind/network.sh remove   # delete exactly the rules apply inserted (by their comment)
#
# - net.ipv4.ip_forward and net.ipv6.conf.all.forwarding must be 0 (this script refuses to go on
#   otherwise: it does not turn forwarding off under another program that needs it);
# - FORWARD: anything in from the bridge to another interface, or out to it from another one, is
#   dropped (first rules of the chain; with forwarding off nothing is routed anyway);
# - INPUT: from the bridge, only replies to connections the host opened (docker-proxy publishing
#   the node's API server on 127.0.0.1) are accepted; the node cannot open a connection to any
#   address of the host;
# - the same in ip6tables; kind's dockerd runs with --iptables=false --ip-masq=false
#   --ip-forward=false, so no NAT rule is ever added.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
export PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:$PATH"

C=(-m comment --comment "$KIND_RULE_TAG")
rules() {  # rules: one rule per line, "CHAIN ARGS..." (without the comment)
  cat <<R
FORWARD -i $KIND_BRIDGE ! -o $KIND_BRIDGE -j DROP
FORWARD -o $KIND_BRIDGE ! -i $KIND_BRIDGE -j DROP
INPUT -i $KIND_BRIDGE -j DROP
INPUT -i $KIND_BRIDGE -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT
R
}
# Inserted at position 1 in this order, so the ACCEPT for replies ends up above the INPUT DROP.

forwarding_off() {
  [ "$(sysctl -n net.ipv4.ip_forward)" = 0 ] && [ "$(sysctl -n net.ipv6.conf.all.forwarding 2>/dev/null || echo 0)" = 0 ]
}

apply() {
  [ "$(id -u)" = 0 ] || kdie "kind/network.sh must run as root"
  forwarding_off || kdie "IP forwarding is on (net.ipv4.ip_forward=$(sysctl -n net.ipv4.ip_forward), net.ipv6.conf.all.forwarding=$(sysctl -n net.ipv6.conf.all.forwarding)); kind here needs it off so that no packet leaves the machine"
  local t chain args
  for t in iptables ip6tables; do
    command -v "$t" >/dev/null || { [ "$t" = ip6tables ] && continue; kdie "$t not found"; }
    while read -r chain args; do
      # shellcheck disable=SC2086
      "$t" -C "$chain" $args "${C[@]}" 2>/dev/null || "$t" -I "$chain" 1 $args "${C[@]}"
    done < <(rules)
  done
  check || kdie "rules not in place after apply"
  klog "forwarding off; DROP rules for $KIND_BRIDGE in place (iptables, ip6tables)"
}

check() {
  forwarding_off || { echo "forwarding is on" >&2; return 1; }
  local t chain args
  for t in iptables ip6tables; do
    command -v "$t" >/dev/null || continue
    while read -r chain args; do
      # shellcheck disable=SC2086
      "$t" -C "$chain" $args "${C[@]}" 2>/dev/null || { echo "$t: missing: $chain $args" >&2; return 1; }
    done < <(rules)
  done
}

remove() {
  local t chain args
  for t in iptables ip6tables; do
    command -v "$t" >/dev/null || continue
    while read -r chain args; do
      # shellcheck disable=SC2086
      while "$t" -C "$chain" $args "${C[@]}" 2>/dev/null; do "$t" -D "$chain" $args "${C[@]}"; done
    done < <(rules)
  done
  klog "DROP rules for $KIND_BRIDGE removed"
}

case "${1:-}" in
  apply) apply ;;
  check) check ;;
  remove) remove ;;
  *) echo "usage: $0 apply|check|remove" >&2; exit 2 ;;
esac
