#!/usr/bin/env bash
# fuzz.sh - a longer, bounded run of the proptest fuzz targets in tests/fuzz.rs: the datagram
# header decoder, the control-message decoder and the task-line parser (arbitrary bytes and
# structured mutations of valid inputs). cargo-fuzz would need a nightly toolchain; proptest
# runs on stable.
#
#   tools/fuzz.sh                        # 50,000 cases per target, at most 10 minutes
#   CASES=500000 TIME=3600 tools/fuzz.sh  # longer
#   tools/fuzz.sh control                # only the targets whose name contains "control"
#
# A failure prints the minimal input; proptest also records its seed in
# tests/fuzz.proptest-regressions (commit it), and the input belongs in
# regression_inputs_stay_harmless once the bug is fixed.
set -euo pipefail
cd "$(dirname "$0")/.."
CASES="${CASES:-50000}"
TIME="${TIME:-600}"
FILTER="${1:-}"

cargo test --release --test fuzz --no-run --quiet
echo "fuzz: ${CASES} cases per target, at most ${TIME}s${FILTER:+, targets matching '$FILTER'}"
start=$(date +%s)
log=$(mktemp /tmp/netcore-fuzz.XXXXXX)
trap 'rm -f "$log"' EXIT
set +e
PROPTEST_CASES="$CASES" PROPTEST_MAX_SHRINK_TIME=60000 \
  timeout --signal=INT --kill-after=10 "$TIME" \
  cargo test --release --quiet --test fuzz -- ${FILTER:+"$FILTER"} 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
set -e
if grep -qE "panicked|FAILED|minimal failing input" "$log"; then
  echo "fuzz: FAILURE found (see the minimal input above)"
  exit 1
fi
if [[ $rc -eq 124 || $rc -eq 130 ]]; then
  echo "fuzz: time limit of ${TIME}s reached with no failure so far (raise TIME or lower CASES)"
  exit 0
fi
echo "fuzz: finished in $(( $(date +%s) - start ))s (exit $rc)"
exit $rc
