#!/usr/bin/env bash
# compare-tcp.sh - netcore blast --proto tcp vs iperf3 on the same loopback work.
#
# Work: TIME (default 3s) of unpaced TCP per run, the server process pinned to CPU 1 and the
# client process to CPU 0 (taskset, the same for every tool), separate server and client
# processes. Modes: single (one stream), p2 (-P 2), rev (-R: the server sends). Each iperf3 in
# IPERF3 (default: Debian's /usr/bin/iperf3 and /opt/iperf3-new/bin/iperf3 when built by
# shared/peers/build-iperf3.sh) runs with and without -Z (sendfile zero-copy). Configurations run
# interleaved (run 1 of each, then run 2, ...), RUNS (default 5) each; medians are printed with
# the ratios netcore / best iperf3 configuration of the same mode: the best of each tool, and like
# with like (copying writes: netcore's default against iperf3 without -Z; sendfile: netcore
# --sendfile against iperf3 -Z; and netcore --sendfile with its reader busy-polling, --spin). In
# p2, netcore also runs with
# --thread-per-stream (nc_p2_tps: a thread per stream instead of one thread for the two streams
# that share CPU 0), for reference.
#
#   RUNS=5 TIME=3 tools/compare-tcp.sh
#   MODES="single rev" IPERF3=/usr/bin/iperf3 tools/compare-tcp.sh
#
# Goodput: bits the receiving side read / its time (netcore: the SUM row; iperf3:
# end.sum_received). Sender CPU-seconds per gigabit: CPU of the sending side / gigabits moved.
# netcore counts its data threads (getrusage RUSAGE_THREAD, the report's cpu figures); iperf3
# counts its whole process (getrusage RUSAGE_SELF, cpu_utilization_percent × its seconds), which
# adds its control work (small next to the data path).
set -euo pipefail
cd "$(dirname "$0")/.."
source tools/lib.sh
RUNS="${RUNS:-5}"
TIME="${TIME:-3}"
MODES="${MODES:-single p2 rev}"
OUT="${OUT:-$(mktemp -d /tmp/compare-tcp.XXXXXX)}"; mkdir -p "$OUT"
NC=target/release/netcore
TX_CPU=0 RX_CPU=1
if [[ -z "${IPERF3:-}" ]]; then
  IPERF3=/usr/bin/iperf3
  [[ -x /opt/iperf3-new/bin/iperf3 ]] && IPERF3="$IPERF3 /opt/iperf3-new/bin/iperf3"
fi
for b in $IPERF3; do [[ -x $b ]] || { echo "$b missing (apt-get install -y iperf3)" >&2; exit 1; }; done
cargo build --release --quiet

mode_args() {  # mode -> client flags common to both tools
  case $1 in single) ;; p2) echo "-P 2" ;; rev) echo "-R" ;; *) echo "unknown mode $1" >&2; exit 2 ;; esac
}

run_netcore() {  # mode [tag extra...]: tag names the configuration (default nc_MODE)
  local m=$1 port=15311 tag=${2:-nc_$1}; shift; shift || true
  local f="$OUT/$tag.r$r.json"
  # shellcheck disable=SC2086
  taskset -c $RX_CPU $NC recv --listen 127.0.0.1:$port --once --json ${RECV_ARGS:-} >/dev/null 2>&1 &
  local pid=$!; PIDS+=("$pid")
  port_wait $port
  # shellcheck disable=SC2046
  taskset -c $TX_CPU $NC blast --proto tcp --to 127.0.0.1:$port --time "${TIME}s" --json $(mode_args "$m") "$@" >"$f" || true
  wait "$pid" 2>/dev/null || true
  python3 - "$f" "$tag" "$m" <<'PY' >>"$OUT/results.tsv"
import json, sys
d = json.load(open(sys.argv[1])); s = d["sum"][0]
gbit = s["read"] * 8 / 1e9
cpu = d["cpu"]["server" if sys.argv[3] == "rev" else "client"]
print(f'{sys.argv[2]}\t{sys.argv[3]}\t{s["goodput_bps"]/1e9:.3f}\t{(cpu["user_s"]+cpu["system_s"])/gbit:.5f}\t{cpu["pct_core"]:.1f}')
PY
}

run_iperf3() {  # mode binary tag extra...
  local m=$1 bin=$2 tag=$3; shift 3
  local port=15211 f="$OUT/${tag}_$m.r$r.json"
  taskset -c $RX_CPU "$bin" -s -1 -B 127.0.0.1 -p $port >/dev/null 2>&1 &
  local pid=$!; PIDS+=("$pid")
  port_wait $port
  # shellcheck disable=SC2046
  taskset -c $TX_CPU "$bin" -c 127.0.0.1 -p $port -t "$TIME" --json $(mode_args "$m") "$@" >"$f" || true
  wait "$pid" 2>/dev/null || true
  python3 - "$f" "${tag}_$m" "$m" <<'PY' >>"$OUT/results.tsv"
import json, sys
d = json.load(open(sys.argv[1])); e = d["end"]; rcv = e["sum_received"]
gbit = rcv["bytes"] * 8 / 1e9
cpu = e["cpu_utilization_percent"]["remote_total" if sys.argv[3] == "rev" else "host_total"]
secs = e["sum_sent"]["seconds"]
print(f'{sys.argv[2]}\t{sys.argv[3]}\t{rcv["bits_per_second"]/1e9:.3f}\t{cpu/100*secs/gbit:.5f}\t{cpu:.1f}')
PY
}

: >"$OUT/results.tsv"
: >"$OUT/versions.txt"
i=0
for b in $IPERF3; do echo "iperf3_$i = $b: $("$b" --version | head -1)" >>"$OUT/versions.txt"; i=$((i+1)); done
for r in $(seq 1 "$RUNS"); do
  for m in $MODES; do
    echo "run $r/$RUNS: $m" >&2
    run_netcore "$m"
    run_netcore "$m" "nc_${m}_sf" --sendfile
    # The same with the reading side busy-polling (--spin: no nap when the socket is empty):
    # recv's readers, or with -R blast's.
    if [[ $m == rev ]]; then
      run_netcore "$m" "nc_${m}_sfspin" --sendfile --spin
    else
      RECV_ARGS=--spin run_netcore "$m" "nc_${m}_sfspin" --sendfile
    fi
    # With -P 2 on one CPU netcore drives both streams from one thread; the old way (a thread
    # per stream) beside it, as a reference (not counted as a peer).
    [[ $m == p2 ]] && run_netcore "$m" nc_p2_tps --thread-per-stream
    i=0
    for b in $IPERF3; do
      run_iperf3 "$m" "$b" "iperf3_$i"
      run_iperf3 "$m" "$b" "iperf3_${i}Z" -Z
      i=$((i+1))
    done
  done
done

cat "$OUT/versions.txt"
python3 - "$OUT/results.tsv" "$RUNS" "$TIME" <<'PY'
import sys, statistics as st
rows = {}
for line in open(sys.argv[1]):
    n, m, g, c, p = line.rstrip("\n").split("\t")
    rows.setdefault((m, n), []).append((float(g), float(c), float(p)))
med = lambda k, i: st.median(x[i] for x in rows[k])
print(f"# netcore vs iperf3, TCP over loopback, {sys.argv[3]} s per run, {sys.argv[2]} interleaved runs, medians")
print(f"{'mode':7} {'configuration':14} {'goodput Gbit/s':>15} {'sender CPU-s/Gbit':>18} {'sender CPU %':>13}")
for k in rows:
    print(f"{k[0]:7} {k[1]:14} {med(k,0):15.3f} {med(k,1):18.5f} {med(k,2):13.1f}")
print()
def line(m, what, ours, theirs):
    ours, theirs = [k for k in ours if k in rows], [k for k in theirs if k in rows]
    if not ours or not theirs:
        return
    nc = max(ours, key=lambda k: med(k, 0))
    best = max(theirs, key=lambda k: med(k, 0))
    print(f"{m:7} {what}: {nc[1]} / {best[1]}: goodput {med(nc,0)/med(best,0):.2f}x, "
          f"sender CPU-s per Gbit {med(nc,1)/med(best,1):.2f}x (below 1 is better)")
for m in dict.fromkeys(k[0] for k in rows):
    peers = [k for k in rows if k[0] == m and not k[1].startswith("nc_")]
    plain = [k for k in peers if not k[1].split("_")[1].endswith("Z")]
    line(m, "best of each", [(m, f"nc_{m}"), (m, f"nc_{m}_sf"), (m, f"nc_{m}_sfspin")], peers)
    line(m, "copying writes", [(m, f"nc_{m}")], plain)
    line(m, "sendfile (-Z)", [(m, f"nc_{m}_sf")], [k for k in peers if k not in plain])
    line(m, "sendfile, reader spinning", [(m, f"nc_{m}_sfspin")], [k for k in peers if k not in plain])
PY
echo "raw results: $OUT" >&2
