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
# For CONNS (default "1 10 100 1000"), RUNS times (default 10), interleaved: run 1 of every
# configuration, then run 2, ...
#
# Figures per run (TSV in $OUT/samples.tsv, read by tools/stats.py): rps (requests/s), p99_us
# (rr_load's p99 round trip), server_cpu_us_per_req (the server process's CPU, /proc/PID/stat
# utime+stime of every thread and reaped children, read before and after the run, over warm-up
# + run, per request at the run's rate): the same scope for netcore and the C servers.
#
# How to read the output (markdown, stdout): the ratios first. "headline" rows per connection
# count: netcore's epoll model / the best C server (echo_epoll, echo_threads, echo_uring where
# built) and / C echo_epoll (the kernel's ceiling for one thread on epoll) in requests/s, then
# p99 and CPU per request (lower-better: "ahead" there means netcore's is lower). "extra" rows:
# every other model against its like (uring / echo_uring, thread and pool / echo_threads, the
# others / echo_epoll); "load generator": netcore load / rr_load on C echo_epoll (rows only for
# runs without errors). Verdicts: "ahead" where the 95 % interval's lower bound is above 1.0,
# "behind" where its upper bound is below, else "on par". Then min/median/max per configuration,
# the load average before and after ("noisy" above 1.5 or a spread over 30 %), and the system
# calls per request.
#
#   RUNS=2 DURATION=1 WARMUP=0 CONNS="1 100" MODELS="epoll thread" SYSCALL_CONNS= \
#     NETCORE=target/debug/netcore tools/compare-servers.sh       # does it work?
#
# Knobs (environment): RUNS CONNS DURATION WARMUP MODELS SERVER_CPU CLIENT_CPU PORT_BASE
#                      NETCORE (binary; default target/release/netcore, built if missing)
#                      ANCHORS (directory of the C anchors' binaries, outside this repository;
#                      default ../shared/anchors/bin; build them with shared/anchors/build.sh)
#                      OUT (raw results directory; default a new mktemp -d)
# Every server started here is stopped by PID when the script exits; every client run is bounded
# with timeout(1).
set -euo pipefail
set -m

HERE="$(cd "$(dirname "$0")" && pwd)"
REPO="$(dirname "$HERE")"
RUNS="${RUNS:-10}"
CONNS="${CONNS:-1 10 100 1000}"
DURATION="${DURATION:-5}"
WARMUP="${WARMUP:-1}"
MODELS="${MODELS:-iterative fork thread pool epoll uring}"
SYSCALL_CONNS="${SYSCALL_CONNS-100}"   # connections for the strace syscall count (empty: skip)
SERVER_CPU="${SERVER_CPU:-1}"
CLIENT_CPU="${CLIENT_CPU:-0}"
PORT_BASE="${PORT_BASE:-15600}"
NETCORE="${NETCORE:-$REPO/target/release/netcore}"
OUT="${OUT:-$(mktemp -d /tmp/compare-servers.XXXXXX)}"
RUN_LIMIT=$((DURATION + WARMUP + 60))

# shellcheck source=tools/lib.sh
source "$REPO/tools/lib.sh"

RR_LOAD=$(anchor rr_load)
anchor echo_epoll >/dev/null
anchor echo_threads >/dev/null
if [[ ! -x "$NETCORE" ]]; then
  log "building netcore (cargo build --release)"
  (cd "$REPO" && cargo build --release >&2) || die "cargo build failed"
fi
mkdir -p "$OUT"
RES="$OUT/results.txt"
TSV="$OUT/samples.tsv"
: >"$RES"
: >"$TSV"

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
  if [[ -x "$ANCHORS/echo_$s" ]]; then
    C_SERVERS="$C_SERVERS c-$s"; PORT[c-$s]=$p; p=$((p + 1))
  else
    log "no echo_$s (liburing-dev missing?): skipped"
  fi
done
start_server() {  # name: c-epoll | c-uring | c-threads | nc-MODEL; sets PORT[name], SPID[name]
  local s="$1" line="" i
  if [[ "$s" == c-* ]]; then
    port_free "${PORT[$s]}" || die "port ${PORT[$s]} is busy (set PORT_BASE)"
    "$ANCHORS/echo_${s#c-}" "${PORT[$s]}" "$SERVER_CPU" >>"$OUT/server.$s.log" 2>&1 &
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
  echo "# rr_load: $RR_LOAD --port P --conns N --size 64 --duration $DURATION --warmup $WARMUP --cpu $CLIENT_CPU"
  echo "# netcore load: $NETCORE load --connect 127.0.0.1:P --proto echo --size 64 --clients N --duration ${DURATION}s --warmup ${WARMUP}s --cpus $CLIENT_CPU --csv"
} >"$OUT/commands.txt"
log "raw results in $OUT"

SERVERS="$C_SERVERS"
for m in $MODELS; do SERVERS="$SERVERS nc-$m"; done

LOAD_BEFORE=$(loadavg)
for r in $(seq 1 "$RUNS"); do
  for n in $CONNS; do
    for s in $SERVERS; do
      if [[ "$s" == nc-iterative && "$n" != 1 ]]; then continue; fi
      log "run $r conns $n server $s client rr_load"
      start_server "$s"
      cpu0=$(proc_cpu "${SPID[$s]}")
      line=$(timeout "$RUN_LIMIT" "$RR_LOAD" --port "${PORT[$s]}" --conns "$n" --size 64 \
        --duration "$DURATION" --warmup "$WARMUP" --cpu "$CLIENT_CPU" 2>&1 | tail -1 || true)
      cpu1=$(proc_cpu "${SPID[$s]}")
      stop_server "$s"
      rps=$(grep -o 'rps=[0-9.]*' <<<"$line" | cut -d= -f2 || true)
      p99=$(grep -o 'p99_us=[0-9.]*' <<<"$line" | cut -d= -f2 || true)
      echo "server=$s client=rr_load conns=$n run=$r rps=${rps:-0} p99_us=${p99:-0} raw=[$line]" >>"$RES"
      sample_if "$TSV" "$n conns: $s" rps "$rps"
      sample_if "$TSV" "$n conns: $s" p99_us "$p99"
      # The server process's CPU (all threads, reaped children) over warm-up + run, per request
      # (requests counted as rps over both: the warm-up is taken to run at the same rate).
      if [[ -n $cpu0 && -n $cpu1 && -n $rps ]]; then
        sample_if "$TSV" "$n conns: $s" server_cpu_us_per_req \
          "$(awk -v a="$cpu0" -v b="$cpu1" -v r="$rps" -v t=$((DURATION + WARMUP)) 'BEGIN {if (r > 0) printf "%.3f\n", (b - a) * 1e6 / (r * t)}')"
      fi
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
    [[ ${errs:-1} == 0 ]] && sample_if "$TSV" "$n conns: c-epoll by netcore load" rps "$rps"
  done
done

LOAD_AFTER=$(loadavg)
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
    line=$(timeout "$RUN_LIMIT" "$ANCHORS/rr_load" --port "${PORT[$s]}" --conns "$SYSCALL_CONNS" --size 64 \
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

ratios=()
cs="c-epoll|c-threads"; [[ " $C_SERVERS " == *" c-uring "* ]] && cs="$cs|c-uring"
best_c() { local n=$1 out=() x; for x in ${cs//|/ }; do out+=("$n conns: $x"); done; local IFS='|'; echo "${out[*]}"; }
for n in $CONNS; do
  for m in epoll; do
    [[ " $MODELS " == *" $m "* ]] || continue
    ratios+=(--ratio "headline=rps:$n conns: nc-$m/$(best_c "$n")" --ratio "headline=rps:$n conns: nc-$m/$n conns: c-epoll")
    ratios+=(--ratio "headline=p99_us:$n conns: nc-$m/$n conns: c-epoll")
    ratios+=(--ratio "headline=server_cpu_us_per_req:$n conns: nc-$m/$n conns: c-epoll")
  done
done
for n in $CONNS; do
  for m in $MODELS; do
    [[ $m == epoll || ( $m == iterative && $n != 1 ) ]] && continue
    like=c-epoll; [[ $m == uring && " $C_SERVERS " == *" c-uring "* ]] && like=c-uring
    [[ $m == thread || $m == pool ]] && like=c-threads
    ratios+=(--ratio "extra: --model $m=rps:$n conns: nc-$m/$n conns: $like")
  done
  ratios+=(--ratio "load generator=rps:$n conns: c-epoll by netcore load/$n conns: c-epoll")
done
echo "### Echo servers over loopback: netcore's models beside the C echo servers; 64-byte round trips, ${DURATION} s per run, $RUNS interleaved runs"
echo
echo "Servers on CPU $SERVER_CPU, the client (rr_load, or netcore load where named) on CPU $CLIENT_CPU; kernel $(uname -r)."
echo
python3 "$REPO/tools/stats.py" "$TSV" "${ratios[@]}" --lower-better p99_us --lower-better server_cpu_us_per_req \
  --load-before "$LOAD_BEFORE" --load-after "$LOAD_AFTER"
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
