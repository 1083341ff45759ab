#!/usr/bin/env bash
# compare-iperf3.sh - netcore as one end of an iperf3 test vs iperf3 at both ends, same loopback.
#
# Pairs (TCP, TIME seconds unpaced, one stream; server on CPU 1, client on CPU 0 via taskset):
#   ip-ip   iperf3 -c      -> iperf3 -s      (the baseline)
#   nc-ip   netcore blast --to iperf3://     -> iperf3 -s
#   ip-nc   iperf3 -c      -> netcore recv
# Runs interleaved (run 1 of each pair, then run 2, ...), RUNS (default 10) each. Goodput: the
# receiving side's bytes / its seconds as the client reports them (iperf3: end.sum_received;
# netcore blast: the server's figures iperf3 returned). IPERF3 (default: iperf3 3.21+ in
# /opt/iperf3-new, built by shared/peers/build-iperf3.sh) is the peer; IPERF3=/usr/bin/iperf3 for
# Debian's 3.12.
#
# Output (markdown, stdout, by tools/stats.py): each pair / the baseline with its bootstrap 95 %
# interval and verdict (interop: "on par" is the goal, netcore at one end costs nothing), then
# min/median/max per pair and the load average before and after.
#
#   tools/compare-iperf3.sh                    # 10 runs of 3 s against iperf3 3.21+
#   RUNS=2 TIME=1 NC=target/debug/netcore tools/compare-iperf3.sh   # does it work?
set -euo pipefail
cd "$(dirname "$0")/.."
. tools/lib.sh
RUNS="${RUNS:-10}"
TIME="${TIME:-3}"
IPERF3="${IPERF3:-$IPERF3_NEW}"
OUT="${OUT:-$(mktemp -d /tmp/compare-iperf3.XXXXXX)}"; mkdir -p "$OUT"
TX_CPU=0 RX_CPU=1
TSV="$OUT/samples.tsv"
[[ $IPERF3 == "$IPERF3_NEW" ]] && need_iperf3_new
[[ -x $IPERF3 ]] || die "$IPERF3 missing (apt-get install -y iperf3, or shared/peers/build-iperf3.sh)"
need_netcore
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
      iperf3_gbps "$f" 2>/dev/null || true ;;
    nc-ip)
      taskset -c $TX_CPU $NC blast --proto tcp --to iperf3://127.0.0.1:$port --time "${TIME}s" --json >"$f" || true
      python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d["sum"][0]["goodput_bps"]/1e9)' "$f" 2>/dev/null || true ;;
  esac
  stop_pid "$pid"
}

PAIRS="ip-ip nc-ip ip-nc"
before=$(loadavg)
: >"$TSV"
for r in $(seq 1 "$RUNS"); do
  for p in $PAIRS; do
    g=$(run_pair "$p" "$r")
    log "run $r $p: $g Gbit/s"
    sample_if "$TSV" "$p" gbps "$g"
  done
done
after=$(loadavg)
echo "### iperf3 interop over loopback: netcore at one end of an iperf3 test; TCP one stream, ${TIME} s per run, $RUNS interleaved runs"
echo
echo "Server on CPU $RX_CPU, client on CPU $TX_CPU. Peer: $("$IPERF3" --version | head -1); netcore: $($NC --version); kernel $(uname -r). Pairs: ip-ip = iperf3 -c -> iperf3 -s (the baseline); nc-ip = netcore blast --to iperf3:// -> iperf3 -s; ip-nc = iperf3 -c -> netcore recv."
echo
python3 tools/stats.py "$TSV" --ratio "headline=gbps:nc-ip/ip-ip" --ratio "headline=gbps:ip-nc/ip-ip" \
  --load-before "$before" --load-after "$after"
log "raw results: $OUT"
