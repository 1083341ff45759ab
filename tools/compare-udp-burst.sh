#!/usr/bin/env bash
# compare-udp-burst.sh - BURSTS, not steady state: netcore blast/recv vs Debian's iperf3 (3.12)
# on the same loopback work (SIZE bytes per run, 200 MiB by default: tens of milliseconds, which
# netcore's 128 MiB receive buffer absorbs nearly whole), with the kernel's ceiling (the C
# udp_ceiling yardstick from shared/anchors) measured in the same run; and netcore's backends
# against each other (CONFIGS=uring, CONFIGS=zerocopy). For netcore against the current iperf3 in
# steady state, use tools/compare-udp.sh.
#
# Work: SIZE (default 200M = 200 MiB) of LEN-byte datagrams, unpaced; receiver pinned to CPU 1
# and sender to CPU 0; separate receiver and sender processes for both tools. Configurations
# run interleaved (run 1 of each, then run 2, ...), RUNS (default 10) each. Printed (markdown, by
# tools/stats.py): the ratios with their bootstrap 95 % intervals and verdicts (netcore / iperf3,
# netcore / the C ceiling, backend / backend), then min/median/max per configuration of goodput
# (gbps), packets received per second (mpps), datagrams lost and, for the backend runs, the
# sender's rate (sender_gbps: what the kernel accepted per second of sending), and the load
# average before and after.
#
#   RUNS=10 SIZE=200M tools/compare-udp-burst.sh           # all configurations
#   CONFIGS="gso64k gsooff" tools/compare-udp-burst.sh     # a subset
#   CONFIGS=uring RUNS=7 tools/compare-udp-burst.sh         # io_uring vs mio backends only
#   CONFIGS=zerocopy tools/compare-udp-burst.sh             # SEND_ZC vs SEND vs sendmmsg
#
# Configurations: gso64k (1472 B, netcore defaults: --backend auto), pps64 (64 B), gsooff
# (1472 B, sendmmsg without GSO), uring (1472 B, GSO default: netcore with --backend uring on
# both sides vs --backend mio on both sides, and each side alone on uring, interleaved, with the
# ratios to mio), zerocopy
# (1472 B, receiver mio: blast --backend uring --zerocopy vs the same without --zerocopy vs
# --backend mio; on loopback the kernel copies zero-copy sends anyway, see the report's
# zerocopy line).
#
# Goodput is received UDP payload bits per second (1 Gbit = 1e9 bits), as iperf3 reports it.
# netcore's is computed conservatively: unique bytes / the longer of the sender's sending time
# and the receiver's first-to-last arrival time.
set -euo pipefail
cd "$(dirname "$0")/.."
source tools/lib.sh
RUNS="${RUNS:-10}"
SIZE="${SIZE:-200M}"
CONFIGS="${CONFIGS:-gso64k pps64 gsooff uring}"
OUT="${OUT:-$(mktemp -d /tmp/compare-udp-burst.XXXXXX)}"; mkdir -p "$OUT"
TX_CPU=0 RX_CPU=1
TSV="$OUT/samples.tsv"

command -v iperf3 >/dev/null || { echo "iperf3 missing: apt-get install -y iperf3" >&2; exit 1; }
command -v python3 >/dev/null || { echo "python3 missing" >&2; exit 1; }
need_netcore
CEILING=$(anchor udp_ceiling)
bytes=$(numfmt --from=iec "$SIZE")



# netcore: a fresh receiver per run (pinned), then the sender (pinned). RX_EXTRA: extra
# receiver arguments.
run_netcore() {  # name len extra-blast-args...
  local name=$1 len=$2; shift 2
  local port=15301 f="$OUT/$name.r$r.json"
  # shellcheck disable=SC2086
  taskset -c $RX_CPU $NC recv --listen 127.0.0.1:$port --once --json --cpus $RX_CPU ${RX_EXTRA:-} >"$OUT/$name.r$r.recv.json" 2>/dev/null &
  local pid=$!; PIDS+=("$pid")
  port_wait tcp $port
  taskset -c $TX_CPU $NC blast --to 127.0.0.1:$port --size "$bytes" --len "$len" --cpus $TX_CPU --json "$@" >"$f" || true
  wait "$pid" 2>/dev/null || true
  python3 - "$f" "$name" "$OUT/segs" <<'PY' >>"$TSV" || log "run $r $name: no report"
import json, sys
d = json.load(open(sys.argv[1])); s, r = d["sender"], d["receiver"]; a = r["accounting"]
secs = max(s["elapsed_s"], r["duration_s"] or 0, 1e-9)  # null: one receive batch
n = sys.argv[2]
print(f'{n}\tgbps\t{r["bytes"]*8/secs/1e9:.4f}\n{n}\tmpps\t{a["unique"]/secs/1e6:.4f}\n{n}\tlost\t{a["lost"]}')
if s.get("rate_bps"):
    print(f'{n}\tsender_gbps\t{s["rate_bps"]/1e9:.4f}')
open(sys.argv[3], "w").write(str(s.get("gso_segments") or 1))
PY
}

run_iperf3() {  # name len extra...
  local name=$1 len=$2; shift 2
  local port=15201 f="$OUT/$name.r$r.json"
  taskset -c $RX_CPU iperf3 -s -1 -B 127.0.0.1 -p $port >/dev/null 2>&1 &
  local pid=$!; PIDS+=("$pid")
  port_wait tcp $port
  taskset -c $TX_CPU iperf3 -c 127.0.0.1 -p $port -u -b 0 -l "$len" -n "$SIZE" --json "$@" >"$f" || true
  wait "$pid" 2>/dev/null || true
  python3 - "$f" "$name" <<'PY' >>"$TSV" || log "run $r $name: no report"
import json, sys
d = json.load(open(sys.argv[1])); r = d["end"]["sum_received"]
got = r["packets"] - r["lost_packets"]; n = sys.argv[2]
print(f'{n}\tgbps\t{r["bits_per_second"]/1e9:.4f}\n{n}\tmpps\t{got/r["seconds"]/1e6:.4f}\n{n}\tlost\t{r["lost_packets"]}')
PY
}

# udp_ceiling with GSO sends as many segments per send as netcore's last run did (its report's
# gso_segments), so the two pay the same per-message costs.
run_ceiling() {  # name args...
  local name=$1; shift
  if [[ " $* " == *" --mode gso "* && -s $OUT/segs ]]; then
    local segs len a prev=
    segs=$(cat "$OUT/segs")
    for a in "$@"; do [[ $prev == --len ]] && len=$a; prev=$a; done
    set -- "$@" --max-segs "$segs" --gso-bytes $((segs * len))
  fi
  "$CEILING" --size "$bytes" --tx-cpu $TX_CPU --rx-cpu $RX_CPU --rcvbuf 134217728 --force-rcvbuf "$@" \
    | tr ' ' '\n' | awk -F= -v n="$name" '{v[$1]=$2} END {if (v["rx_gbps"] != "") printf "%s\tgbps\t%s\n%s\tmpps\t%s\n%s\tlost\t%s\n", n, v["rx_gbps"], n, v["rx_mpps"], n, v["lost"]}' >>"$TSV"
}

: >"$TSV"
before=$(loadavg)
for r in $(seq 1 "$RUNS"); do
  for c in $CONFIGS; do
    echo "run $r/$RUNS: $c" >&2
    case $c in
      gso64k)  # 1472-byte datagrams, netcore defaults (GSO + GRO)
        run_netcore nc_1472 1472
        run_iperf3 iperf3_1472 1472
        run_ceiling ceil_gso_gro_1472 --mode gso --batch 1 --gro 1 --len 1472 ;;
      pps64)   # 64-byte datagrams: packets per second
        run_netcore nc_64 64
        run_iperf3 iperf3_64 64
        run_ceiling ceil_gso_gro_64 --mode gso --batch 1 --gro 1 --len 64 ;;
      gsooff)  # 1472 bytes, netcore without GSO (sendmmsg only)
        run_netcore nc_1472_gsooff 1472 --gso off
        run_iperf3 iperf3_1472_b 1472
        run_ceiling ceil_mmsg64_1472 --mode mmsg --batch 64 --len 1472 ;;
      uring)   # 1472 bytes, GSO default: io_uring on both sides vs mio on both sides
        RX_EXTRA="--backend mio" run_netcore nc_1472_mio 1472 --backend mio
        RX_EXTRA="--backend uring" run_netcore nc_1472_uring 1472 --backend uring
        RX_EXTRA="--backend mio" run_netcore nc_1472_txuring 1472 --backend uring
        RX_EXTRA="--backend uring" run_netcore nc_1472_rxuring 1472 --backend mio ;;
      zerocopy)  # 1472 bytes, receiver mio: SEND_ZC vs SEND vs sendmmsg
        RX_EXTRA="--backend mio" run_netcore nc_1472_mio 1472 --backend mio
        RX_EXTRA="--backend mio" run_netcore nc_1472_txuring 1472 --backend uring
        RX_EXTRA="--backend mio" run_netcore nc_1472_zc 1472 --backend uring --zerocopy ;;
      *) echo "unknown configuration $c" >&2; exit 2 ;;
    esac
  done
done

after=$(loadavg)

# Ratios for the configurations that ran: headline (defaults) first, then the others.
ratios=()
has() { grep -q "^$1	" "$TSV"; }
add() {  # label metric a b
  has "$3" && has "$4" && ratios+=(--ratio "$1=$2:$3/$4") || true
}
add headline gbps nc_1472 iperf3_1472
add headline gbps nc_1472 ceil_gso_gro_1472
add headline mpps nc_64 iperf3_64
add headline mpps nc_64 ceil_gso_gro_64
add "extra: --gso off" gbps nc_1472_gsooff iperf3_1472_b
add "extra: --gso off" gbps nc_1472_gsooff ceil_mmsg64_1472
add "backends: both sides" gbps nc_1472_uring nc_1472_mio
add "backends: blast uring, recv mio" gbps nc_1472_txuring nc_1472_mio
add "backends: recv uring, blast mio" gbps nc_1472_rxuring nc_1472_mio
add "backends: blast uring, recv mio" sender_gbps nc_1472_txuring nc_1472_mio
add "backends: --zerocopy / without" gbps nc_1472_zc nc_1472_txuring
add "backends: --zerocopy / --backend mio" gbps nc_1472_zc nc_1472_mio
echo "### BURSTS: netcore vs iperf3 and udp_ceiling, UDP over loopback, $SIZE per run, $RUNS interleaved runs"
echo
echo "Receiver on CPU $RX_CPU, sender on CPU $TX_CPU. netcore: $($NC --version); iperf3: $(iperf3 --version | head -1); kernel $(uname -r). Configurations: nc_LEN (defaults), iperf3_LEN (-u -b 0 -l LEN), ceil_* (udp_ceiling), nc_1472_{mio,uring,txuring,rxuring,zc} (backends)."
echo
python3 tools/stats.py "$TSV" "${ratios[@]}" --load-before "$before" --load-after "$after"
log "raw results: $OUT"
