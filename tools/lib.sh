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

# port_wait [tcp|udp] PORT: waits up to 5 s for a listener on PORT of 127.0.0.1 (TCP unless
# told); logs and fails (which ends a `set -e` script) when none comes.
port_wait() {
  local flag=-ltn proto=tcp port=$1
  if [[ $# -ge 2 ]]; then proto=$1 port=$2; fi
  [[ $proto == udp ]] && flag=-lun
  for _ in $(seq 1 100); do ss $flag "sport = :$port" 2>/dev/null | grep -q ":$port" && return 0; sleep 0.05; done
  log "error: nothing listening on $proto port $port"
  return 1
}

# loadavg: the 1-minute load average (for tools/stats.py --load-before/--load-after).
loadavg() { cut -d' ' -f1 /proc/loadavg; }

# sample TSV CONFIG METRIC VALUE: one run's figure, in the form tools/stats.py reads.
sample() { printf '%s\t%s\t%s\n' "$2" "$3" "$4" >>"$1"; }
