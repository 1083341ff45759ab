#!/usr/bin/env bash
# callgrind-http.sh - instructions per HTTP request of a server, counted by
# `valgrind --tool=callgrind` (noise-free on a loaded machine, unlike requests/s).
#
# The server runs under callgrind; wrk drives it over loopback for DURATION seconds with CONNS
# keep-alive connections (GET /, bounded by timeout(1)); the server is then stopped and its
# instruction count divided by the requests it answered. Startup and shutdown are taken out:
# the same server is first started and stopped under callgrind with no request, and that count
# is subtracted.
#
# Usage: tools/callgrind-http.sh [netcore MODEL | nginx]   (default: netcore epoll)
# Knobs: CONNS (10) DURATION (5) PORT (16900) NETCORE (target/profiling/netcore: debug info for the annotations) OUT (mktemp -d)
# Prints one line: "SERVER conns=N requests=R instructions=I idle_run=I0 per_request=(I-I0)/R".
set -euo pipefail
set -m
HERE="$(cd "$(dirname "$0")" && pwd)"
REPO="$(dirname "$HERE")"
# shellcheck source=tools/lib.sh
source "$REPO/tools/lib.sh"
KIND="${1:-netcore}"
case "$KIND" in netcore) SERVER="netcore-${2:-epoll}" ;; *) SERVER="$KIND" ;; esac
MODEL="${2:-epoll}"
CONNS="${CONNS:-10}"
DURATION="${DURATION:-5}"
PORT="${PORT:-16900}"
NETCORE="${NETCORE:-$REPO/target/profiling/netcore}"
OUT="${OUT:-$(mktemp -d /tmp/callgrind-http.XXXXXX)}"
mkdir -p "$OUT"
command -v valgrind >/dev/null || die "valgrind is not installed"
command -v wrk >/dev/null || die "wrk is not installed"
ss -Htln "sport = :$PORT" | grep -q . && die "port $PORT is in use (set PORT)"

# Starts the server under callgrind (outputs named after $1), waits for its port.
start_server() {
  case "$KIND" in
    netcore)
      [[ -x "$NETCORE" ]] || die "$NETCORE is missing (cargo build --profile profiling)"
      valgrind --tool=callgrind --callgrind-out-file="$OUT/$1.callgrind.%p" \
        "$NETCORE" serve --proto http --model "$MODEL" --listen "127.0.0.1:$PORT" \
        --idle-timeout 0 >"$OUT/$1.server.log" 2>"$OUT/$1.valgrind.log" &
      ;;
    nginx)
      rm -rf "$OUT/nginx"; mkdir -p "$OUT/nginx/tmp"
      cat >"$OUT/nginx/nginx.conf" <<EOF
daemon off;
master_process off;
worker_processes 1;
pid $OUT/nginx/nginx.pid;
error_log $OUT/nginx/error.log warn;
events { worker_connections 8192; }
http {
  access_log off;
  keepalive_requests 100000000;
  client_body_temp_path $OUT/nginx/tmp;
  proxy_temp_path $OUT/nginx/tmp;
  fastcgi_temp_path $OUT/nginx/tmp;
  uwsgi_temp_path $OUT/nginx/tmp;
  scgi_temp_path $OUT/nginx/tmp;
  default_type text/plain;
  server {
    listen 127.0.0.1:$PORT;
    location = / { return 200 "Hello from netcore\n"; }
  }
}
EOF
      # master_process off: one process serves, so one callgrind output holds all the work.
      valgrind --tool=callgrind --callgrind-out-file="$OUT/$1.callgrind.%p" \
        nginx -p "$OUT/nginx" -c "$OUT/nginx/nginx.conf" -e "$OUT/nginx/error.log" \
        >"$OUT/$1.server.log" 2>"$OUT/$1.valgrind.log" &
      ;;
    *) die "usage: $0 [netcore MODEL | nginx]" ;;
  esac
  PID=$!
  PIDS+=("$PID")
  for _ in $(seq 1 200); do
    ss -Htln "sport = :$PORT" | grep -q . && break
    sleep 0.1
  done
  ss -Htln "sport = :$PORT" | grep -q . || die "$SERVER did not listen (see $OUT)"
}
# Stops it with SIGINT and prints its instruction count.
stop_server() {
  kill -INT "$PID"
  for _ in $(seq 1 100); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$PID" 2>/dev/null && die "$SERVER did not stop on SIGINT"
  wait "$PID" 2>/dev/null || true
  cat "$OUT/$1".callgrind.* | awk '/^summary:/ {s += $2} END {print s}'
}

start_server idle
IR0=$(stop_server idle)
start_server load
timeout $((DURATION + 30)) wrk -t1 -c"$CONNS" -d"${DURATION}s" "http://127.0.0.1:$PORT/" \
  >"$OUT/wrk.txt" 2>&1 || die "wrk failed (see $OUT/wrk.txt)"
# wrk counts the requests it got answers to; errors would make the division wrong.
grep -q "Non-2xx\|Socket errors" "$OUT/wrk.txt" && die "wrk saw errors (see $OUT/wrk.txt)"
REQS=$(awk '/requests in/ {print $1}' "$OUT/wrk.txt")
IR=$(stop_server load)
[[ -n "$IR0" && -n "$IR" && -n "$REQS" && "$REQS" -gt 0 ]] || die "no counts (see $OUT)"
echo "$SERVER conns=$CONNS requests=$REQS instructions=$IR idle_run=$IR0 per_request=$(((IR - IR0) / REQS)) (profiles in $OUT)"
