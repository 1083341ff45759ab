#!/usr/bin/env bash
# compare-http.sh - netcore `serve --proto http` beside nginx under wrk, and `netcore load` beside
# wrk on the same server (closed loop); `netcore load --rate` beside wrk2 -R on the same server
# (open loop). Loopback only.
#
# Sections (SECTIONS, default "closed open"):
#   closed  the servers under wrk, and netcore load, below
#   open    open-loop latency on netcore epoll: wrk2 (github.com/giltene/wrk2, not packaged for
#           Debian: build it outside this repository and give its binary as WRK2=/path/to/wrk;
#           without WRK2 this section is skipped) beside `netcore load --proto http --rate R`
#           at each rate of RATES, below
#
# Servers (pinned to SERVER_CPU, default 1):
#   netcore serve --proto http --model M   for M in $MODELS (default: epoll uring thread)
#   nginx, one worker, a config written here to a temp dir: `GET /` answers a body of the same
#   size as netcore's `GET /` ("Hello from netcore\n", 19 bytes), access log off
#   c-http: the C http_epoll from shared/anchors (outside this repository; ANCHORS names the
#   directory of its binaries, default ../shared/anchors/bin, built by its build.sh): one
#   epoll thread answering every request with a fixed 2-byte body, the kernel's ceiling
# Clients (pinned to CLIENT_CPU, default 0):
#   wrk -t1 -cN -d$DURATION --latency http://127.0.0.1:P/         (every server)
#   netcore load --proto http --clients N --duration .. --warmup .. --cpus CLIENT_CPU
#                                                                 (netcore epoll and nginx)
# For CONNS (default "10 100 1000"), RUNS times (default 10), interleaved: run 1 of every
# configuration, then run 2, ...
#
# Figures per run (TSV in $OUT/samples.tsv, read by tools/stats.py; runs with errors left out):
# rps, p99_us, and server_cpu_us_per_req (wrk runs only): the server process's CPU (user +
# system of every thread, /proc/PID/stat before and after wrk; nginx: its one worker) per request
# answered, the same scope for netcore and nginx.
#
# How to read the output (markdown, stdout): the ratios first. "headline" rows per connection
# count: netcore epoll / nginx and / c-http (the ceiling) under wrk (requests/s; p99 and CPU per
# request lower-better, where "ahead" means netcore's is lower), and under netcore load (a client faster than one wrk
# thread, so the servers' own rates). "extra" rows: the other models / nginx; "load generator":
# netcore load / wrk on netcore epoll. Verdicts: "ahead" where the 95 % interval's lower bound is
# above 1.0, "behind" where its upper bound is below, else "on par". Then min/median/max per
# configuration and the load average before and after ("noisy" above 1.5 or a spread over 30 %).
#
# Open loop (netcore epoll on SERVER_CPU, each client on CLIENT_CPU), for each of OPEN_CONNS:
#   $WRK2 -t1 -cN -R RATE -d(CAL + OPEN_DURATION)s --timeout 5s --latency http://127.0.0.1:P/
#   netcore load --proto http --clients N --rate RATE --warmup CAL --duration OPEN_DURATION
# wrk2 throws away what it measured in its first 10 s + 5 ms per connection (its calibration, not
# configurable); CAL is that rounded up to whole seconds, and netcore load warms up as long. Both
# measure a request's latency from its intended send time (wrk2: a schedule per connection, one
# request in flight; netcore load: a schedule per client, pipelined when behind). Interleaved as
# above (which client goes first alternates between runs); printed: the medians of p50, p90 and
# p99 per (connections, rate), the ratios load / wrk2, each client's requests/s. Choose rates
# below what the server and each client (one thread) can do: above it the one that fell behind
# measures only its growing backlog (its requests/s shows it).
#
# Knobs (environment): RUNS CONNS DURATION WARMUP MODELS SERVER_CPU CLIENT_CPU PORT_BASE
#                      NETCORE (binary; default target/release/netcore, built if missing)
#                      NGINX (default: nginx on PATH)  OUT (raw results; default mktemp -d)
#                      SECTIONS  WRK2  RATES (default "10000 30000 60000")
#                      OPEN_CONNS (default 100; a list)  OPEN_DURATION (seconds; default 10)
#                      OPEN_PATH (the URL path of the open loop; default /)
#                      LOAD_OPEN_ARGS (more flags for netcore load in the open loop, e.g. --spin)
#                      CAPTURE (1: capture each open-loop run with tcpdump on lo and print the
#                      latency the wire saw beside each client's, from tools/wire-latency.py)
# Every server started here is stopped by PID when the script exits; every client run is bounded
# with timeout(1).
set -euo pipefail
set -m

HERE="$(cd "$(dirname "$0")" && pwd)"
REPO="$(dirname "$HERE")"
RUNS="${RUNS:-10}"
CONNS="${CONNS:-10 100 1000}"
DURATION="${DURATION:-5}"
WARMUP="${WARMUP:-1}"
MODELS="${MODELS:-epoll uring thread}"
SERVER_CPU="${SERVER_CPU:-1}"
CLIENT_CPU="${CLIENT_CPU:-0}"
PORT_BASE="${PORT_BASE:-15700}"
NETCORE="${NETCORE:-$REPO/target/release/netcore}"
NGINX="${NGINX:-$(command -v nginx || true)}"
OUT="${OUT:-$(mktemp -d /tmp/compare-http.XXXXXX)}"
RUN_LIMIT=$((DURATION + WARMUP + 60))
SECTIONS="${SECTIONS:-closed open}"
WRK2="${WRK2:-}"
RATES="${RATES:-10000 30000 60000}"
OPEN_CONNS="${OPEN_CONNS:-100}"
OPEN_DURATION="${OPEN_DURATION:-10}"
OPEN_PATH="${OPEN_PATH:-/}"
LOAD_OPEN_ARGS="${LOAD_OPEN_ARGS:-}"
CAPTURE="${CAPTURE:-0}"

# shellcheck source=tools/lib.sh
source "$REPO/tools/lib.sh"

for s in $SECTIONS; do
  [[ "$s" == closed || "$s" == open ]] || die "SECTIONS: unknown section '$s' (closed, open)"
done
has() { [[ " $SECTIONS " == *" $1 "* ]]; }
if has open && [[ -z "$WRK2" ]]; then
  log "open loop skipped: WRK2 is not set (build wrk2 outside this repository; WRK2=/path/to/wrk)"
  SECTIONS="${SECTIONS//open/}"
fi
has closed || has open || die "nothing to run (SECTIONS: closed, open)"
if has closed; then
  command -v wrk >/dev/null || die "wrk is not installed (apt-get install wrk)"
  [[ -n "$NGINX" && -x "$NGINX" ]] || die "nginx is not installed (apt-get install nginx)"
fi
if has open; then
  [[ -x "$WRK2" ]] || die "WRK2=$WRK2 is not an executable"
  # wrk2 is the wrk that takes a rate: wrk's usage has no --rate (both exit 1 after it).
  usage=$("$WRK2" --help 2>&1 || true)
  [[ "$usage" == *--rate* ]] || die "WRK2=$WRK2 is not wrk2 (its usage has no --rate)"
  for r in $RATES; do
    [[ "$r" =~ ^[1-9][0-9]*$ ]] || die "RATES: '$r' is not a whole number of requests/s"
  done
  for c in $OPEN_CONNS; do
    [[ "$c" =~ ^[1-9][0-9]*$ ]] || die "OPEN_CONNS: '$c' is not a whole number"
  done
  [[ "$OPEN_DURATION" =~ ^[1-9][0-9]*$ ]] ||
    die "OPEN_DURATION: '$OPEN_DURATION' is not a whole number of seconds"
  [[ "$OPEN_PATH" == /* ]] || die "OPEN_PATH: '$OPEN_PATH' does not start with /"
  [[ "$CAPTURE" == 0 || "$CAPTURE" == 1 ]] || die "CAPTURE: '$CAPTURE' is not 0 or 1"
  if [[ "$CAPTURE" == 1 ]]; then
    command -v tcpdump >/dev/null || die "CAPTURE=1 needs tcpdump (apt-get install tcpdump)"
  fi
fi
command -v python3 >/dev/null || die "python3 is needed for the medians"
if [[ ! -x "$NETCORE" ]]; then
  log "building netcore (cargo build --release)"
  (cd "$REPO" && cargo build --release >&2) || die "cargo build failed"
fi
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
mkdir -p "$OUT"
RES="$OUT/results.txt"
: >"$RES"

port_free() { ! ss -Htln "sport = :$1" 2>/dev/null | grep -q .; }
wait_port() {
  local i
  for i in $(seq 1 100); do
    port_free "$1" || return 0
    sleep 0.05
  done
  return 1
}

# ---- servers ---------------------------------------------------------------------------------
declare -A PORT SPID
next_port=$PORT_BASE
start_netcore() {
  local model="$1" port=$next_port
  next_port=$((next_port + 1))
  port_free "$port" || die "port $port is in use (set PORT_BASE)"
  taskset -c "$SERVER_CPU" "$NETCORE" serve --proto http --model "$model" \
    --listen "127.0.0.1:$port" --idle-timeout 0 >"$OUT/serve-$model.log" 2>&1 &
  PIDS+=($!)
  wait_port "$port" || die "netcore $model did not listen"
  PORT[$model]=$port
  SPID[$model]=$!
}
# The kernel's ceiling for one thread answering HTTP: the C http_epoll from shared/anchors (a
# fixed 2-byte body; keep-alive, pipelining), pinned like the others.
start_c_http() {
  local port=$next_port
  next_port=$((next_port + 1))
  port_free "$port" || die "port $port is in use (set PORT_BASE)"
  "$C_HTTP" "$port" "$SERVER_CPU" >"$OUT/c-http.log" 2>&1 &
  PIDS+=($!)
  wait_port "$port" || die "http_epoll did not listen"
  PORT[c-http]=$port
  SPID[c-http]=$!
}
start_nginx() {
  local port=$next_port dir="$OUT/nginx"
  next_port=$((next_port + 1))
  port_free "$port" || die "port $port is in use (set PORT_BASE)"
  mkdir -p "$dir/tmp"
  cat >"$dir/nginx.conf" <<EOF
daemon off;
master_process on;
worker_processes 1;
worker_rlimit_nofile 65536;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 8192; multi_accept on; }
http {
  access_log off;
  keepalive_requests 100000000;
  keepalive_timeout 120s;
  client_body_temp_path $dir/tmp;
  proxy_temp_path $dir/tmp;
  fastcgi_temp_path $dir/tmp;
  uwsgi_temp_path $dir/tmp;
  scgi_temp_path $dir/tmp;
  default_type text/plain;
  server {
    listen 127.0.0.1:$port;
    location = / { return 200 "Hello from netcore\n"; }
  }
}
EOF
  taskset -c "$SERVER_CPU" "$NGINX" -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log" \
    >"$dir/stdout.log" 2>&1 &
  PIDS+=($!)
  wait_port "$port" || die "nginx did not listen (see $dir/error.log)"
  PORT[nginx]=$port
  # The worker serves; the master only watches it (and may not have forked it yet).
  local master=$! i
  for i in $(seq 1 100); do
    SPID[nginx]=$(pgrep -P "$master" | head -1 || true)
    [[ -n "${SPID[nginx]}" ]] && break
    sleep 0.05
  done
  [[ -n "${SPID[nginx]}" ]] || die "no nginx worker process"
}

if has closed; then
  for m in $MODELS; do start_netcore "$m"; done
  start_nginx
  SERVERS="$MODELS nginx"
  body=$(curl -s "http://127.0.0.1:${PORT[nginx]}/" | wc -c)
  [[ "$body" == 19 ]] || die "nginx answers a $body-byte body, not 19"
  C_HTTP=$(anchor http_epoll)
  start_c_http
  SERVERS="$SERVERS c-http"
fi
if has open && [[ -z "${PORT[epoll]:-}" ]]; then
  start_netcore epoll
fi

# ---- clients ---------------------------------------------------------------------------------
# One wrk run: appends "wrk SERVER CONNS RUN req_s p99_us errors cpu_us" to $RES, cpu_us being
# the server process's CPU time (user + system of every thread, /proc/PID/stat, read before and
# after wrk: the same scope for netcore and nginx's worker) per request answered. Unlike
# requests/s, this does not depend on whether the server or the client (wrk, on one CPU) is the
# bottleneck.
run_wrk() {
  local server="$1" conns="$2" run="$3" port=${PORT[$1]} f cpu0 cpu1
  f="$OUT/wrk-$server-$conns-$run.txt"
  cpu0=$(proc_cpu "${SPID[$server]}")
  timeout "$RUN_LIMIT" taskset -c "$CLIENT_CPU" wrk -t1 -c"$conns" -d"${DURATION}s" \
    --timeout 5s --latency "http://127.0.0.1:$port/" >"$f" 2>&1 || true
  cpu1=$(proc_cpu "${SPID[$server]}")
  python3 - "$f" "$server" "$conns" "$run" "${cpu0:-nan}" "${cpu1:-nan}" >>"$RES" <<'PY'
import math, re, sys
f, server, conns, run = sys.argv[1:5]
cpu0, cpu1 = float(sys.argv[5]), float(sys.argv[6])
t = open(f).read()
rps = re.search(r"Requests/sec:\s+([\d.]+)", t)
p99 = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s)\b", t, re.M)
errs = sum(int(x) for x in re.findall(r"(?:connect|read|write|timeout) (\d+)", t))
non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", t)
errs += int(non2xx.group(1)) if non2xx else 0
us = float(p99.group(1)) * {"us": 1, "ms": 1e3, "s": 1e6}[p99.group(2)] if p99 else float("nan")
reqs = re.search(r"(\d+) requests in", t)
cpu = float("nan")
if reqs and int(reqs.group(1)) > 0 and not math.isnan(cpu1 - cpu0):
    cpu = (cpu1 - cpu0) * 1e6 / int(reqs.group(1))
print(f"wrk {server} {conns} {run} {float(rps.group(1)) if rps else 0.0} {us} {errs} {cpu}")
PY
}
# One netcore load run: "load SERVER CONNS RUN req_s p99_us errors nan". netcore load drives
# netcore epoll (beside wrk on it) and nginx: at 10-100 connections wrk (one thread) is slower
# than either server, netcore load is not, so these are the servers' own rates.
run_load() {
  local server="$1" conns="$2" run="$3" port=${PORT[$1]} f
  f="$OUT/load-$server-$conns-$run.json"
  timeout "$RUN_LIMIT" "$NETCORE" load --connect "127.0.0.1:$port" --proto http \
    --clients "$conns" --duration "${DURATION}s" --warmup "${WARMUP}s" --cpus "$CLIENT_CPU" \
    --json >"$f" 2>"$OUT/load-$server-$conns-$run.err" || true
  python3 - "$f" "$server" "$conns" "$run" >>"$RES" <<'PY'
import json, sys
f, server, conns, run = sys.argv[1:]
try:
    m = json.load(open(f))["points"][0]["median"]
    errs = sum(m["errors"].values())
    print(f"load {server} {conns} {run} {m['tasks_per_s']} {m['p99_us']} {errs} nan")
except Exception as e:
    print(f"load {server} {conns} {run} 0 nan -1 nan")
PY
}

# The closed loop (its body is not indented: the heredocs end at column 0).
if has closed; then
log "servers: $(for s in $SERVERS; do printf '%s=%s ' "$s" "${PORT[$s]}"; done)"
log "runs=$RUNS conns=[$CONNS] duration=${DURATION}s server cpu $SERVER_CPU, client cpu $CLIENT_CPU; raw results in $OUT"
LOAD_BEFORE=$(loadavg)
for run in $(seq 1 "$RUNS"); do
  for conns in $CONNS; do
    for s in $SERVERS; do
      log "run $run/$RUNS conns=$conns wrk -> $s"
      run_wrk "$s" "$conns" "$run"
    done
    if [[ " $MODELS " == *" epoll "* ]]; then
      for s in epoll nginx; do
        log "run $run/$RUNS conns=$conns netcore load -> $s"
        run_load "$s" "$conns" "$run"
      done
    fi
  done
done

# ---- table -----------------------------------------------------------------------------------
# Every run's figures as tools/stats.py samples (runs with errors are left out), then its tables.
TSV="$OUT/samples.tsv"
python3 - "$RES" >"$TSV" <<'PY'
import math, sys
for line in open(sys.argv[1]):
    client, server, c, run, rps, p99, errs, cpu = line.split()
    if int(errs) != 0 or float(rps) == 0:
        continue
    name = f"{c} conns: {client}->{server}"
    print(f"{name}\trps\t{rps}")
    for metric, v in (("p99_us", p99), ("server_cpu_us_per_req", cpu)):
        if not math.isnan(float(v)):
            print(f"{name}\t{metric}\t{v}")
PY
ratios=()
for c in $CONNS; do
  if [[ " $MODELS " == *" epoll "* ]]; then
    for metric in rps p99_us server_cpu_us_per_req; do
      ratios+=(--ratio "headline=$metric:$c conns: wrk->epoll/$c conns: wrk->nginx")
      ratios+=(--ratio "headline=$metric:$c conns: wrk->epoll/$c conns: wrk->c-http")
    done
    ratios+=(--ratio "headline=rps:$c conns: load->epoll/$c conns: load->nginx")
  fi
  for m in $MODELS; do
    [[ $m == epoll ]] || ratios+=(--ratio "extra: --model $m=rps:$c conns: wrk->$m/$c conns: wrk->nginx")
  done
  [[ " $MODELS " == *" epoll "* ]] && ratios+=(--ratio "load generator=rps:$c conns: load->epoll/$c conns: wrk->epoll")
done
echo "### HTTP/1.1 over loopback: netcore serve --proto http beside nginx; ${DURATION} s per run, $RUNS interleaved runs"
echo
python3 "$REPO/tools/stats.py" "$TSV" "${ratios[@]}" --lower-better p99_us --lower-better server_cpu_us_per_req \
  --load-before "$LOAD_BEFORE" --load-after "$(loadavg)"
echo
echo "nginx $("$NGINX" -v 2>&1 | sed 's/.*: //'), wrk $(wrk -v 2>&1 | head -1 | awk '{print $2}');" \
  "RUNS=$RUNS DURATION=${DURATION}s WARMUP=${WARMUP}s; servers on CPU $SERVER_CPU, clients on" \
  "CPU $CLIENT_CPU; load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
fi

# ---- open loop: wrk2 vs netcore load --rate on netcore epoll ---------------------------------
# wrk2's calibration (CALIBRATE_DELAY_MS + 5 ms per connection of a thread), whole seconds.
calibration() { echo $(((10000 + 5 * $1 + 999) / 1000)); }
# CAPTURE=1: tcpdump on lo around one client run (the server's port only), then the latency
# the wire saw, after the client's calibration or warm-up: "CLIENT CONNS RATE RUN count p50 p90
# p99" to $WIRE_RES.
capture_start() {
  [[ "$CAPTURE" == 1 ]] || return 0
  CAP_FILE="$OUT/cap-$1.pcap"
  timeout "$((OPEN_DURATION + 120))" tcpdump -i lo -nn -s 96 -B 65536 -w "$CAP_FILE" \
    "tcp port ${PORT[epoll]}" 2>"$OUT/cap-$1.err" &
  CAP_PID=$!
  # tcpdump says "listening" once its filter is on the socket.
  local i
  for i in $(seq 1 100); do
    grep -q listening "$OUT/cap-$1.err" 2>/dev/null && return 0
    sleep 0.05
  done
  die "tcpdump did not start (see $OUT/cap-$1.err)"
}
capture_stop() {  # client conns rate run skip_seconds
  [[ "$CAPTURE" == 1 ]] || return 0
  kill -INT "$CAP_PID" 2>/dev/null || true
  wait "$CAP_PID" 2>/dev/null || true
  echo "$1 $2 $3 $4 $(python3 "$HERE/wire-latency.py" "$CAP_FILE" "${PORT[epoll]}" "$5" |
    awk '{print $2, $3, $4, $5}')" >>"$WIRE_RES"
  rm -f "$CAP_FILE"
}
# One wrk2 run: "wrk2 CONNS RATE RUN req_s p50_us p90_us p99_us errors nan" to $OPEN_RES.
run_wrk2() {
  local conns="$1" rate="$2" run="$3" port=${PORT[epoll]} f cal
  cal=$(calibration "$conns")
  f="$OUT/wrk2-$conns-$rate-$run.txt"
  capture_start "wrk2-$conns-$rate-$run"
  timeout "$((cal + OPEN_DURATION + 60))" taskset -c "$CLIENT_CPU" "$WRK2" -t1 -c"$conns" \
    -R"$rate" -d"$((cal + OPEN_DURATION))s" --timeout 5s --latency \
    "http://127.0.0.1:$port$OPEN_PATH" >"$f" 2>&1 || true
  capture_stop wrk2 "$conns" "$rate" "$run" "$cal"
  python3 - "$f" "$conns" "$rate" "$run" >>"$OPEN_RES" <<'PY'
import re, sys
f, conns, rate, run = sys.argv[1:]
t = open(f).read()
# The first distribution printed is the recorded (corrected) one: " 50.000%    1.23ms".
def pct(p):
    m = re.search(r"^\s*%s%%\s+([\d.]+)(us|ms|s)\b" % re.escape(p), t, re.M)
    return float(m.group(1)) * {"us": 1, "ms": 1e3, "s": 1e6}[m.group(2)] if m else float("nan")
rps = re.search(r"Requests/sec:\s+([\d.]+)", t)
errs = sum(int(x) for x in re.findall(r"(?:connect|read|write|timeout) (\d+)", t))
non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", t)
errs += int(non2xx.group(1)) if non2xx else 0
if not rps:
    errs = -1
print(f"wrk2 {conns} {rate} {run} {float(rps.group(1)) if rps else 0.0} "
      f"{pct('50.000')} {pct('90.000')} {pct('99.000')} {errs} nan")
PY
}
# One netcore load run: "load CONNS RATE RUN req_s p50_us p90_us p99_us errors missed" to
# $OPEN_RES, missed being the share of the schedule never sent (the generator fell behind).
run_load_open() {
  local conns="$1" rate="$2" run="$3" port=${PORT[epoll]} f cal
  cal=$(calibration "$conns")
  f="$OUT/load-open-$conns-$rate-$run.json"
  capture_start "load-$conns-$rate-$run"
  timeout "$((cal + OPEN_DURATION + 60))" "$NETCORE" load --connect "127.0.0.1:$port" \
    --proto http --path "$OPEN_PATH" --clients "$conns" --rate "$rate" \
    --duration "${OPEN_DURATION}s" --warmup "${cal}s" --timeout 5s --cpus "$CLIENT_CPU" $LOAD_OPEN_ARGS --json \
    >"$f" 2>"$OUT/load-open-$conns-$rate-$run.err" || true
  capture_stop load "$conns" "$rate" "$run" "$cal"
  python3 - "$f" "$conns" "$rate" "$run" >>"$OPEN_RES" <<'PY'
import json, sys
f, conns, rate, run = sys.argv[1:]
try:
    m = json.load(open(f))["points"][0]["median"]
    errs = sum(m["errors"].values())
    o = m.get("open_loop") or {}
    missed = o.get("missed", 0) / o["scheduled"] if o.get("scheduled") else float("nan")
    print(f"load {conns} {rate} {run} {m['tasks_per_s']} {m['p50_us']} {m['p90_us']} {m['p99_us']} {errs} {missed}")
except Exception:
    print(f"load {conns} {rate} {run} 0 nan nan nan -1 nan")
PY
}

if has open; then
  OPEN_RES="$OUT/open-results.txt"
  WIRE_RES="$OUT/wire-results.txt"
  : >"$OPEN_RES"
  : >"$WIRE_RES"
  log "open loop: netcore epoll on port ${PORT[epoll]}; runs=$RUNS rates=[$RATES]" \
    "conns=[$OPEN_CONNS], ${OPEN_DURATION}s measured after wrk2's calibration; raw results in $OUT"
  for run in $(seq 1 "$RUNS"); do
    for conns in $OPEN_CONNS; do
      for rate in $RATES; do
        # Alternate which client goes first, so that neither always follows the other.
        if ((run % 2)); then order="wrk2 load"; else order="load wrk2"; fi
        for client in $order; do
          log "open run $run/$RUNS conns=$conns rate=$rate $client -> epoll"
          if [[ "$client" == wrk2 ]]; then
            run_wrk2 "$conns" "$rate" "$run"
          else
            run_load_open "$conns" "$rate" "$run"
          fi
        done
      done
    done
  done
  python3 - "$OPEN_RES" "$RUNS" "$WIRE_RES" <<'PY'
import math, statistics, sys
res, runs, wire_res = sys.argv[1], sys.argv[2], sys.argv[3]
rows, keys, wire = {}, [], {}
for line in open(wire_res):
    client, conns, rate, run, n, p50, p90, p99 = line.split()
    wire.setdefault((client, conns, rate), []).append((float(p50), float(p90), float(p99)))
for line in open(res):
    client, conns, rate, run, rps, p50, p90, p99, errs, missed = line.split()
    if (conns, rate) not in keys:
        keys.append((conns, rate))
    rows.setdefault((client, conns, rate), []).append(
        (float(rps), float(p50), float(p90), float(p99), int(errs), float(missed)))
def med(v, i):
    x = [r[i] for r in v if not math.isnan(r[i])]
    return statistics.median(x) if x else float("nan")
def us(x):
    if math.isnan(x):
        return "-"
    return f"{x/1000:.2f} ms" if x >= 1000 else f"{x:.0f} us"
def cell(v):
    if not v:
        return "-"
    e = sum(r[4] for r in v if r[4] > 0)
    bad = sum(1 for r in v if r[4] < 0)
    missed = med(v, 5)
    return (f"{us(med(v, 1))} / {us(med(v, 2))} / {us(med(v, 3))}"
            + (f" ERR {e}" if e else "") + (f" FAILED RUNS {bad}" if bad else "")
            + (f" missed {100 * missed:.1f}%" if missed > 0.001 else ""))
def ratio(a, b, i):
    if not a or not b:
        return "-"
    x, y = med(a, i), med(b, i)
    return f"{x/y:.2f}x" if y and not math.isnan(x) and not math.isnan(y) else "-"
def wcell(v):
    if not v:
        return "-"
    return " / ".join(us(statistics.median(r[i] for r in v)) for i in range(3))
head = ["conns", "rate", "wrk2 p50 / p90 / p99", "load p50 / p90 / p99",
        "load/wrk2 p50", "p90", "p99", "req/s wrk2, load"]
if wire:
    head += ["wire under wrk2", "wire under load"]
lines = [head]
for conns, rate in keys:
    w, l = rows.get(("wrk2", conns, rate)), rows.get(("load", conns, rate))
    got = ", ".join(f"{med(v, 0)/1000:.1f}k" if v else "-" for v in (w, l))
    lines.append([conns, rate, cell(w), cell(l), ratio(l, w, 1), ratio(l, w, 2), ratio(l, w, 3), got])
    if wire:
        lines[-1] += [wcell(wire.get((c, conns, rate))) for c in ("wrk2", "load")]
width = [max(len(x[i]) for x in lines) for i in range(len(head))]
print("| " + " | ".join(h.ljust(width[i]) for i, h in enumerate(head)) + " |")
print("|" + "|".join("-" * (x + 2) for x in width) + "|")
for r in lines[1:]:
    print("| " + " | ".join(v.ljust(width[i]) for i, v in enumerate(r)) + " |")
print(f"\ncells: medians over {runs} interleaved runs of each client's p50 / p90 / p99 (latency from the"
      " intended send time) at the rate asked; ratios of the medians. A client whose req/s is well below"
      " the rate fell behind (wrk2's req/s counts its calibration too; netcore load's 'missed' is the"
      " share of its schedule it never sent): its percentiles then measure its own backlog")
if wire:
    print("wire: p50 / p90 / p99 of request-to-answer time on loopback (tcpdump, tools/wire-latency.py)"
          " in each client's measured window, medians over the runs; a client's percentiles above"
          " the wire's are its own lateness in sending and its time to read the answer")
PY
  echo "open loop: wrk2 $("$WRK2" -v 2>&1 | head -1 | awk '{print $2}'), netcore load; netcore epoll on" \
    "CPU $SERVER_CPU, clients on CPU $CLIENT_CPU; OPEN_DURATION=${OPEN_DURATION}s after wrk2's" \
    "calibration (netcore load warms up as long); load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
fi
