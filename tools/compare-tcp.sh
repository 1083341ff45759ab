#!/usr/bin/env bash
# compare-tcp.sh - netcore blast --proto tcp against iperf3 and the kernel's ceiling (the C
# tcp_ceiling from shared/anchors) on the same loopback work.
#
# What runs: TIME seconds (default 3) of unpaced TCP per run, the server process pinned to CPU 1
# and the client process to CPU 0 (taskset, the same for every tool), separate processes. Modes
# (MODES, default "single rev p2"): one stream, -R (the server sends), -P 2. Per mode:
#   nc                 netcore's defaults                 (blast --proto tcp / recv)
#   nc --sendfile      blast --sendfile                   (extra row)
#   nc --spin          the reading side busy-polls        (recv --spin; with -R blast --spin)
#   iperf3 3.21        /opt/iperf3-new (shared/peers/build-iperf3.sh), defaults; and with -Z
#   iperf3 3.12        Debian's /usr/bin/iperf3, defaults; and with -Z
# and once per run (one stream, writer CPU 0, reader CPU 1, one process):
#   tcp_ceiling write/block, sendfile/block, write/spin, sendfile/spin
# Every configuration runs RUNS times (default 10), interleaved: run 1 of each, then run 2, ...
#
# Figures per run (TSV in $OUT/samples.tsv, read by tools/stats.py):
#   gbps                 bits the receiving side read / its seconds (netcore: the SUM row;
#                        iperf3: end.sum_received; tcp_ceiling: its gbps=)
#   tx_cpu_s_per_gbit    CPU-seconds of the whole sending process / gigabits moved
#   rx_cpu_s_per_gbit    the same for the whole receiving process
# CPU is each process's user + system time over its whole life, read by /usr/bin/time (getrusage
# of the child): the same scope for netcore and iperf3 (control work included for both).
# tcp_ceiling is one process for both ends: no CPU figures.
#
# How to read the output (markdown, stdout): first the ratios. Per mode, the "headline" rows are
# defaults against defaults: netcore / the best iperf3 default (the one with the best median of
# that figure) and netcore / tcp_ceiling write/block (the kernel's ceiling for one stream of
# copying writes; for p2 still one stream's). CPU rows are lower-better: "ahead" there means
# netcore spends less. "extra" rows are non-default configurations, each against its like
# (--sendfile against iperf3 -Z and tcp_ceiling sendfile; --spin against a spinning reader).
# Verdicts: "ahead" where the 95 % interval's lower bound is above 1.0, "behind" where its upper
# bound is below, else "on par". Then min/median/max per configuration, and the load average
# before and after ("noisy" where it rose above 1.5 or a spread exceeds 30 %).
#
#   tools/compare-tcp.sh                                    # 10 runs of 3 s, all modes (~25 min)
#   RUNS=2 TIME=1 MODES=single NC=target/debug/netcore tools/compare-tcp.sh   # does it work?
#   ANCHORS=/path/to/anchors/bin IPERF3=/usr/bin/iperf3 tools/compare-tcp.sh
#
# Knobs: RUNS TIME MODES OUT NC (netcore binary; default: target/release/netcore, built)
#        IPERF3_NEW IPERF3_OLD (iperf3 binaries; IPERF3_OLD="" skips 3.12)
#        ANCHORS (directory of the C anchors' binaries; default ../shared/anchors/bin)
set -euo pipefail
cd "$(dirname "$0")/.."
source tools/lib.sh
RUNS="${RUNS:-10}"
TIME="${TIME:-3}"
MODES="${MODES:-single rev p2}"
OUT="${OUT:-$(mktemp -d /tmp/compare-tcp.XXXXXX)}"; mkdir -p "$OUT"
IPERF3_OLD="${IPERF3_OLD-/usr/bin/iperf3}"
TX_CPU=0 RX_CPU=1
TSV="$OUT/samples.tsv"

need_iperf3_new
[[ -z $IPERF3_OLD || -x $IPERF3_OLD ]] || die "$IPERF3_OLD missing (apt-get install -y iperf3, or IPERF3_OLD= to skip it)"
CEILING=$(anchor tcp_ceiling)
need_netcore
declare -A IPERF3=([iperf3 3.21]=$IPERF3_NEW)
[[ -n $IPERF3_OLD ]] && IPERF3[iperf3 3.12]=$IPERF3_OLD

mode_args() {  # mode -> client flags common to both tools
  case $1 in single) ;; p2) echo "-P 2" ;; rev) echo "-R" ;; *) die "unknown mode $1" ;; esac
}

# record MODE CONFIG GBPS BYTES CLIENT_CPU SERVER_CPU: one run's samples (the sender is the
# server with -R).
record() {
  local m=$1 c="$1: $2" gbps=$3 bytes=$4 tx=$5 rx=$6
  [[ $m == rev ]] && { tx=$6; rx=$5; }
  sample_if "$TSV" "$c" gbps "$gbps"
  sample_if "$TSV" "$c" tx_cpu_s_per_gbit "$(per_gbit "$tx" "$bytes")"
  sample_if "$TSV" "$c" rx_cpu_s_per_gbit "$(per_gbit "$rx" "$bytes")"
}

run_netcore() {  # mode name [blast flags...]; RECV_ARGS: recv's extra flags
  local m=$1 name=$2; shift 2
  local port=15311 f="$OUT/${m}.${name// /_}.r$r"
  # shellcheck disable=SC2086
  timed "$f.server.cpu" taskset -c $RX_CPU "$NC" recv --listen 127.0.0.1:$port --once --json ${RECV_ARGS:-} >"$f.server.json" 2>>"$OUT/errors.log" &
  local pid=$!; PIDS+=("$pid")
  port_wait $port
  # shellcheck disable=SC2046
  timed "$f.client.cpu" taskset -c $TX_CPU "$NC" blast --proto tcp --to 127.0.0.1:$port --time "${TIME}s" --json $(mode_args "$m") "$@" >"$f.json" 2>>"$OUT/errors.log" || true
  wait "$pid" 2>/dev/null || true
  local fig
  fig=$(python3 -c 'import json,sys; s=json.load(open(sys.argv[1]))["sum"][0]; print(s["goodput_bps"]/1e9, s["read"])' "$f.json" 2>/dev/null || true)
  [[ -n $fig ]] || { log "$m $name run $r: no report (see $OUT/errors.log)"; return 0; }
  record "$m" "$name" ${fig% *} ${fig#* } "$(cpu_s "$f.client.cpu")" "$(cpu_s "$f.server.cpu")"
}

run_iperf3() {  # mode name binary [client flags...]
  local m=$1 name=$2 bin=$3; shift 3
  local port=15211 f="$OUT/${m}.${name// /_}.r$r"
  timed "$f.server.cpu" taskset -c $RX_CPU "$bin" -s -1 -B 127.0.0.1 -p $port >/dev/null 2>>"$OUT/errors.log" &
  local pid=$!; PIDS+=("$pid")
  port_wait $port
  # shellcheck disable=SC2046
  timed "$f.client.cpu" taskset -c $TX_CPU "$bin" -c 127.0.0.1 -p $port -t "$TIME" --json $(mode_args "$m") "$@" >"$f.json" 2>>"$OUT/errors.log" || true
  wait "$pid" 2>/dev/null || true
  local fig
  fig=$(python3 -c 'import json,sys; r=json.load(open(sys.argv[1]))["end"]["sum_received"]; print(r["bits_per_second"]/1e9, r["bytes"])' "$f.json" 2>/dev/null || true)
  [[ -n $fig ]] || { log "$m $name run $r: no report (see $OUT/errors.log)"; return 0; }
  record "$m" "$name" ${fig% *} ${fig#* } "$(cpu_s "$f.client.cpu")" "$(cpu_s "$f.server.cpu")"
}

run_ceiling() {  # write|sendfile block|spin
  local line
  line=$("$CEILING" --mode "$1" --read "$2" --time "$TIME" --tx-cpu $TX_CPU --rx-cpu $RX_CPU 2>>"$OUT/errors.log" || true)
  echo "$line" >>"$OUT/ceiling.log"
  sample_if "$TSV" "tcp_ceiling $1/$2" gbps "$(grep -o 'gbps=[0-9.]*' <<<"$line" | cut -d= -f2)"
}

: >"$TSV"
{
  echo "netcore: $("$NC" --version)"
  for n in "${!IPERF3[@]}"; do echo "$n: ${IPERF3[$n]}: $("${IPERF3[$n]}" --version | head -1)"; done
  echo "tcp_ceiling: $CEILING"
  echo "kernel: $(uname -r); CPUs: $(nproc); $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-)"
} >"$OUT/versions.txt"
LOAD_BEFORE=$(loadavg)
for r in $(seq 1 "$RUNS"); do
  log "run $r/$RUNS: tcp_ceiling"
  for how in "write block" "sendfile block" "write spin" "sendfile spin"; do
    # shellcheck disable=SC2086
    run_ceiling $how
  done
  for m in $MODES; do
    log "run $r/$RUNS: $m"
    run_netcore "$m" nc
    run_netcore "$m" "nc --sendfile" --sendfile
    if [[ $m == rev ]]; then
      run_netcore "$m" "nc --spin" --spin
    else
      RECV_ARGS=--spin run_netcore "$m" "nc --spin"
    fi
    for n in "${!IPERF3[@]}"; do
      run_iperf3 "$m" "$n" "${IPERF3[$n]}"
      run_iperf3 "$m" "$n -Z" "${IPERF3[$n]}" -Z
    done
  done
done
LOAD_AFTER=$(loadavg)

ratios=()
peers() {  # mode [suffix]: the iperf3 configurations of a mode, joined by |
  local m=$1 sfx=${2:-} n out=()
  for n in "${!IPERF3[@]}"; do out+=("$m: $n$sfx"); done
  local IFS='|'; echo "${out[*]}"
}
for m in $MODES; do
  ratios+=(--ratio "headline=gbps:$m: nc/$(peers "$m")")
  ratios+=(--ratio "headline=gbps:$m: nc/tcp_ceiling write/block")
  ratios+=(--ratio "headline=tx_cpu_s_per_gbit:$m: nc/$(peers "$m")")
  ratios+=(--ratio "headline=rx_cpu_s_per_gbit:$m: nc/$(peers "$m")")
done
for m in $MODES; do
  ratios+=(--ratio "extra: --sendfile=gbps:$m: nc --sendfile/$(peers "$m" " -Z")")
  ratios+=(--ratio "extra: --sendfile=gbps:$m: nc --sendfile/tcp_ceiling sendfile/block")
  ratios+=(--ratio "extra: --sendfile=tx_cpu_s_per_gbit:$m: nc --sendfile/$(peers "$m" " -Z")")
  ratios+=(--ratio "extra: --spin=gbps:$m: nc --spin/tcp_ceiling write/spin")
done

echo "### TCP over loopback: netcore, iperf3 and the kernel's ceiling; $TIME s per run, $RUNS interleaved runs"
echo
echo "Sender on CPU $TX_CPU, receiver on CPU $RX_CPU. $(paste -sd';' "$OUT/versions.txt" | sed 's/;/; /g')."
echo
python3 tools/stats.py "$TSV" "${ratios[@]}" --lower-better tx_cpu_s_per_gbit --lower-better rx_cpu_s_per_gbit \
  --load-before "$LOAD_BEFORE" --load-after "$LOAD_AFTER"
log "raw results: $OUT"
