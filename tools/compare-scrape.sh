#!/usr/bin/env bash
# compare-scrape.sh - does scraping `recv --metrics` during a blast cost the receiver goodput?
#
# Every run: a `netcore recv --metrics` pinned to RX_CPU (default 1) and an unpaced `netcore
# blast --time TIME` (default 5 s, LEN-byte datagrams, default 1472) pinned to TX_CPU (default
# 0), separate processes, in two configurations run interleaved RUNS times (default 5):
#   quiet    - nobody scrapes the endpoint
#   scraped  - a scraper fetches the endpoint every 1/HZ s (default HZ=10: 150 times Prometheus's
#              default 15 s interval) for the whole test, with curl from TX_CPU, asking for
#              OpenMetrics as Prometheus does
# Printed (markdown): median goodput [min-max] of each configuration, the ratio scraped/quiet,
# the scrapes answered, and the median time curl took per scrape. The spread of the quiet runs
# is the noise the ratio must be read against.
#
#   tools/compare-scrape.sh
#   RUNS=3 TIME=3 HZ=50 tools/compare-scrape.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source tools/lib.sh
RUNS="${RUNS:-5}"
TIME="${TIME:-5}"
LEN="${LEN:-1472}"
HZ="${HZ:-10}"
TX_CPU="${TX_CPU:-0}"
RX_CPU="${RX_CPU:-1}"
OUT="${OUT:-$(mktemp -d /tmp/compare-scrape.XXXXXX)}"
NC=target/release/netcore
PORT=15401 MPORT=15402

command -v curl >/dev/null || die "curl missing: apt-get install -y curl"
command -v python3 >/dev/null || die "python3 missing"
cargo build --release --quiet


# Scrapes until the file $1 exists, bounded by TIME + 10 s; one line per scrape: seconds taken.
scraper() {  # stopfile outfile
  local end=$((SECONDS + TIME + 10)) gap
  gap=$(python3 -c "print(1/$HZ)")
  while [[ ! -e $1 && $SECONDS -lt $end ]]; do
    taskset -c "$TX_CPU" curl -s -o /dev/null -w '%{time_total}\n' --max-time 2 \
      -H 'Accept: application/openmetrics-text; version=1.0.0' "http://127.0.0.1:$MPORT/metrics" >>"$2" || true
    sleep "$gap"
  done
}

run() {  # config run
  local cfg=$1 r=$2 f="$OUT/$1.r$2.json" stop="$OUT/$1.r$2.stop"
  taskset -c "$RX_CPU" $NC recv --listen 127.0.0.1:$PORT --metrics 127.0.0.1:$MPORT --cpus "$RX_CPU" >/dev/null 2>>"$OUT/errors.log" &
  local pid=$!; PIDS+=("$pid")
  port_wait $PORT; port_wait $MPORT
  local spid=
  if [[ $cfg == scraped ]]; then
    : >"$OUT/$cfg.r$r.scrapes"
    scraper "$stop" "$OUT/$cfg.r$r.scrapes" &
    spid=$!
  fi
  taskset -c "$TX_CPU" $NC blast --to 127.0.0.1:$PORT --time "$TIME" --len "$LEN" --cpus "$TX_CPU" --json >"$f" 2>>"$OUT/errors.log" || true
  touch "$stop"
  [[ -n $spid ]] && wait "$spid" 2>/dev/null
  stop_pid "$pid"
  python3 - "$f" "$cfg" "$OUT/$cfg.r$r.scrapes" <<'PY' >>"$OUT/results.tsv"
import json, os, sys
d = json.load(open(sys.argv[1])); s, r = d["sender"], d["receiver"]
secs = max(s["elapsed_s"], r["duration_s"] or 0, 1e-9)  # null: one receive batch
times = []
if os.path.exists(sys.argv[3]):
    times = [float(x) for x in open(sys.argv[3]) if x.strip()]
med = sorted(times)[len(times) // 2] if times else 0.0
print(f'{sys.argv[2]}\t{r["bytes"]*8/secs:.0f}\t{r["accounting"]["lost"]}\t{len(times)}\t{med:.6f}')
PY
}

: >"$OUT/results.tsv"
for r in $(seq 1 "$RUNS"); do
  for cfg in quiet scraped; do
    log "run $r/$RUNS: $cfg"
    run "$cfg" "$r"
  done
done

python3 - "$OUT/results.tsv" "$RUNS" "$TIME" "$LEN" "$HZ" <<'PY'
import statistics, sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
runs, time, length, hz = sys.argv[2:6]
by = {}
for name, bps, lost, n, t in rows:
    by.setdefault(name, []).append((float(bps), int(lost), int(n), float(t)))
print(f"`RUNS={runs} TIME={time} LEN={length} HZ={hz} tools/compare-scrape.sh` (unpaced blast, "
      f"medians of {runs} interleaved runs)\n")
print("| configuration | goodput (median) | min-max | lost (median) | scrapes per run | time per scrape |")
print("|---|---:|---:|---:|---:|---:|")
med = {}
for name in ("quiet", "scraped"):
    v = by.get(name, [])
    if not v:
        continue
    g = [x[0] / 1e9 for x in v]
    med[name] = statistics.median(g)
    scr = statistics.median(x[2] for x in v)
    tps = statistics.median(x[3] for x in v) * 1e3 if name == "scraped" else 0
    print(f"| {name} | {med[name]:.2f} Gbit/s | {min(g):.2f}-{max(g):.2f} | "
          f"{statistics.median(x[1] for x in v):.0f} | {scr:.0f} | "
          + (f"{tps:.2f} ms |" if name == "scraped" else "- |"))
if "quiet" in med and "scraped" in med and med["quiet"] > 0:
    q = [x[0] for x in by["quiet"]]
    spread = (max(q) - min(q)) / statistics.median(q)
    print(f"\nscraped / quiet goodput: {med['scraped'] / med['quiet']:.3f}x "
          f"(the quiet runs spread {spread * 100:.1f} % of their median)")
PY
log "raw results in $OUT"
