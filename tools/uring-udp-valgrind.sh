#!/usr/bin/env bash
# tools/uring-udp-valgrind.sh — blast/recv --backend uring under valgrind (memcheck): a full
# test (linked SEND batches, multishot RECVMSG into provided buffers), the same with --zerocopy
# (SEND_ZC), then a blast stopped
# with SIGTERM while sending and a receiver stopped with SIGTERM in the middle of a test (the
# multishot receive in flight), failing on any memory error.
#
# The receiver runs with --spin: valgrind runs io_uring_enter as a non-blocking ("sync")
# system call holding its big lock, so a receive thread waiting in the kernel starves the
# control thread under valgrind (not otherwise).
#
# Usage: tools/uring-udp-valgrind.sh [PORT]   (needs valgrind and python3; builds the debug binary)
set -euo pipefail
cd "$(dirname "$0")/.."
PORT=${1:-15451}
cargo build --quiet --bin netcore
BIN=target/debug/netcore
VG=(valgrind --error-exitcode=9 -q --fair-sched=yes)
RLOG=$(mktemp) BLOG=$(mktemp) B2LOG=$(mktemp)
"${VG[@]}" "$BIN" recv --listen "127.0.0.1:$PORT" --backend uring --spin --json >"$RLOG" 2>&1 &
RX=$!
for _ in $(seq 100); do grep -q 'listening on' "$RLOG" && break; sleep 0.1; done
grep -q 'listening on' "$RLOG" || { cat "$RLOG"; kill "$RX"; exit 1; }

# 1. A whole test, both sides on io_uring.
rc=0; "${VG[@]}" "$BIN" blast --to "127.0.0.1:$PORT" --count 100000 --backend uring --json >"$BLOG" 2>&1 || rc=$?
[ "$rc" -eq 0 ] || { cat "$BLOG"; kill "$RX"; echo "FAIL: blast exit $rc (9: valgrind found errors)"; exit 1; }
python3 - "$BLOG" <<'PY'
import json, sys
d = json.load(open(sys.argv[1])); a = d["receiver"]["accounting"]
assert d["sender"]["backend"] == "uring" and d["receiver"]["backend"] == "uring", d["sender"]
assert a["unique"] + a["lost"] == a["sent"] == 100000, a
print("test 1: sent", a["sent"], "unique", a["unique"], "lost", a["lost"])
PY

# 1b. The same with --zerocopy (SEND_ZC: buffers held until their notifications).
rc=0; "${VG[@]}" "$BIN" blast --to "127.0.0.1:$PORT" --count 50000 --backend uring --zerocopy --json >"$BLOG" 2>&1 || rc=$?
[ "$rc" -eq 0 ] || { cat "$BLOG"; kill "$RX"; echo "FAIL: blast --zerocopy exit $rc (9: valgrind found errors)"; exit 1; }
python3 - "$BLOG" <<'PY'
import json, sys
d = json.load(open(sys.argv[1])); a = d["receiver"]["accounting"]; z = d["sender"]["zerocopy"]
assert a["unique"] + a["lost"] == a["sent"] == 50000, a
assert z["notifications"] > 0, z
print("test 1b (zerocopy): sent", a["sent"], "unique", a["unique"], "notifications", z["notifications"], "copied", z["copied"])
PY

# 2. A blast stopped with SIGTERM while it sends: it ends the test early, cleanly.
"${VG[@]}" "$BIN" blast --to "127.0.0.1:$PORT" --time 60s --backend uring --json >"$B2LOG" 2>&1 &
TX=$!
sleep 8
kill -TERM "$TX"
rc=0; wait "$TX" || rc=$?
[ "$rc" -ne 9 ] || { cat "$B2LOG"; kill "$RX"; echo "FAIL: valgrind found errors in the blaster"; exit 1; }
echo "test 2: blast stopped by SIGTERM, exit $rc"

# 3. A receiver stopped with SIGTERM in the middle of a test (multishot receive in flight).
"${VG[@]}" "$BIN" blast --to "127.0.0.1:$PORT" --time 60s --backend uring --json >"$B2LOG" 2>&1 &
TX=$!
sleep 8
kill -TERM "$RX"
rc=0; wait "$RX" || rc=$?
wait "$TX" 2>/dev/null || true
grep '^netcore' "$RLOG" || true
if [ "$rc" -ne 0 ]; then echo "FAIL: recv exit $rc (9: valgrind found errors)"; exit 1; fi
grep -q 'interrupted' "$RLOG" || { echo "FAIL: the receiver did not report the interrupted test"; exit 1; }
rm -f "$RLOG" "$BLOG" "$B2LOG"
echo "ok: blast/recv --backend uring clean under valgrind, also stopped with operations in flight"
