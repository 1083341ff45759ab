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
# run interleaved (run 1 of each, then run 2, ...), RUNS (default 5) each; medians are printed
# with the ratio netcore / iperf3.
#
#   RUNS=5 SIZE=200M tools/compare-udp-burst.sh            # all configurations
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
RUNS="${RUNS:-5}"
SIZE="${SIZE:-200M}"
CONFIGS="${CONFIGS:-gso64k pps64 gsooff uring}"
ANCHORS="${ANCHORS:-$(cd .. && pwd)/shared/anchors}"
OUT="${OUT:-$(mktemp -d /tmp/compare-udp.XXXXXX)}"
NC=target/release/netcore
TX_CPU=0 RX_CPU=1

command -v iperf3 >/dev/null || { echo "iperf3 missing: apt-get install -y iperf3" >&2; exit 1; }
command -v python3 >/dev/null || { echo "python3 missing" >&2; exit 1; }
cargo build --release --quiet
if [[ ! -x "$ANCHORS/bin/udp_ceiling" && -f "$ANCHORS/build.sh" ]]; then
  bash "$ANCHORS/build.sh" >/dev/null 2>&1 || echo "note: could not build the anchors" >&2
fi
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
  python3 - "$f" "$name" <<'PY' >>"$OUT/results.tsv"
import json, sys
d = json.load(open(sys.argv[1])); s, r = d["sender"], d["receiver"]; a = r["accounting"]
secs = max(s["elapsed_s"], r["duration_s"] or 0, 1e-9)  # null: one receive batch
print(f'{sys.argv[2]}\t{r["bytes"]*8/secs/1e9:.3f}\t{a["unique"]/secs/1e6:.4f}\t{a["lost"]}\t{a["sent"]}')
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
  python3 - "$f" "$name" <<'PY' >>"$OUT/results.tsv"
import json, sys
d = json.load(open(sys.argv[1])); s, r = d["end"]["sum_sent"], d["end"]["sum_received"]
sent = s["packets"]; got = r["packets"] - r["lost_packets"]
print(f'{sys.argv[2]}\t{r["bits_per_second"]/1e9:.3f}\t{got/r["seconds"]/1e6:.4f}\t{r["lost_packets"]}\t{sent}')
PY
}

run_ceiling() {  # name args...
  local name=$1; shift
  [[ -x "$ANCHORS/bin/udp_ceiling" ]] || return 0
  "$ANCHORS/bin/udp_ceiling" --size "$bytes" --tx-cpu $TX_CPU --rx-cpu $RX_CPU --rcvbuf 134217728 --force-rcvbuf "$@" \
    | tr ' ' '\n' | awk -F= -v n="$name" '{v[$1]=$2} END {printf "%s\t%s\t%s\t%s\t%s\n", n, v["rx_gbps"], v["rx_mpps"], v["lost"], v["sent"]}' >>"$OUT/results.tsv"
}

: >"$OUT/results.tsv"
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

python3 - "$OUT/results.tsv" "$RUNS" "$SIZE" <<'PY'
import sys, statistics as st
rows = {}
for line in open(sys.argv[1]):
    n, g, p, lost, sent = line.rstrip("\n").split("\t")
    rows.setdefault(n, []).append((float(g), float(p), int(lost), int(sent)))
def med(n, i):
    v = [x[i] for x in rows.get(n, [])]
    return st.median(v) if v else float("nan")
print(f"# BURSTS: netcore vs iperf3, UDP over loopback, {sys.argv[3]} per run, {sys.argv[2]} interleaved runs, medians")
print(f"{'configuration':24} {'goodput Gbit/s':>15} {'Mpps':>8} {'lost (max of runs)':>19}")
for n in rows:
    print(f"{n:24} {med(n,0):15.3f} {med(n,1):8.4f} {max(x[2] for x in rows[n]):19d}")
print()
for a, b, what, i in [("nc_1472", "iperf3_1472", "1472 B goodput", 0),
                      ("nc_64", "iperf3_64", "64 B packet rate", 1),
                      ("nc_1472_gsooff", "iperf3_1472_b", "1472 B goodput, netcore --gso off", 0)]:
    if a in rows and b in rows:
        print(f"ratio netcore/iperf3, {what}: {med(a,i)/med(b,i):.2f}x")
for a, b, what in [("nc_1472_uring", "nc_1472_mio", "--backend uring / mio, both sides"),
                   ("nc_1472_txuring", "nc_1472_mio", "blast --backend uring / mio (recv mio)"),
                   ("nc_1472_rxuring", "nc_1472_mio", "recv --backend uring / mio (blast mio)"),
                   ("nc_1472_zc", "nc_1472_txuring", "blast --zerocopy / without (uring, recv mio)"),
                   ("nc_1472_zc", "nc_1472_mio", "blast --zerocopy / --backend mio (recv mio)")]:
    if a in rows and b in rows:
        print(f"ratio {what}, 1472 B goodput: {med(a,0)/med(b,0):.2f}x")
for a, c, i in [("nc_1472", "ceil_gso_gro_1472", 0), ("nc_64", "ceil_gso_gro_64", 1),
                ("nc_1472_gsooff", "ceil_mmsg64_1472", 0)]:
    if a in rows and c in rows:
        print(f"netcore {a} / C ceiling {c}: {med(a,i)/med(c,i):.2f}x")
PY
# The uring configuration: the sender's own rate too (datagrams the kernel accepted per second
# of sending), since goodput is bounded by the receiver when it cannot keep up.
if [[ " $CONFIGS " == *" uring "* || " $CONFIGS " == *" zerocopy "* ]]; then
  python3 - "$OUT" <<'PY'
import glob, json, os, statistics as st, sys
print()
for n in ["nc_1472_mio", "nc_1472_txuring", "nc_1472_uring", "nc_1472_zc"]:
    v = [json.load(open(f))["sender"]["rate_bps"] / 1e9
         for f in glob.glob(os.path.join(sys.argv[1], n + ".r*.json")) if not f.endswith(".recv.json")]
    if v:
        print(f"{n:24} sender rate (kernel accepted) median {st.median(v):.3f} Gbit/s over {len(v)} runs")
PY
fi
echo "raw results: $OUT" >&2
