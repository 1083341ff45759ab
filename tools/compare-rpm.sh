#!/usr/bin/env bash
# compare-rpm.sh - netcore rpm's UDP probes beside irtt and ping, during the same load, through
# a real bottleneck: the client/router/server namespaces of tools/netns-hosts.sh (tbf on the
# router). Prints each tool's round-trip p50/p90 per phase and whether netcore's agree with
# irtt's (within 10 % or 1 ms).
#
#   sudo tools/compare-rpm.sh [--queue 1250000] [--rate 100Mbit] [--congestion cubic]
#                             [--phases idle,download,upload] [--phase-time 5s] [--bin PATH]
#
# Needs root, iproute2 (ip, tc), irtt (Debian: apt-get install irtt; client and server),
# ping (iputils-ping), python3 and a built netcore (target/release/netcore by default).
# Load: netcore rpm's own TCP streams; irtt (10 ms interval) and ping (-i 0.01) run through the
# whole run and their samples are split by the phase windows of rpm's JSON report (its
# start_unix_s and each phase's start_s/duration_s: the window netcore credits its probes to).
# flent's RRUL is the classic peer of this test, but it needs netperf, which Debian does not
# package (non-free licence): it is left out.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
queue=1250000 rate=100Mbit cc=cubic phases=idle,download,upload ptime=5s
bin="$here/../target/release/netcore"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --queue) queue=$2; shift 2 ;;
    --rate) rate=$2; shift 2 ;;
    --congestion) cc=$2; shift 2 ;;
    --phases) phases=$2; shift 2 ;;
    --phase-time) ptime=$2; shift 2 ;;
    --bin) bin=$2; shift 2 ;;
    *) echo "usage: $0 [--queue Q] [--rate R] [--congestion ALGO] [--phases LIST] [--phase-time T] [--bin PATH]" >&2; exit 2 ;;
  esac
done
die() { echo "compare-rpm: $*" >&2; exit 1; }
[[ $(id -u) -eq 0 ]] || die "needs root (network namespaces)"
for t in ip tc irtt ping python3; do
  command -v "$t" >/dev/null || die "missing $t (apt-get install -y iproute2 irtt iputils-ping python3)"
done
[[ -x $bin ]] || die "no netcore binary at $bin (cargo build --release, or --bin PATH)"

export NS_C=cmpc$$ NS_R=cmpr$$ NS_S=cmps$$ NS_A=cmpa$$ NS_B=cmpb$$
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  bash "$here/netns-hosts.sh" down >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
bash "$here/netns-hosts.sh" up --rate "$rate" --queue "$queue"
srv=10.9.2.2
ip netns exec "$NS_S" "$bin" recv --listen "$srv:5300" >"$work/recv.out" 2>&1 & pids+=($!)
ip netns exec "$NS_S" irtt server -b "$srv:2112" >"$work/irtts.out" 2>&1 & pids+=($!)
sleep 1

# The run's length: phases x (phase time + 1 s gap) + margin.
n=$(tr ',' '\n' <<<"$phases" | wc -l)
secs=$(python3 -c "import re,sys; t='$ptime'; v=float(re.match(r'[0-9.]+',t).group()); print(v/1000 if t.endswith('ms') else v)")
total=$(python3 -c "print(int($n*($secs+1)+4))")
ip netns exec "$NS_C" irtt client -i 10ms -d "${total}s" -Q -o "$work/irtt.json" "$srv:2112" \
  >"$work/irtt.out" 2>&1 & irtt_pid=$!; pids+=($irtt_pid)
ip netns exec "$NS_C" ping -D -i 0.01 -w "$total" "$srv" >"$work/ping.txt" 2>&1 & ping_pid=$!; pids+=($ping_pid)
sleep 0.5
ip netns exec "$NS_C" "$bin" rpm --to "$srv:5300" --phases "$phases" --phase-time "$ptime" \
  --congestion "$cc" --same-clock --json >"$work/rpm.json"
wait "$irtt_pid" || true
wait "$ping_pid" || true
[[ -s $work/irtt.json.gz ]] && gunzip -f "$work/irtt.json.gz"

python3 - "$work" "$rate" "$queue" "$cc" <<'PY'
import json, re, sys
work, rate, queue, cc = sys.argv[1:5]
rpm = json.load(open(f"{work}/rpm.json"))
t0 = rpm["start_unix_s"]
irtt = json.load(open(f"{work}/irtt.json"))
irtt_s = [(rt["timestamps"]["client"]["send"]["wall"] / 1e9, rt["delay"]["rtt"] / 1e6)
          for rt in irtt["round_trips"] if "rtt" in rt.get("delay", {})]
ping_s = []
for line in open(f"{work}/ping.txt"):
    m = re.match(r"\[(\d+\.\d+)\].*time=([\d.]+) ms", line)
    if m:
        ping_s.append((float(m.group(1)), float(m.group(2))))

def pct(v, q):
    if not v:
        return float("nan")
    v = sorted(v)
    return v[min(len(v) - 1, int(q * len(v)))]

print(f"rate {rate}, queue {queue} bytes, {cc}; round trips in ms (p50/p90)")
print(f"{'phase':10} {'netcore':>17} {'irtt':>17} {'ping':>17}  agree (10 % or 1 ms)")
ok = True
for p in rpm["phases"]:
    a, b = t0 + p["start_s"], t0 + p["start_s"] + p["duration_s"]
    i = [ms for t, ms in irtt_s if a <= t <= b]
    g = [ms for t, ms in ping_s if a <= t <= b]
    n50, n90 = p["latency"]["p50_ms"], p["latency"]["p90_ms"]
    i50, i90 = pct(i, 0.5), pct(i, 0.9)
    agree = all(abs(x - y) <= max(1.0, 0.1 * y) for x, y in ((n50, i50), (n90, i90)))
    ok &= agree
    print(f"{p['name']:10} {n50:8.2f}/{n90:8.2f} {i50:8.2f}/{i90:8.2f} {pct(g,.5):8.2f}/{pct(g,.9):8.2f}  "
          f"{'yes' if agree else 'NO'} ({len(i)} irtt, {len(g)} ping samples)")
    up, down = p["goodput_up_bps"] / 1e6, p["goodput_down_bps"] / 1e6
    if up or down:
        print(f"{'':10} goodput up {up:.1f} Mbit/s, down {down:.1f} Mbit/s")
print("RPM", round(rpm["rpm"]) if rpm["rpm"] else "-")
for v in rpm["verdict"]:
    print("verdict:", v)
sys.exit(0 if ok else 1)
PY
