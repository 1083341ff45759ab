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
# Printed (markdown, by tools/stats.py): the goodput ratio scraped / quiet with its bootstrap 95 %
# interval and verdict ("on par" is the goal: a scrape costs the receiver nothing the noise
# shows), then per configuration min/median/max of goodput (gbps), datagrams lost, scrapes
# answered per run and the median time curl took per scrape (scrape_ms), and the load average
# before and after.
#
#   tools/compare-scrape.sh                    # 10 runs of 5 s
#   RUNS=3 TIME=3 HZ=50 tools/compare-scrape.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source tools/lib.sh
RUNS="${RUNS:-10}"
TIME="${TIME:-5}"
LEN="${LEN:-1472}"
HZ="${HZ:-10}"
TX_CPU="${TX_CPU:-0}"
RX_CPU="${RX_CPU:-1}"
OUT="${OUT:-$(mktemp -d /tmp/compare-scrape.XXXXXX)}"; mkdir -p "$OUT"
PORT=15401 MPORT=15402
TSV="$OUT/samples.tsv"

command -v curl >/dev/null || die "curl missing: apt-get install -y curl"
command -v python3 >/dev/null || die "python3 missing"
need_netcore


# Scrapes until the file $1 exists, bounded by TIME + 10 s; one line per scrape: seconds taken.
# The loop itself (its forks of curl and sleep too) stays on TX_CPU: only the scrape reaches
# the receiver's CPU.
scraper() {  # stopfile outfile
  local end=$((SECONDS + TIME + 10)) gap
  taskset -cp "$TX_CPU" "$BASHPID" >/dev/null
  gap=$(python3 -c "print(1/$HZ)")
  while [[ ! -e $1 && $SECONDS -lt $end ]]; do
    curl -s -o /dev/null -w '%{time_total}\n' --max-time 2 \
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
  # One run's figures as tools/stats.py samples (none when the blast wrote no report).
  python3 - "$f" "$cfg" "$OUT/$cfg.r$r.scrapes" <<'PY' >>"$TSV" || log "run $r $cfg: no report"
import json, os, statistics, sys
d = json.load(open(sys.argv[1])); s, r = d["sender"], d["receiver"]
secs = max(s["elapsed_s"], r["duration_s"] or 0, 1e-9)  # null: one receive batch
cfg = sys.argv[2]
print(f'{cfg}\tgbps\t{r["bytes"] * 8 / secs / 1e9:.4f}')
print(f'{cfg}\tlost\t{r["accounting"]["lost"]}')
if os.path.exists(sys.argv[3]):
    times = [float(x) for x in open(sys.argv[3]) if x.strip()]
    print(f'{cfg}\tscrapes\t{len(times)}')
    if times:
        print(f'{cfg}\tscrape_ms\t{statistics.median(times) * 1e3:.3f}')
PY
}

: >"$TSV"
before=$(loadavg)
for r in $(seq 1 "$RUNS"); do
  for cfg in quiet scraped; do
    log "run $r/$RUNS: $cfg"
    run "$cfg" "$r"
  done
done
after=$(loadavg)

echo "### Scraping recv --metrics during an unpaced blast: ${TIME} s per run, $LEN B, $HZ scrapes/s, $RUNS interleaved runs"
echo
echo "recv on CPU $RX_CPU, blast and curl on CPU $TX_CPU; netcore: $($NC --version); kernel $(uname -r)."
echo
python3 tools/stats.py "$TSV" --ratio "headline=gbps:scraped/quiet" --load-before "$before" --load-after "$after"
log "raw results in $OUT"
