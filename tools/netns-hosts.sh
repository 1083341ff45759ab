#!/usr/bin/env bash
# netns-hosts.sh - "hosts" on one machine: network namespaces joined by veth pairs (needs root and
# iproute2).
#
# Two hosts, the same setup the two_hosts_over_veth test builds:
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
# A bottleneck router between a client and a server (a queue that sits in a router, as on a
# real path, not under the sender's own socket):
#   sudo tools/netns-hosts.sh up --rate 100Mbit --queue 1250000   # or --queue 100ms, 1MB, 64KiB
#   client ncC 10.9.1.2 -- ncR (10.9.1.1 | 10.9.2.1, forwarding) -- server ncS 10.9.2.2
# The router's egress towards each side is a tbf qdisc: --rate (bit/s: 100Mbit, 1Gbit, 500kbit),
# --queue (the tbf limit: bytes waiting for tokens; B/KB/MB are powers of 1000, KiB/MiB of 1024,
# a time such as 100ms means that long at --rate), --burst (tokens: default 4 ms at --rate, at
# least 16 KB). A full queue of Q bytes at R bit/s adds 8Q/R seconds. Then, for example:
#   sudo ip netns exec ncS target/release/netcore recv --listen 10.9.2.2:5300
#   sudo ip netns exec ncC target/release/netcore rpm --to 10.9.2.2:5300
#   sudo ip netns exec ncC ping 10.9.2.2
# Delay, loss and AQM (--delay, --loss, --aqm) are refused: they need netem or fq_codel, which
# this kernel does not have (it has tbf); `down` removes the router's namespaces too.
#
# The addresses exist only inside the namespaces. Names can be changed with NS_A, NS_B, VETH_A
# and VETH_B (two hosts), NS_C, NS_R, NS_S and NET (router; NET=10.9 gives 10.9.1.0/24 and
# 10.9.2.0/24); interface names are at most 15 characters.
set -euo pipefail
NS_A="${NS_A:-ncA}" NS_B="${NS_B:-ncB}"
VETH_A="${VETH_A:-veth-ncA}" VETH_B="${VETH_B:-veth-ncB}"
ADDR_A=10.0.0.1/30 ADDR_B=10.0.0.2/30
NS_C="${NS_C:-ncC}" NS_R="${NS_R:-ncR}" NS_S="${NS_S:-ncS}" NET="${NET:-10.9}"

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


# --- the router: client -- router -- server ---

# A rate in bit/s for tc: 100Mbit, 1gbit, 500kbit, 2500000 (bits).
parse_rate() {
  local v="${1,,}" n unit
  [[ $v =~ ^([0-9]+(\.[0-9]+)?)(bit|kbit|mbit|gbit)?(/s)?$ ]] || die "bad rate '$1' (e.g. 100Mbit)"
  n="${BASH_REMATCH[1]}" unit="${BASH_REMATCH[3]:-bit}"
  case "$unit" in
    bit) awk -v n="$n" 'BEGIN{printf "%d", n}' ;;
    kbit) awk -v n="$n" 'BEGIN{printf "%d", n*1e3}' ;;
    mbit) awk -v n="$n" 'BEGIN{printf "%d", n*1e6}' ;;
    gbit) awk -v n="$n" 'BEGIN{printf "%d", n*1e9}' ;;
  esac
}

# A size in bytes: 1250000, 1MB (10^6), 64KiB (2^16), or a time at rate $2 bit/s: 100ms.
parse_size() {
  local v="${1,,}" rate="$2" n unit
  [[ $v =~ ^([0-9]+(\.[0-9]+)?)(b|kb|mb|gb|kib|mib|gib|ms|us|s)?$ ]] \
    || die "bad size '$1' (e.g. 1250000, 1MB, 64KiB or 100ms)"
  n="${BASH_REMATCH[1]}" unit="${BASH_REMATCH[3]:-b}"
  case "$unit" in
    b) awk -v n="$n" 'BEGIN{printf "%d", n}' ;;
    kb) awk -v n="$n" 'BEGIN{printf "%d", n*1e3}' ;;
    mb) awk -v n="$n" 'BEGIN{printf "%d", n*1e6}' ;;
    gb) awk -v n="$n" 'BEGIN{printf "%d", n*1e9}' ;;
    kib) awk -v n="$n" 'BEGIN{printf "%d", n*1024}' ;;
    mib) awk -v n="$n" 'BEGIN{printf "%d", n*1048576}' ;;
    gib) awk -v n="$n" 'BEGIN{printf "%d", n*1073741824}' ;;
    s) awk -v n="$n" -v r="$rate" 'BEGIN{printf "%d", n*r/8}' ;;
    ms) awk -v n="$n" -v r="$rate" 'BEGIN{printf "%d", n*r/8e3}' ;;
    us) awk -v n="$n" -v r="$rate" 'BEGIN{printf "%d", n*r/8e6}' ;;
  esac
}

refuse_impairment() {
  die "$1 needs $2, which this kernel does not have (it has tbf only: no netem, fq_codel, codel or fq); this script shapes with tbf (--rate, --queue, --burst) only"
}

router_up() {
  local rate="" queue="" burst=""
  while [[ $# -gt 0 ]]; do
    case "$1" in
      --rate) rate="${2:-}"; shift 2 || die "--rate needs a value" ;;
      --queue) queue="${2:-}"; shift 2 || die "--queue needs a value" ;;
      --burst) burst="${2:-}"; shift 2 || die "--burst needs a value" ;;
      --delay|--loss|--jitter|--reorder) refuse_impairment "$1" netem ;;
      --aqm) refuse_impairment "$1 ${2:-}" "fq_codel (or codel/fq)" ;;
      *) die "unknown option '$1' (up [--rate R --queue Q [--burst B]])" ;;
    esac
  done
  [[ -n $rate ]] || rate=100Mbit
  local bps limit tokens
  bps=$(parse_rate "$rate")
  [[ $bps -ge 8000 ]] || die "rate $rate: at least 8kbit"
  [[ -n $queue ]] || queue=100ms
  limit=$(parse_size "$queue" "$bps")
  if [[ -n $burst ]]; then tokens=$(parse_size "$burst" "$bps"); else
    tokens=$(( bps / 8 / 250 )); [[ $tokens -ge 16000 ]] || tokens=16000
  fi
  [[ $limit -ge 1514 ]] || die "queue $queue is $limit bytes: at least one packet (1514)"
  for ns in "$NS_C" "$NS_R" "$NS_S"; do
    exists "$ns" && die "$ns exists already (run: $0 down)"
  done
  trap 'router_down >/dev/null 2>&1 || true; die "setup failed, rolled back"' ERR
  local c="veth-$NS_C" rc="veth-${NS_R}c" rs="veth-${NS_R}s" s="veth-$NS_S"
  for ns in "$NS_C" "$NS_R" "$NS_S"; do ip netns add "$ns"; ip -n "$ns" link set lo up; done
  ip link add "$c" netns "$NS_C" type veth peer name "$rc" netns "$NS_R"
  ip link add "$s" netns "$NS_S" type veth peer name "$rs" netns "$NS_R"
  ip -n "$NS_C" addr add "$NET.1.2/24" dev "$c"
  ip -n "$NS_R" addr add "$NET.1.1/24" dev "$rc"
  ip -n "$NS_R" addr add "$NET.2.1/24" dev "$rs"
  ip -n "$NS_S" addr add "$NET.2.2/24" dev "$s"
  ip -n "$NS_C" link set "$c" up
  ip -n "$NS_R" link set "$rc" up
  ip -n "$NS_R" link set "$rs" up
  ip -n "$NS_S" link set "$s" up
  ip -n "$NS_C" route add default via "$NET.1.1"
  ip -n "$NS_S" route add default via "$NET.2.1"
  ip netns exec "$NS_R" sysctl -qw net.ipv4.ip_forward=1
  # The bottleneck: the router's egress towards the server (upload) and the client (download).
  for dev in "$rs" "$rc"; do
    ip netns exec "$NS_R" tc qdisc replace dev "$dev" root tbf rate "${bps}bit" \
      burst "$tokens" limit "$limit"
  done
  trap - ERR
  if command -v ping >/dev/null; then
    ip netns exec "$NS_C" ping -c 1 -W 2 "$NET.2.2" >/dev/null 2>&1 \
      || echo "netns-hosts: note: ping $NS_C -> $NET.2.2 failed" >&2
  fi
  local ms
  ms=$(awk -v q="$limit" -v r="$bps" 'BEGIN{printf "%.1f", q*8e3/r}')
  echo "up: client $NS_C $NET.1.2 -- router $NS_R ($NET.1.1 | $NET.2.1) -- server $NS_S $NET.2.2"
  echo "bottleneck: tbf rate ${bps} bit/s, queue $limit bytes (adds up to $ms ms), burst $tokens bytes, both ways"
}

router_down() {
  local rc=0 any=0
  for ns in "$NS_C" "$NS_R" "$NS_S"; do
    if exists "$ns"; then any=1; ip netns del "$ns" || rc=1; fi
  done
  [[ $any -eq 1 ]] && echo "down: $NS_C $NS_R $NS_S removed"
  return $rc
}

router_status() {
  for ns in "$NS_C" "$NS_R" "$NS_S"; do
    if exists "$ns"; then
      echo "== $ns"; ip -n "$ns" -brief addr
      [[ $ns == "$NS_R" ]] && ip netns exec "$ns" tc -s qdisc show | grep -A2 tbf
    fi
  done
  return 0
}

case "${1:-}" in
  up) shift; if [[ $# -gt 0 ]]; then router_up "$@"; else up; fi ;;
  down) down; router_down || exit 1 ;;
  status) status; router_status ;;
  *) echo "usage: $0 up [--rate R --queue Q [--burst B]] | down | status" >&2; exit 2 ;;
esac
