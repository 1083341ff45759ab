# Shared by the comparison scripts (source it): logging, and the background processes a script
# starts (append their pids to PIDS), each stopped on exit with SIGTERM, then SIGKILL after 3 s.

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

PIDS=()
stop_pid() {
  local pid="$1" i
  kill -TERM "$pid" 2>/dev/null || return 0
  for i in $(seq 1 30); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
cleanup() {
  local p
  for p in "${PIDS[@]:-}"; do [[ -n "$p" ]] && stop_pid "$p"; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM
