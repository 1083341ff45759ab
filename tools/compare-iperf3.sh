#!/usr/bin/env bash
# compare-iperf3.sh - netcore as one end of an iperf3 test vs iperf3 at both ends, same loopback.
#
# Pairs (TCP, TIME seconds unpaced, one stream; server on CPU 1, client on CPU 0 via taskset):
#   ip-ip   iperf3 -c      -> iperf3 -s      (the baseline)
#   nc-ip   netcore blast --to iperf3://     -> iperf3 -s
#   ip-nc   iperf3 -c      -> netcore recv
# Runs interleaved (run 1 of each pair, then run 2, ...), RUNS (default 5) each; prints the
# median goodput of each pair and the ratios to the baseline of the same run set. Goodput: the
# receiving side's bytes / its seconds as the client reports them (iperf3: end.sum_received;
# netcore blast: the server's figures iperf3 returned). IPERF3 (default /usr/bin/iperf3) is
# the peer, e.g. IPERF3=/opt/iperf3-new/bin/iperf3. The machine's load shows in the spread:
# compare only figures of one run set.
#
#   RUNS=5 TIME=3 tools/compare-iperf3.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. tools/lib.sh
RUNS="${RUNS:-5}"
TIME="${TIME:-3}"
IPERF3="${IPERF3:-/usr/bin/iperf3}"
OUT="${OUT:-$(mktemp -d /tmp/compare-iperf3.XXXXXX)}"; mkdir -p "$OUT"
NC=target/release/netcore
TX_CPU=0 RX_CPU=1
[[ -x $IPERF3 ]] || die "$IPERF3 missing (apt-get install -y iperf3)"
cargo build --release --quiet
# The receiving side's goodput in Gbit/s from an iperf3 client's JSON.
iperf3_gbps() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["end"]["sum_received"]["bits_per_second"]/1e9)' "$1"; }

run_pair() {  # pair run
  local p=$1 r=$2 port=15251 f="$OUT/$1.r$2.json" pid
  case $p in
    ip-ip|nc-ip) taskset -c $RX_CPU "$IPERF3" -s -1 -B 127.0.0.1 -p $port >/dev/null 2>&1 & ;;
    ip-nc) taskset -c $RX_CPU $NC recv --listen 127.0.0.1:$port --json >/dev/null 2>&1 & ;;
  esac
  pid=$!; PIDS+=("$pid")
  port_wait $port
  case $p in
    ip-ip|ip-nc)
      taskset -c $TX_CPU "$IPERF3" -c 127.0.0.1 -p $port -t "$TIME" --json >"$f" || true
      iperf3_gbps "$f" ;;
    nc-ip)
      taskset -c $TX_CPU $NC blast --proto tcp --to iperf3://127.0.0.1:$port --time "${TIME}s" --json >"$f" || true
      python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d["sum"][0]["goodput_bps"]/1e9)' "$f" ;;
  esac
  stop_pid "$pid"
}

PAIRS="ip-ip nc-ip ip-nc"
: >"$OUT/results.tsv"
for r in $(seq 1 "$RUNS"); do
  for p in $PAIRS; do
    g=$(run_pair "$p" "$r")
    log "run $r $p: $g Gbit/s"
    printf '%s\t%s\n' "$p" "$g" >>"$OUT/results.tsv"
  done
done
python3 - "$OUT/results.tsv" "$("$IPERF3" --version | head -1)" <<'PY'
import statistics, sys
rows = [l.split("\t") for l in open(sys.argv[1]).read().splitlines()]
med = {p: statistics.median(float(g) for q, g in rows if q == p) for p in ("ip-ip", "nc-ip", "ip-nc")}
print(f"peer: {sys.argv[2]}; medians of {len(rows) // 3} interleaved runs, TCP one stream")
names = {"ip-ip": "iperf3 -c -> iperf3 -s", "nc-ip": "netcore blast -> iperf3 -s", "ip-nc": "iperf3 -c -> netcore recv"}
for p in ("ip-ip", "nc-ip", "ip-nc"):
    print(f"{names[p]:28} {med[p]:7.2f} Gbit/s  {med[p] / med['ip-ip']:.2f}x")
PY
