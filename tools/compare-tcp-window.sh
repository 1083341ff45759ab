#!/usr/bin/env bash
# compare-tcp-window.sh - netcore blast --proto tcp --window W vs iperf3 -w W over loopback.
#
# Work: TIME (default 2) seconds of unpaced TCP, one stream, per run; the server process pinned
# to CPU 1 and the client to CPU 0 (taskset, the same for both tools), separate processes. Each
# window in WINDOWS (default 4K 16K 64K 256K) runs for both tools, interleaved (run 1 of every
# configuration, then run 2, ...), RUNS (default 5) each. tools/stats.py prints per
# configuration min / median / max and the ratio netcore / iperf3 of the median goodput with a
# bootstrap 95 % interval, and the load average before and after (this machine is shared: read
# the ratios with it). The buffers each tool says the kernel granted are printed too (netcore's
# report `buffers`; iperf3's `sndbuf_actual`/`rcvbuf_actual`): both ask for W and get 2W.
#
# iperf3: IPERF3 (default /opt/iperf3-new/bin/iperf3, 3.21+, built by the team's
# shared/peers/build-iperf3.sh; else Debian's /usr/bin/iperf3, 3.12).
#
#   RUNS=5 TIME=2 tools/compare-tcp-window.sh
#   WINDOWS="4K 16K" IPERF3=/usr/bin/iperf3 tools/compare-tcp-window.sh
#
# Goodput: bits the receiving side read / its time (netcore: the SUM row; iperf3:
# end.sum_received).
set -euo pipefail
cd "$(dirname "$0")/.."
source tools/lib.sh
RUNS="${RUNS:-5}"
TIME="${TIME:-2}"
WINDOWS="${WINDOWS:-4K 16K 64K 256K}"
OUT="${OUT:-$(mktemp -d /tmp/compare-tcp-window.XXXXXX)}"; mkdir -p "$OUT"
NC=target/release/netcore
TX_CPU=0 RX_CPU=1
if [[ -z "${IPERF3:-}" ]]; then
  IPERF3=/usr/bin/iperf3
  [[ -x /opt/iperf3-new/bin/iperf3 ]] && IPERF3=/opt/iperf3-new/bin/iperf3
fi
[[ -x $IPERF3 ]] || die "$IPERF3 missing (apt-get install -y iperf3)"
cargo build --release --quiet

run_netcore() {  # window
  local w=$1 port=15321 f="$OUT/nc_$1.r$r.json"
  taskset -c $RX_CPU $NC recv --listen 127.0.0.1:$port --once --json >/dev/null 2>&1 &
  local pid=$!; PIDS+=("$pid")
  port_wait $port
  taskset -c $TX_CPU $NC blast --proto tcp --to 127.0.0.1:$port --time "${TIME}s" --window "$w" \
    --json >"$f" || true
  wait "$pid" 2>/dev/null || true
  local g; g=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["sum"][0]["goodput_bps"]/1e9)' "$f")
  sample "$OUT/samples.tsv" "nc_$w" goodput_gbit "$g"
}

run_iperf3() {  # window
  local w=$1 port=15221 f="$OUT/iperf3_$1.r$r.json"
  taskset -c $RX_CPU "$IPERF3" -s -1 -B 127.0.0.1 -p $port >/dev/null 2>&1 &
  local pid=$!; PIDS+=("$pid")
  port_wait $port
  taskset -c $TX_CPU "$IPERF3" -c 127.0.0.1 -p $port -t "$TIME" -w "$w" --json >"$f" || true
  wait "$pid" 2>/dev/null || true
  local g; g=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["end"]["sum_received"]["bits_per_second"]/1e9)' "$f")
  sample "$OUT/samples.tsv" "iperf3_$w" goodput_gbit "$g"
}

: >"$OUT/samples.tsv"
before=$(loadavg)
for r in $(seq 1 "$RUNS"); do
  for w in $WINDOWS; do
    log "run $r/$RUNS: --window $w"
    run_netcore "$w"
    run_iperf3 "$w"
  done
done
after=$(loadavg)

echo "# netcore $(git describe --always --dirty) vs $("$IPERF3" --version | head -1), one TCP stream, ${TIME} s per run, $RUNS interleaved runs"
echo
echo "buffers the kernel granted (first run, the receiving side):"
for w in $WINDOWS; do
  python3 - "$w" "$OUT/nc_$w.r1.json" "$OUT/iperf3_$w.r1.json" <<'PY'
import json, sys
w, nc, ip = sys.argv[1], json.load(open(sys.argv[2])), json.load(open(sys.argv[3]))
b = nc.get("buffers") or {}
s = b.get("server") or {}
st = ip["start"]
print(f"  --window {w}: netcore server snd {s.get('sndbuf', 'n/a')} rcv {s.get('rcvbuf', 'n/a')}; "
      f"iperf3 client snd {st.get('sndbuf_actual', 'n/a')} rcv {st.get('rcvbuf_actual', 'n/a')}")
PY
done
echo
ratios=()
for w in $WINDOWS; do ratios+=(--ratio "goodput_gbit:nc_$w/iperf3_$w"); done
python3 tools/stats.py "$OUT/samples.tsv" "${ratios[@]}" --load-before "$before" --load-after "$after"
log "raw results: $OUT"
