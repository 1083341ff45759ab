#!/usr/bin/env bash
# compare-servers.sh - netcore's server models beside the C yardsticks, 64-byte echo round trips on
# loopback, and `netcore load` beside the C `rr_load` client.
#
# Servers (all pinned to SERVER_CPU, default 1):
#   netcore serve --model M --proto echo      for M in $MODELS (iterative only at 1 connection:
#                                              it serves one client at a time; pool gets
#                                              --workers 1024 so every connection has a worker)
#   shared/anchors/bin/echo_epoll, echo_uring, echo_threads (the C yardsticks)
# Clients (pinned to CLIENT_CPU, default 0):
#   rr_load --port P --conns N --size 64 --duration $DURATION --warmup $WARMUP --cpu 0   (every server)
#   netcore load --proto echo --size 64 --clients N --duration .. --warmup .. --cpus 0 (C echo_epoll)
# Then, unless SYSCALL_CONNS is empty: system calls per request of netcore epoll and uring (and
# the C servers), counted with `strace -c -f` attached to the server during one rr_load run.
# For CONNS (default "1 10 100 1000"), RUNS times (default 5), interleaved: run 1 of every
# configuration, then run 2, ... Printed: median requests/s [min-max] and median p99 per
# configuration, with ratios against C echo_epoll / echo_threads driven by rr_load, and
# netcore load / rr_load against the same C server.
#
# Knobs (environment): RUNS CONNS DURATION WARMUP MODELS SERVER_CPU CLIENT_CPU PORT_BASE
#                      NETCORE (binary; default target/release/netcore, built if missing)
#                      ANCHORS (default: ../shared/anchors beside the repository)
#                      OUT (raw results directory; default a new mktemp -d)
# Every server started here is stopped by PID when the script exits; every client run is bounded
# with timeout(1).
set -euo pipefail
set -m

HERE="$(cd "$(dirname "$0")" && pwd)"
REPO="$(dirname "$HERE")"
ANCHORS="${ANCHORS:-$HERE/../../shared/anchors}"
RUNS="${RUNS:-5}"
CONNS="${CONNS:-1 10 100 1000}"
DURATION="${DURATION:-5}"
WARMUP="${WARMUP:-1}"
MODELS="${MODELS:-iterative fork thread pool epoll uring}"
SYSCALL_CONNS="${SYSCALL_CONNS:-100}"   # connections for the strace syscall count (empty: skip)
SERVER_CPU="${SERVER_CPU:-1}"
CLIENT_CPU="${CLIENT_CPU:-0}"
PORT_BASE="${PORT_BASE:-15600}"
NETCORE="${NETCORE:-$REPO/target/release/netcore}"
OUT="${OUT:-$(mktemp -d /tmp/compare-servers.XXXXXX)}"
RUN_LIMIT=$((DURATION + WARMUP + 60))

# shellcheck source=tools/lib.sh
source "$REPO/tools/lib.sh"

[[ -d "$ANCHORS" ]] || die "no anchors directory at $ANCHORS (set ANCHORS=...)"
ANCHORS="$(cd "$ANCHORS" && pwd)"
if [[ ! -x "$ANCHORS/bin/rr_load" || ! -x "$ANCHORS/bin/echo_epoll" || ! -x "$ANCHORS/bin/echo_threads" || ! -x "$ANCHORS/bin/echo_uring" ]]; then
  log "building the C anchors ($ANCHORS/build.sh)"
  "$ANCHORS/build.sh" >&2 || die "anchor build failed"
fi
if [[ ! -x "$NETCORE" ]]; then
  log "building netcore (cargo build --release)"
  (cd "$REPO" && cargo build --release >&2) || die "cargo build failed"
fi
mkdir -p "$OUT"
RES="$OUT/results.txt"
: >"$RES"

port_free() { ! ss -Htln "sport = :$1" 2>/dev/null | grep -q .; }
wait_port() {
  local i
  for i in $(seq 1 50); do
    ss -Htln "sport = :$1" 2>/dev/null | grep -q . && return 0
    sleep 0.1
  done
  return 1
}

declare -A PORT=()
declare -A SPID=()
# Each server runs only while it is measured (started before, stopped after), so no server's
# leftovers (a fork model's exiting children, a pool's threads) run beside another's measurement.
C_SERVERS=""
p=$PORT_BASE
for s in epoll uring threads; do
  if [[ -x "$ANCHORS/bin/echo_$s" ]]; then
    C_SERVERS="$C_SERVERS c-$s"; PORT[c-$s]=$p; p=$((p + 1))
  else
    log "no echo_$s (liburing-dev missing?): skipped"
  fi
done
start_server() {  # name: c-epoll | c-uring | c-threads | nc-MODEL; sets PORT[name], SPID[name]
  local s="$1" line="" i
  if [[ "$s" == c-* ]]; then
    port_free "${PORT[$s]}" || die "port ${PORT[$s]} is busy (set PORT_BASE)"
    "$ANCHORS/bin/echo_${s#c-}" "${PORT[$s]}" "$SERVER_CPU" >>"$OUT/server.$s.log" 2>&1 &
    SPID[$s]=$!; PIDS+=($!)
    wait_port "${PORT[$s]}" || die "$s did not start"
    return
  fi
  local m="${s#nc-}" extra=()
  [[ "$m" == pool ]] && extra=(--workers 1024)
  taskset -c "$SERVER_CPU" "$NETCORE" serve --model "$m" --proto echo --listen 127.0.0.1:0 \
    --max-conns 100000 "${extra[@]}" >"$OUT/server.$s.log" 2>&1 &
  SPID[$s]=$!; PIDS+=($!)
  for i in $(seq 1 50); do
    line=$(head -1 "$OUT/server.$s.log" 2>/dev/null || true)
    [[ "$line" == "listening on "* ]] && break
    sleep 0.1
  done
  [[ "$line" == "listening on "* ]] || die "netcore serve --model $m did not start: $(cat "$OUT/server.$s.log")"
  local addr
  addr=$(awk '{print $3}' <<<"$line")
  PORT[$s]=${addr##*:}
}
stop_server() { stop_pid "${SPID[$1]}"; sleep 0.3; }
{
  echo "# servers pinned to CPU $SERVER_CPU, clients to CPU $CLIENT_CPU; runs=$RUNS conns=[$CONNS] duration=$DURATION warmup=$WARMUP"
  echo "# each server is started for its own measurement and stopped after it"
  echo "# rr_load: $ANCHORS/bin/rr_load --port P --conns N --size 64 --duration $DURATION --warmup $WARMUP --cpu $CLIENT_CPU"
  echo "# netcore load: $NETCORE load --connect 127.0.0.1:P --proto echo --size 64 --clients N --duration ${DURATION}s --warmup ${WARMUP}s --cpus $CLIENT_CPU --csv"
} >"$OUT/commands.txt"
log "raw results in $OUT"

SERVERS="$C_SERVERS"
for m in $MODELS; do SERVERS="$SERVERS nc-$m"; done

for r in $(seq 1 "$RUNS"); do
  for n in $CONNS; do
    for s in $SERVERS; do
      if [[ "$s" == nc-iterative && "$n" != 1 ]]; then continue; fi
      log "run $r conns $n server $s client rr_load"
      start_server "$s"
      line=$(timeout "$RUN_LIMIT" "$ANCHORS/bin/rr_load" --port "${PORT[$s]}" --conns "$n" --size 64 \
        --duration "$DURATION" --warmup "$WARMUP" --cpu "$CLIENT_CPU" 2>&1 | tail -1 || true)
      stop_server "$s"
      rps=$(grep -o 'rps=[0-9.]*' <<<"$line" | cut -d= -f2 || true)
      p99=$(grep -o 'p99_us=[0-9.]*' <<<"$line" | cut -d= -f2 || true)
      echo "server=$s client=rr_load conns=$n run=$r rps=${rps:-0} p99_us=${p99:-0} raw=[$line]" >>"$RES"
    done
    log "run $r conns $n server c-epoll client netcore-load"
    start_server c-epoll
    csv=$(timeout "$RUN_LIMIT" "$NETCORE" load --connect "127.0.0.1:${PORT[c-epoll]}" --proto echo \
      --size 64 --clients "$n" --duration "${DURATION}s" --warmup "${WARMUP}s" --cpus "$CLIENT_CPU" \
      --csv 2>&1 | tail -1 || true)
    stop_server c-epoll
    rps=$(awk -F, '{print $5}' <<<"$csv")
    p99=$(awk -F, '{print $8}' <<<"$csv")
    errs=$(awk -F, '{print $16+$17+$18+$19+$20+$21+$22}' <<<"$csv")
    echo "server=c-epoll client=netcore-load conns=$n run=$r rps=${rps:-0} p99_us=${p99:-0} errors=${errs:-?} raw=[$csv]" >>"$RES"
  done
done

SYS="$OUT/syscalls.txt"
: >"$SYS"
if [[ -n "$SYSCALL_CONNS" ]] && command -v strace >/dev/null; then
  for s in nc-epoll nc-uring c-epoll c-uring; do
    [[ " $SERVERS " == *" $s "* ]] || continue
    log "syscalls per request: $s, $SYSCALL_CONNS connections"
    start_server "$s"
    # Attach to every thread of the server (a reactor or ring may not run on the main thread).
    tids=()
    for t in /proc/"${SPID[$s]}"/task/*; do tids+=(-p "${t##*/}"); done
    strace -c -f -q "${tids[@]}" -o "$OUT/strace.$s.txt" &
    spid=$!
    sleep 0.5
    line=$(timeout "$RUN_LIMIT" "$ANCHORS/bin/rr_load" --port "${PORT[$s]}" --conns "$SYSCALL_CONNS" --size 64 \
      --duration 3 --warmup 0 --cpu "$CLIENT_CPU" 2>&1 | tail -1 || true)
    kill -INT "$spid" 2>/dev/null || true
    wait "$spid" 2>/dev/null || true
    stop_server "$s"
    reqs=$(grep -o 'reqs=[0-9]*' <<<"$line" | cut -d= -f2 || true)
    calls=$(awk '$NF == "total" {print $4}' "$OUT/strace.$s.txt" 2>/dev/null || true)
    echo "$s ${reqs:-0} ${calls:-0}" >>"$SYS"
  done
elif [[ -n "$SYSCALL_CONNS" ]]; then
  log "strace not installed: no syscall counts (apt-get install strace)"
fi

python3 - "$RES" <<'EOF'
import re, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    m = dict(re.findall(r'(\w+)=([^ \[]+)', line.split(' raw=')[0]))
    try:
        rps, p99 = float(m['rps']), float(m['p99_us'])
    except (KeyError, ValueError):
        continue
    rows.setdefault((m['server'], m['client'], int(m['conns'])), []).append((rps, p99))

def med(k):
    v = rows.get(k)
    if not v or all(r == 0 for r, _ in v):
        return None
    rs = [r for r, _ in v]
    return statistics.median(rs), min(rs), max(rs), statistics.median([p for _, p in v]), len(v)

names = {'c-epoll': 'C echo_epoll', 'c-uring': 'C echo_uring', 'c-threads': 'C echo_threads'}
conns = sorted({k[2] for k in rows})
servers = []
for k in rows:
    if k[1] == 'rr_load' and k[0] not in servers:
        servers.append(k[0])
servers.sort(key=lambda s: (not s.startswith('c-'), s))
print("## servers driven by rr_load (64-byte echo round trips; medians over runs)")
print()
print("| conns | server | req/s median [min-max] | p99 µs | vs C epoll (req/s, p99) | vs C threads (req/s) |")
print("|---|---|---|---|---|---|")
for n in conns:
    ce, ct = med(('c-epoll', 'rr_load', n)), med(('c-threads', 'rr_load', n))
    for s in servers:
        x = med((s, 'rr_load', n))
        if x is None:
            continue
        name = names.get(s, 'netcore ' + s[3:])
        ve = f"{x[0]/ce[0]:.2f}x, {x[3]/ce[3]:.2f}x" if ce and ce[3] else "-"
        vt = f"{x[0]/ct[0]:.2f}x" if ct else "-"
        print(f"| {n} | {name} | {x[0]:,.0f} [{x[1]:,.0f}-{x[2]:,.0f}] | {x[3]:,.1f} | {ve} | {vt} |")
print()
print("## load generators against C echo_epoll")
print()
print("| conns | rr_load req/s | netcore load req/s | ratio | rr_load p99 µs | netcore load p99 µs |")
print("|---|---|---|---|---|---|")
for n in conns:
    a, b = med(('c-epoll', 'rr_load', n)), med(('c-epoll', 'netcore-load', n))
    if a and b:
        print(f"| {n} | {a[0]:,.0f} [{a[1]:,.0f}-{a[2]:,.0f}] | {b[0]:,.0f} [{b[1]:,.0f}-{b[2]:,.0f}] | {b[0]/a[0]:.2f}x | {a[3]:,.1f} | {b[3]:,.1f} |")
EOF
if [[ -s "$SYS" ]]; then
  echo
  echo "## system calls per request (strace -c -f on the server, rr_load --conns $SYSCALL_CONNS, 3 s; strace slows the server, so only the ratio of calls to requests means anything)"
  echo
  echo "| server | requests | syscalls | syscalls per request |"
  echo "|---|---|---|---|"
  while read -r s reqs calls; do
    awk -v s="$s" -v r="$reqs" -v c="$calls" 'BEGIN { printf "| %s | %d | %d | %s |\n", s, r, c, (r > 0 ? sprintf("%.3f", c / r) : "-") }'
  done <"$SYS"
fi
log "done; raw results: $RES"
