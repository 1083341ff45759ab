#!/usr/bin/env bash
# compare-udp.sh - UDP over loopback in steady state: netcore blast/recv against the current iperf3
# (3.21+, --gsro), Debian's iperf3 (3.12, no GSO) and the kernel's ceiling (the C udp_ceiling from
# shared/anchors, given the GSO segment count netcore's sender used in that run), then the
# highest lossless rate of netcore and iperf3 3.21.
#
# What runs: every run sends for TIME seconds (default 5), unpaced, LEN-byte datagrams (LENS,
# default "1472 64"); sender pinned to CPU 0, receiver to CPU 1, separate processes. Every
# configuration runs RUNS times (default 10), interleaved (run 1 of each, then run 2, ...):
#   nc                   netcore's defaults (blast / recv --rcvbuf BUF)
#   iperf3 3.21 --gsro   /opt/iperf3-new (shared/peers/build-iperf3.sh) -u -b 0 --gsro -w BUF
#   iperf3 3.12          Debian's /usr/bin/iperf3 -u -b 0 -w BUF
#   udp_ceiling          --mode gso --gro 1 --max-segs S --gso-bytes S*LEN, S = the gso_segments
#                        netcore's report gave in the same run, the bytes netcore sent
# Every receive buffer is BUF (default 128M, netcore's default): netcore forces it
# (SO_RCVBUFFORCE), iperf3 gets it with -w BUF, for which net.core.rmem_max and wmem_max are
# raised to BUF for the run and restored on exit (needs root; without it iperf3's buffer is
# capped and the output says so).
#
# Figures per run (TSV in $OUT/samples.tsv, read by tools/stats.py):
#   mpps                 unique datagrams received / the receiving time, millions per second
#                        (netcore: the longer of the sender's sending time and the receiver's
#                        first-to-last arrival; iperf3: its server's packets - lost over its seconds)
#   gbps                 UDP payload bits received per second (1 Gbit = 1e9 bits)
#   lost_pct             datagrams lost / sent, %
#   tx_cpu_s_per_gbit    CPU-seconds of the whole sending process / payload gigabits received
#   rx_cpu_s_per_gbit    the same for the whole receiving process
# CPU is each process's user + system time over its life (/usr/bin/time, getrusage of the
# child): the same scope for netcore and iperf3. udp_ceiling is one process: no CPU figures.
#
# How to read the output (markdown, stdout): the ratios first. Per datagram size, "headline" rows
# are defaults against defaults: netcore / the best iperf3 (the one with the best median of that
# figure) and netcore / udp_ceiling, received packet rate; then CPU per bit (lower-better: "ahead"
# means netcore spends less). Verdicts: "ahead" where the 95 % interval's lower bound is above
# 1.0, "behind" where its upper bound is below, else "on par". Then min/median/max per
# configuration (look at lost_pct: a rate with loss is not a lossless rate), the load average
# before and after ("noisy" where it rose above 1.5 or a spread exceeds 30 %), and the highest
# lossless rates.
#
# Highest lossless rate (FIND=1, default): netcore `blast --find-rate --loss 0 --trial TRIAL`
# (default 2s, at most MAX_TRIALS=12 trials) against a pinned `recv`, and the same search
# (same rules: an unpaced trial, bisection from 98 % of what arrived to 2 % precision, 95 % of
# the sent rate delivered, a confirmation run; same trial length and bound) scripted over
# `iperf3 -c -u --gsro -w BUF -b RATE -t TRIAL` against a pinned `iperf3 -s`. One search each:
# no interval.
#
#   tools/compare-udp.sh                                     # everything, 10 runs of 5 s
#   RUNS=2 TIME=1 FIND=0 NC=target/debug/netcore tools/compare-udp.sh   # does it work?
#   LENS=64 FIND=0 tools/compare-udp.sh                      # packet rate only
#
# Knobs: RUNS TIME LENS BUF FIND TRIAL MAX_TRIALS OUT NC (netcore binary; default
#        target/release/netcore, built) IPERF3_NEW IPERF3_OLD ("" skips 3.12)
#        ANCHORS (directory of the C anchors' binaries; default ../shared/anchors/bin)
set -euo pipefail
cd "$(dirname "$0")/.."
source tools/lib.sh
RUNS="${RUNS:-10}"
TIME="${TIME:-5}"
LENS="${LENS:-1472 64}"
BUF="${BUF:-128M}"
FIND="${FIND:-1}"
TRIAL="${TRIAL:-2s}"
MAX_TRIALS="${MAX_TRIALS:-12}"
IPERF3_OLD="${IPERF3_OLD-/usr/bin/iperf3}"
OUT="${OUT:-$(mktemp -d /tmp/compare-udp.XXXXXX)}"; mkdir -p "$OUT"
TX_CPU=0 RX_CPU=1
TSV="$OUT/samples.tsv"

command -v python3 >/dev/null || die "python3 missing"
[[ -z $IPERF3_OLD || -x $IPERF3_OLD ]] || die "$IPERF3_OLD missing: apt-get install -y iperf3 (or IPERF3_OLD= to skip it)"
need_iperf3_new
CEILING=$(anchor udp_ceiling)
need_netcore
buf=$(numfmt --from=iec "$BUF")
trial_s=${TRIAL%s}

# iperf3 takes -w through SO_RCVBUF/SO_SNDBUF, capped by rmem_max/wmem_max: raise them for the
# run and put them back on exit.
RMEM0=$(cat /proc/sys/net/core/rmem_max) WMEM0=$(cat /proc/sys/net/core/wmem_max)
restore_sysctl() {
  echo "$RMEM0" >/proc/sys/net/core/rmem_max 2>/dev/null || true
  echo "$WMEM0" >/proc/sys/net/core/wmem_max 2>/dev/null || true
}
trap 'cleanup; restore_sysctl' EXIT
BUF_NOTE="rmem_max/wmem_max raised to $buf for the run"
if ! { echo "$buf" >/proc/sys/net/core/rmem_max && echo "$buf" >/proc/sys/net/core/wmem_max; } 2>/dev/null; then
  BUF_NOTE="could not raise rmem_max (not root): iperf3's -w is capped at $RMEM0 bytes"
fi


# record CONFIG LEN FIGURES CLIENT_CPU_FILE SERVER_CPU_FILE, FIGURES = "mpps gbps lost_pct
# payload_bytes": one run's samples.
record() {
  local c="$2 B: $1" mpps gbps lost bytes
  read -r mpps gbps lost bytes <<<"$3"
  sample_if "$TSV" "$c" mpps "$mpps"
  sample_if "$TSV" "$c" gbps "$gbps"
  sample_if "$TSV" "$c" lost_pct "$lost"
  [[ -n ${4:-} ]] && sample_if "$TSV" "$c" tx_cpu_s_per_gbit "$(per_gbit "$(cpu_s "$4")" "$bytes")"
  [[ -n ${5:-} ]] && sample_if "$TSV" "$c" rx_cpu_s_per_gbit "$(per_gbit "$(cpu_s "$5")" "$bytes")"
  return 0
}

NC_SEGS="" NC_SENT=""  # the last netcore run's GSO segments and bytes sent, for udp_ceiling
run_netcore() {  # len
  local len=$1 port=15301 f="$OUT/nc.$1.r$r"
  timed "$f.recv.cpu" taskset -c $RX_CPU "$NC" recv --listen 127.0.0.1:$port --once --json --cpus $RX_CPU --rcvbuf "$buf" >"$f.recv.json" 2>>"$OUT/errors.log" &
  local pid=$!; PIDS+=("$pid")
  port_wait tcp $port
  timed "$f.blast.cpu" taskset -c $TX_CPU "$NC" blast --to 127.0.0.1:$port --time "$TIME" --len "$len" --cpus $TX_CPU --json >"$f.json" 2>>"$OUT/errors.log" || true
  wait "$pid" 2>/dev/null || true
  local fig
  fig=$(python3 - "$f.json" <<'PY' 2>/dev/null || true
import json, sys
d = json.load(open(sys.argv[1])); s, r = d["sender"], d["receiver"]; a = r["accounting"]
secs = max(s["elapsed_s"], r["duration_s"] or 0, 1e-9)  # null: one receive batch
lost = 100 * a["lost"] / a["sent"] if a["sent"] else 0
print(f'{a["unique"]/secs/1e6:.4f} {r["bytes"]*8/secs/1e9:.4f} {lost:.4f} {r["bytes"]} {s.get("gso_segments") or 1} {s["bytes"]}')
PY
)
  [[ -n $fig ]] || { log "netcore $len B run $r: no report (see $OUT/errors.log)"; NC_SEGS="" NC_SENT=""; return 0; }
  read -r _ _ _ _ NC_SEGS NC_SENT <<<"$fig"
  record nc "$len" "$fig" "$f.blast.cpu" "$f.recv.cpu"
}

run_iperf3() {  # name binary len extra...
  local name=$1 bin=$2 len=$3; shift 3
  local port=15201 f="$OUT/${name// /_}.$len.r$r"
  timed "$f.server.cpu" taskset -c $RX_CPU "$bin" -s -1 -B 127.0.0.1 -p $port >/dev/null 2>>"$OUT/errors.log" &
  local pid=$!; PIDS+=("$pid")
  port_wait tcp $port
  timed "$f.client.cpu" taskset -c $TX_CPU "$bin" -c 127.0.0.1 -p $port -u -b 0 -l "$len" -t "$TIME" -w "$buf" --json "$@" >"$f.json" 2>>"$OUT/errors.log" || true
  wait "$pid" 2>/dev/null || true
  local fig
  fig=$(python3 - "$f.json" "$len" <<'PY' 2>/dev/null || true
import json, sys
e = json.load(open(sys.argv[1]))["end"]
r = e.get("sum_received") or e["sum"]; s = e.get("sum_sent") or e["sum"]
got = r["packets"] - r["lost_packets"]; secs = max(r["seconds"], 1e-9)
lost = 100 * r["lost_packets"] / s["packets"] if s["packets"] else 0
print(f'{got/secs/1e6:.4f} {r["bits_per_second"]/1e9:.4f} {lost:.4f} {got * int(sys.argv[2])}')
PY
)
  [[ -n $fig ]] || { log "$name $len B run $r: no report (see $OUT/errors.log)"; return 0; }
  record "$name" "$len" "$fig" "$f.client.cpu" "$f.server.cpu"
}

run_ceiling() {  # len segments bytes
  local len=$1 segs=$2 line
  line=$("$CEILING" --mode gso --batch 1 --gro 1 --len "$len" --max-segs "$segs" --gso-bytes $((segs * len)) \
    --size "$3" --tx-cpu $TX_CPU --rx-cpu $RX_CPU --rcvbuf "$buf" --force-rcvbuf 2>>"$OUT/errors.log" || true)
  echo "$line" >>"$OUT/ceiling.log"
  local fig
  fig=$(tr ' ' '\n' <<<"$line" | awk -F= '{v[$1]=$2} END {if (v["sent"] > 0) printf "%.4f %.4f %.4f 0\n", v["rx_mpps"], v["rx_gbps"], 100 * v["lost"] / v["sent"]}')
  [[ -n $fig ]] && record "udp_ceiling" "$len" "$fig"
  return 0
}

: >"$TSV"
LOAD_BEFORE=$(loadavg)
for r in $(seq 1 "$RUNS"); do
  for len in $LENS; do
    log "run $r/$RUNS, $len-byte datagrams, $TIME s each"
    run_netcore "$len"
    run_iperf3 "iperf3 3.21 --gsro" "$IPERF3_NEW" "$len" --gsro
    [[ -n $IPERF3_OLD ]] && run_iperf3 "iperf3 3.12" "$IPERF3_OLD" "$len"
    # The kernel's ceiling with netcore's segment count and bytes of this run.
    run_ceiling "$len" "${NC_SEGS:-64}" "${NC_SENT:-$((buf * 4))}"
    echo "$len ${NC_SEGS:-?}" >>"$OUT/segments.log"
  done
done
LOAD_AFTER=$(loadavg)

# The highest lossless rate.
: >"$OUT/findrate.tsv"
if [[ $FIND == 1 ]]; then
  for len in $LENS; do
    log "highest lossless rate, $len-byte datagrams: netcore --find-rate"
    taskset -c $RX_CPU $NC recv --listen 127.0.0.1:15302 --cpus $RX_CPU --rcvbuf "$buf" >/dev/null 2>&1 &
    rpid=$!; PIDS+=("$rpid")
    port_wait tcp 15302
    taskset -c $TX_CPU $NC blast --to 127.0.0.1:15302 --find-rate --loss 0 --trial "$TRIAL" --max-trials "$MAX_TRIALS" \
      --len "$len" --cpus $TX_CPU --json >"$OUT/findrate.nc.$len.json" 2>>"$OUT/errors.log" || true
    stop_pid "$rpid"
    python3 - "$OUT/findrate.nc.$len.json" "$len" <<'PY' >>"$OUT/findrate.tsv"
import json, sys
d = json.load(open(sys.argv[1]))
print(f'netcore\t{sys.argv[2]}\t{d["rate_bps"] or 0:.0f}\t{d["confirmed"]}\t{len(d["trials"])}')
PY
    log "highest lossless rate, $len-byte datagrams: the same search over iperf3 3.21 -b"
    taskset -c $RX_CPU "$IPERF3_NEW" -s -B 127.0.0.1 -p 15202 >/dev/null 2>&1 &
    ipid=$!; PIDS+=("$ipid")
    port_wait tcp 15202
    python3 - "$IPERF3_NEW" "$len" "$trial_s" "$MAX_TRIALS" "$buf" "$TX_CPU" "$OUT" <<'PY' >>"$OUT/findrate.tsv"
# netcore's search (src/flow/search.rs), trial for trial, over iperf3 -b.
import json, subprocess, sys
bin_, ln, trial, max_trials, buf, cpu, out = sys.argv[1:8]
MIN_DELIVERY, PRECISION = 0.95, 0.02
def run(rate):
    cmd = ["taskset", "-c", cpu, bin_, "-c", "127.0.0.1", "-p", "15202", "-u", "--gsro", "-w", buf,
           "-l", ln, "-t", trial, "-b", "0" if rate is None else str(int(rate)), "--json"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=float(trial) + 30)
    e = json.loads(p.stdout)["end"]
    r = e.get("sum_received") or e["sum"]; s = e.get("sum_sent") or e["sum"]
    return s["bits_per_second"], r["bits_per_second"], s["packets"], r["lost_packets"]
lo, hi, confirming, found, trials = 0.0, float("inf"), False, False, []
def cap(recv):
    global hi
    if recv > 0: hi = min(hi, max(recv * 1.02, lo * (1 + PRECISION)))
while not found and len(trials) < int(max_trials):
    if not trials or trials[0][1]: rate = None
    elif confirming: rate = lo
    elif lo == 0 and len(trials) == 1: rate = max(min(trials[0][2] * 0.98, hi * 0.98), 1.0)
    else: rate = max((lo + hi) / 2, 1.0)
    sent_bps, recv_bps, sent, lost = run(rate)
    passed = lost == 0 and recv_bps >= MIN_DELIVERY * sent_bps
    confirmation = confirming or (rate is None and bool(trials))
    trials.append((rate, passed, recv_bps))
    with open(f"{out}/findrate.iperf3.{ln}.trials", "a") as f:
        f.write(f"rate={rate} sent_bps={sent_bps:.0f} recv_bps={recv_bps:.0f} sent={sent} lost={lost} passed={passed}\n")
    if rate is None:
        if passed:
            lo = max(lo, sent_bps); found = found or confirmation
        else:
            hi = min(hi, sent_bps); cap(recv_bps)
            if confirmation: trials[0] = (None, False, trials[0][2])
        continue
    if confirming:
        confirming = False
        if passed: found = True
        else: hi, lo = rate, lo * 0.8
        continue
    if passed: lo = max(lo, rate)
    else: hi = min(hi, rate); cap(recv_bps)
    if lo > 0 and hi - lo <= PRECISION * hi: confirming = True
print(f"iperf3 3.21 --gsro\t{ln}\t{lo:.0f}\t{found}\t{len(trials)}")
PY
    stop_pid "$ipid"
  done
fi

version() { "$1" --version 2>/dev/null | head -1; }
ratios=()
for len in $LENS; do
  peers="$len B: iperf3 3.21 --gsro"; [[ -n $IPERF3_OLD ]] && peers="$peers|$len B: iperf3 3.12"
  ratios+=(--ratio "headline=mpps:$len B: nc/$peers" --ratio "headline=mpps:$len B: nc/$len B: udp_ceiling")
  ratios+=(--ratio "headline=tx_cpu_s_per_gbit:$len B: nc/$peers" --ratio "headline=rx_cpu_s_per_gbit:$len B: nc/$peers")
done
echo "### UDP over loopback, steady state: $TIME s per run, $RUNS interleaved runs"
echo
echo "Unpaced; sender on CPU $TX_CPU, receiver on CPU $RX_CPU; receive buffers $BUF ($BUF_NOTE)."
echo "netcore: \`$("$NC" --version)\`; iperf3 3.21: \`$(version "$IPERF3_NEW")\` (\`-u -b 0 --gsro -w $BUF\`)${IPERF3_OLD:+; iperf3 3.12: \`$(version "$IPERF3_OLD")\` (\`-u -b 0 -w $BUF\`)}."
echo "udp_ceiling: $CEILING with netcore's GSO segments per send (datagram size and segments, per run: $(sort -u "$OUT/segments.log" | paste -sd, -)); kernel $(uname -r)."
echo
python3 tools/stats.py "$TSV" "${ratios[@]}" --lower-better tx_cpu_s_per_gbit --lower-better rx_cpu_s_per_gbit \
  --lower-better lost_pct --load-before "$LOAD_BEFORE" --load-after "$LOAD_AFTER"

fr="$OUT/findrate.tsv"
if [[ -s $fr ]]; then
  python3 - "$fr" <<'PY'
import sys
found = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])]
print()
print("### Highest lossless rate (zero loss, 95 % delivered, confirmed by a repeat; one search each)")
print()
print("| datagram | tool | rate | packets/s | confirmed | trials |")
print("|---:|---|---:|---:|---|---:|")
best = {}
for name, ln, bps, conf, n in found:
    bps = float(bps); pps = bps / 8 / int(ln)
    best[(int(ln), name)] = pps
    print(f"| {ln} B | {name} | {bps/1e9:.3f} Gbit/s | {pps/1e6:.3f} M | {conf} | {n} |")
print()
for ln in sorted({k[0] for k in best}, reverse=True):
    a, b = best.get((ln, "netcore")), best.get((ln, "iperf3 3.21 --gsro"))
    if a and b:
        print(f"- {ln} B: netcore / iperf3 3.21 --gsro, highest lossless rate: {a/b:.2f}x (one search each: no interval)")
PY
fi
log "raw results: $OUT"
