#!/usr/bin/env bash
# compare-udp.sh - UDP over loopback in steady state: netcore blast/recv vs the current iperf3
# (3.21+, --gsro) vs Debian's iperf3 (3.12, no GSO) vs the kernel's ceiling (the C udp_ceiling
# yardstick from shared/anchors), then the highest lossless rate of netcore and iperf3 3.21.
#
# Steady state: every run sends for TIME seconds (default 5), unpaced, LEN-byte datagrams (1472
# and 64 by default); sender pinned to CPU 0, receiver to CPU 1, separate processes. Tools run
# interleaved (run 1 of each, then run 2, ...), RUNS (default 5) each; the tables show medians
# and the ratios of the medians. Every receive buffer is BUF (default 128M, netcore's default):
# netcore forces it (SO_RCVBUFFORCE), iperf3 gets it with -w BUF, for which net.core.rmem_max
# and wmem_max are raised to BUF for the run and restored on exit (needs root; without it
# iperf3's buffer is capped and the table says so). The C ceiling sends the same bytes netcore
# sent in that run (GSO + GRO, same buffer).
#
# Highest lossless rate (FIND=1, default): netcore `blast --find-rate --loss 0 --trial TRIAL`
# (default 2s, at most MAX_TRIALS=12 trials) against a pinned `recv`, and the same search
# (same rules: an unpaced trial, bisection from 98 % of what arrived to 2 % precision, 95 % of
# the sent rate delivered, a confirmation run; same trial length and bound) scripted over
# `iperf3 -c -u --gsro -w BUF -b RATE -t TRIAL` against a pinned `iperf3 -s`.
#
#   tools/compare-udp.sh                                   # everything, 5 runs of 5 s
#   RUNS=1 TIME=2 TRIAL=1s MAX_TRIALS=6 tools/compare-udp.sh   # a quick look
#   LENS=64 FIND=0 tools/compare-udp.sh                     # packet rate only
#
# Received packet rate = unique datagrams / the receiving time (netcore: the longer of the
# sender's sending time and the receiver's first-to-last arrival; iperf3: its server's
# packets - lost over its seconds). Goodput is UDP payload bits per second (1 Gbit = 1e9 bits).
# Output: markdown on stdout, raw JSON in $OUT.
set -euo pipefail
cd "$(dirname "$0")/.."
source tools/lib.sh
RUNS="${RUNS:-5}"
TIME="${TIME:-5}"
LENS="${LENS:-1472 64}"
BUF="${BUF:-128M}"
FIND="${FIND:-1}"
TRIAL="${TRIAL:-2s}"
MAX_TRIALS="${MAX_TRIALS:-12}"
ANCHORS="${ANCHORS:-$(cd .. && pwd)/shared/anchors}"
IPERF3_NEW="${IPERF3_NEW:-/opt/iperf3-new/bin/iperf3}"
IPERF3_OLD="${IPERF3_OLD:-/usr/bin/iperf3}"
OUT="${OUT:-$(mktemp -d /tmp/compare-udp.XXXXXX)}"
NC=target/release/netcore
TX_CPU=0 RX_CPU=1

command -v python3 >/dev/null || die "python3 missing"
[[ -x $IPERF3_OLD ]] || die "$IPERF3_OLD missing: apt-get install -y iperf3"
if [[ ! -x $IPERF3_NEW ]]; then
  log "building the current iperf3 into /opt/iperf3-new"
  "$(cd .. && pwd)/shared/peers/build-iperf3.sh" >&2 || die "cannot build iperf3 3.21+"
fi
cargo build --release --quiet
if [[ ! -x "$ANCHORS/bin/udp_ceiling" && -f "$ANCHORS/build.sh" ]]; then
  bash "$ANCHORS/build.sh" >/dev/null 2>&1 || log "note: could not build the anchors"
fi
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


# One row of results.tsv: name len received_pps goodput_bps lost sent
run_netcore() {  # len
  local len=$1 port=15301 f="$OUT/nc.$1.r$r.json"
  taskset -c $RX_CPU $NC recv --listen 127.0.0.1:$port --once --json --cpus $RX_CPU --rcvbuf "$buf" >"$OUT/nc.$len.r$r.recv.json" 2>/dev/null &
  local pid=$!; PIDS+=("$pid")
  port_wait tcp $port
  taskset -c $TX_CPU $NC blast --to 127.0.0.1:$port --time "$TIME" --len "$len" --cpus $TX_CPU --json >"$f" 2>>"$OUT/errors.log" || true
  wait "$pid" 2>/dev/null || true
  python3 - "$f" "$len" <<'PY' >>"$OUT/results.tsv"
import json, sys
d = json.load(open(sys.argv[1])); s, r = d["sender"], d["receiver"]; a = r["accounting"]
secs = max(s["elapsed_s"], r["duration_s"], 1e-9)
print(f'netcore\t{sys.argv[2]}\t{a["unique"]/secs:.0f}\t{r["bytes"]*8/secs:.0f}\t{a["lost"]}\t{a["sent"]}\t{s["bytes"]}')
PY
}

run_iperf3() {  # name binary len extra...
  local name=$1 bin=$2 len=$3; shift 3
  local port=15201 f="$OUT/$name.$len.r$r.json"
  taskset -c $RX_CPU "$bin" -s -1 -B 127.0.0.1 -p $port >/dev/null 2>&1 &
  local pid=$!; PIDS+=("$pid")
  port_wait tcp $port
  taskset -c $TX_CPU "$bin" -c 127.0.0.1 -p $port -u -b 0 -l "$len" -t "$TIME" -w "$buf" --json "$@" >"$f" 2>>"$OUT/errors.log" || true
  wait "$pid" 2>/dev/null || true
  python3 - "$f" "$name" "$len" <<'PY' >>"$OUT/results.tsv"
import json, sys
d = json.load(open(sys.argv[1])); e = d["end"]
r = e.get("sum_received") or e["sum"]; s = e.get("sum_sent") or e["sum"]
got = r["packets"] - r["lost_packets"]
print(f'{sys.argv[2]}\t{sys.argv[3]}\t{got/max(r["seconds"],1e-9):.0f}\t{r["bits_per_second"]:.0f}\t{r["lost_packets"]}\t{s["packets"]}\t0')
PY
}

run_ceiling() {  # len bytes
  [[ -x "$ANCHORS/bin/udp_ceiling" ]] || return 0
  "$ANCHORS/bin/udp_ceiling" --mode gso --batch 1 --gro 1 --len "$1" --size "$2" --tx-cpu $TX_CPU --rx-cpu $RX_CPU --rcvbuf "$buf" --force-rcvbuf \
    | tr ' ' '\n' | awk -F= -v len="$1" '{v[$1]=$2} END {printf "C ceiling\t%s\t%.0f\t%.0f\t%s\t%s\t0\n", len, v["rx_mpps"]*1e6, v["rx_gbps"]*1e9, v["lost"], v["sent"]}' >>"$OUT/results.tsv"
}

: >"$OUT/results.tsv"
for r in $(seq 1 "$RUNS"); do
  for len in $LENS; do
    log "run $r/$RUNS, $len-byte datagrams, $TIME s each"
    run_netcore "$len"
    run_iperf3 "iperf3 3.21 --gsro" "$IPERF3_NEW" "$len" --gsro
    run_iperf3 "iperf3 3.12" "$IPERF3_OLD" "$len"
    nc_bytes=$(tail -n 3 "$OUT/results.tsv" | awk -F'\t' '$1=="netcore"{print $7}')
    run_ceiling "$len" "${nc_bytes:-$((buf * 4))}"
  done
done

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

python3 - "$OUT" "$RUNS" "$TIME" "$BUF" "$BUF_NOTE" "$IPERF3_NEW" "$IPERF3_OLD" <<'PY'
import os, statistics as st, subprocess, sys
out, runs, time_s, buf, note, new, old = sys.argv[1:8]
def version(b):
    try: return subprocess.run([b, "--version"], capture_output=True, text=True).stdout.split("\n")[0].strip()
    except OSError: return "?"
rows = {}
for line in open(os.path.join(out, "results.tsv")):
    name, ln, pps, bps, lost, sent, _ = line.rstrip("\n").split("\t")
    rows.setdefault((int(ln), name), []).append((float(pps), float(bps), int(lost), int(sent)))
def med(k, i): return st.median(x[i] for x in rows[k])
print(f"### UDP over loopback, steady state: {time_s} s per run, {runs} interleaved run(s), medians")
print()
print(f"Unpaced; sender on CPU 0, receiver on CPU 1; receive buffers {buf} ({note}).")
print(f"iperf3 3.21: `{version(new)}` (`-u -b 0 --gsro -w {buf}`); iperf3 3.12: `{version(old)}` (`-u -b 0 -w {buf}`).")
print()
print("| datagram | tool | received packets/s | goodput | lost (median of runs) | runs |")
print("|---:|---|---:|---:|---:|---:|")
for (ln, name) in sorted(rows, key=lambda k: (-k[0], ["netcore", "iperf3 3.21 --gsro", "iperf3 3.12", "C ceiling"].index(k[1]))):
    v = rows[(ln, name)]
    lost = st.median(x[2] for x in v); sent = st.median(x[3] for x in v)
    pct = 100 * lost / sent if sent else 0
    print(f"| {ln} B | {name} | {med((ln,name),0)/1e6:.3f} M | {med((ln,name),1)/1e9:.2f} Gbit/s | {lost:,.0f} ({pct:.2f} %) | {len(v)} |")
print()
for ln in sorted({k[0] for k in rows}, reverse=True):
    nc = (ln, "netcore")
    for other in ["iperf3 3.21 --gsro", "iperf3 3.12", "C ceiling"]:
        o = (ln, other)
        if nc in rows and o in rows and med(o, 0) > 0:
            print(f"- {ln} B: netcore / {other}, received packet rate: **{med(nc,0)/med(o,0):.2f}x**")
fr = os.path.join(out, "findrate.tsv")
found = [l.rstrip("\n").split("\t") for l in open(fr)] if os.path.exists(fr) else []
if found:
    print()
    print("### Highest lossless rate (zero loss, 95 % delivered, confirmed by a repeat)")
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
            print(f"- {ln} B: netcore / iperf3 3.21 --gsro, highest lossless rate: **{a/b:.2f}x**")
PY
log "raw results: $OUT"
