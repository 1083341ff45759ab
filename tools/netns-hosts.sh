#!/usr/bin/env bash
# netns-hosts.sh - two "hosts" on one machine: network namespaces joined by a veth pair, the
# same setup the two_hosts_over_veth test builds (needs root and iproute2).
#
#   sudo tools/netns-hosts.sh up      # create ncA (10.0.0.1/30) and ncB (10.0.0.2/30)
#   sudo tools/netns-hosts.sh status  # show them
#   sudo tools/netns-hosts.sh down    # remove them (deleting a namespace deletes its veth end)
#
# Then, for example:
#   sudo ip netns exec ncA target/release/netcore recv --listen 10.0.0.1:5300
#   sudo ip netns exec ncB target/release/netcore blast --to 10.0.0.1:5300 --size 200MB
# or through an impairment relay on host B:
#   sudo ip netns exec ncB target/release/netcore relay --listen 127.0.0.1:5400 \
#        --to 10.0.0.1:5300 --loss 1% --reorder 2% --seed 1
#   sudo ip netns exec ncB target/release/netcore blast --to 127.0.0.1:5400 --control 10.0.0.1:5300
#
# The addresses exist only inside the two namespaces. Names can be changed with NS_A, NS_B,
# VETH_A and VETH_B (interface names: at most 15 characters).
set -euo pipefail
NS_A="${NS_A:-ncA}" NS_B="${NS_B:-ncB}"
VETH_A="${VETH_A:-veth-ncA}" VETH_B="${VETH_B:-veth-ncB}"
ADDR_A=10.0.0.1/30 ADDR_B=10.0.0.2/30

die() { echo "netns-hosts: $*" >&2; exit 1; }
command -v ip >/dev/null || die "the ip command is missing: apt-get install -y iproute2"
[[ $(id -u) -eq 0 ]] || die "needs root (network namespaces)"

exists() { ip netns list | awk '{print $1}' | grep -qx "$1"; }

up() {
  exists "$NS_A" && die "$NS_A exists already (run: $0 down)"
  exists "$NS_B" && die "$NS_B exists already (run: $0 down)"
  trap 'down >/dev/null 2>&1 || true; die "setup failed, rolled back"' ERR
  ip netns add "$NS_A"
  ip netns add "$NS_B"
  ip link add "$VETH_A" type veth peer name "$VETH_B"
  ip link set "$VETH_A" netns "$NS_A"
  ip link set "$VETH_B" netns "$NS_B"
  ip -n "$NS_A" addr add "$ADDR_A" dev "$VETH_A"
  ip -n "$NS_B" addr add "$ADDR_B" dev "$VETH_B"
  for pair in "$NS_A:$VETH_A" "$NS_B:$VETH_B"; do
    ip -n "${pair%%:*}" link set "${pair#*:}" up
    ip -n "${pair%%:*}" link set lo up
  done
  trap - ERR
  ip netns exec "$NS_B" ping -c 1 -W 2 "${ADDR_A%/*}" >/dev/null 2>&1 \
    || echo "netns-hosts: note: ping $NS_B -> ${ADDR_A%/*} failed (no ping binary?)" >&2
  echo "up: $NS_A ${ADDR_A%/*} <-> $NS_B ${ADDR_B%/*} ($VETH_A/$VETH_B)"
}

down() {
  local rc=0
  for ns in "$NS_A" "$NS_B"; do
    if exists "$ns"; then ip netns del "$ns" || rc=1; fi
  done
  # A veth end left in the root namespace (a setup that failed half-way).
  ip link show "$VETH_A" >/dev/null 2>&1 && ip link del "$VETH_A"
  echo "down: $NS_A $NS_B removed"
  return $rc
}

status() {
  for ns in "$NS_A" "$NS_B"; do
    if exists "$ns"; then
      echo "== $ns"; ip -n "$ns" -brief addr
    else
      echo "== $ns: absent"
    fi
  done
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
