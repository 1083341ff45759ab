#!/usr/bin/env bash
# tools/uring-valgrind.sh — the `uring` model under valgrind (memcheck): shut it down with
# SIGTERM while connections are open and operations are in flight (multishot receives, a SLEEP
# ring timeout, a CPU job in the pool, 100 connections held back by their output limit: clients
# that send STATS and never read, so receives are cancelled, sends are short and single-shot
# receives are in flight), and fail on any memory error.
#
# Usage: tools/uring-valgrind.sh [PORT]     (needs valgrind and python3; builds the debug binary)
set -euo pipefail
cd "$(dirname "$0")/.."
PORT=${1:-7601}
cargo build --quiet --bin netcore
BIN=target/debug/netcore
LOG=$(mktemp)
valgrind --error-exitcode=9 -q "$BIN" serve --model uring --workers 1 \
    --listen "127.0.0.1:$PORT" >"$LOG" 2>&1 &
VG=$!
for _ in $(seq 100); do grep -q '^listening on' "$LOG" && break; sleep 0.1; done
grep -q '^listening on' "$LOG" || { cat "$LOG"; kill "$VG"; exit 1; }
python3 - "$PORT" <<'PY'
import socket, sys, time
port = int(sys.argv[1])
cs = [socket.create_connection(("127.0.0.1", port)) for _ in range(20)]
cs[0].sendall(b"SLEEP 30000\n")
cs[1].sendall(b"HASH 10000000 x\n")
cs[2].sendall(b"ECHO hi\nSUM 1 2\n")
assert cs[2].recv(100) == b"hi\n3\n"
# Many connections under backpressure: they send and never read.
hogs = [socket.create_connection(("127.0.0.1", port)) for _ in range(100)]
chunk = b"STATS\n" * 10000
end = time.time() + 3
while time.time() < end:
    for h in hogs:
        h.setblocking(False)
        try:
            h.send(chunk)
        except BlockingIOError:
            pass
    time.sleep(0.05)
# The server still answers a newcomer.
c = socket.create_connection(("127.0.0.1", port))
c.settimeout(30)
c.sendall(b"ECHO alive\n")
assert c.recv(100) == b"alive\n"
time.sleep(1)
PY
kill -TERM "$VG"
rc=0; wait "$VG" || rc=$?
cat "$LOG"
if [ "$rc" -ne 0 ]; then echo "FAIL: exit $rc (9: valgrind found errors)"; exit 1; fi
grep -q '^totals: connections=121' "$LOG" || { echo "FAIL: no totals"; exit 1; }
echo "ok: clean shutdown under valgrind with operations in flight"
