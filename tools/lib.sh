# Shared by the comparison scripts (source it): logging, and the background processes a script
# starts (append their pids to PIDS), each stopped on exit with SIGTERM, then SIGKILL after 3 s.

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

PIDS=()
stop_pid() {
  local pid="$1" i c
  # A process run under `timed` is /usr/bin/time's child: stop the child (by its pid) first.
  for c in $(pgrep -P "$pid" 2>/dev/null); do kill -TERM "$c" 2>/dev/null || true; done
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

# timed FILE CMD...: runs CMD under /usr/bin/time, which writes to FILE the CPU-seconds (user,
# system) of the whole process and the children it waited for: the scope every compare script
# uses for every tool, so netcore's and a peer's CPU figures count the same things.
timed() { local f=$1; shift; /usr/bin/time -o "$f" -f '%U %S' "$@"; }
# cpu_s FILE: the CPU-seconds (user + system) a `timed` run wrote; empty when it wrote none.
cpu_s() { awk 'NF == 2 && $1 ~ /^[0-9.]+$/ {c = $1 + $2} END {if (c != "") printf "%.4f\n", c}' "$1" 2>/dev/null || true; }
# proc_cpu PID: CPU-seconds a running process has spent so far: utime + stime of /proc/PID/stat
# (every thread) + cutime + cstime (its children it has reaped: a fork server's). Read before and
# after a phase for a server that is stopped rather than exiting.
proc_cpu() {
  awk -v hz="$(getconf CLK_TCK)" '{sub(/^.*\) /, ""); printf "%.4f\n", ($12 + $13 + $14 + $15) / hz}' "/proc/$1/stat" 2>/dev/null || true
}
# per_gbit CPU_S BYTES: CPU-seconds per gigabit (1e9 bits) moved; empty when either is missing.
per_gbit() { [[ -n "$1" && -n "$2" && "$2" != 0 ]] && awk -v c="$1" -v b="$2" 'BEGIN {printf "%.5f\n", c / (b * 8 / 1e9)}' || true; }
# sample_if TSV CONFIG METRIC VALUE: `sample`, skipped when VALUE is empty (a run that failed).
sample_if() { [[ -n "$4" ]] && sample "$@" || true; }

# The C yardsticks (kernel ceilings, echo servers) live outside this repository, in
# shared/anchors (its build.sh compiles them into its bin/). ANCHORS names the directory of the
# binaries (default: shared/anchors/bin beside the repository's parent).
ANCHORS="${ANCHORS:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/shared/anchors/bin}"
# anchor NAME: the path of one C anchor, built with shared/anchors/build.sh when missing and the
# build script is beside ANCHORS; dies saying where to get it otherwise.
anchor() {
  local b="$ANCHORS/$1"
  if [[ ! -x "$b" && -f "$ANCHORS/../build.sh" ]]; then
    log "building the C anchors ($ANCHORS/../build.sh)"
    bash "$ANCHORS/../build.sh" >&2 || true
  fi
  [[ -x "$b" ]] || die "$b missing: the C anchors are not in this repository; build them with shared/anchors/build.sh (they land in its bin/) and point ANCHORS= at that bin/ directory"
  echo "$b"
}

# IPERF3_NEW: iperf3 3.21+ (built by shared/peers/build-iperf3.sh into /opt/iperf3-new, outside
# the repository); built here when missing and the build script is there.
IPERF3_NEW="${IPERF3_NEW:-/opt/iperf3-new/bin/iperf3}"
need_iperf3_new() {
  local b="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/shared/peers/build-iperf3.sh"
  if [[ ! -x $IPERF3_NEW && -f $b ]]; then
    log "building iperf3 3.21+ ($b)"
    PREFIX="$(dirname "$(dirname "$IPERF3_NEW")")" bash "$b" >&2 || true
  fi
  [[ -x $IPERF3_NEW ]] || die "$IPERF3_NEW missing: build it with shared/peers/build-iperf3.sh (PREFIX=/opt/iperf3-new)"
}

# NC: the netcore binary measured (default target/release/netcore, built by need_netcore; give
# NC=target/debug/netcore to check a script quickly, never to measure).
need_netcore() {
  if [[ -z "${NC:-}" ]]; then
    NC=target/release/netcore
    cargo build --release --quiet || die "cargo build --release failed"
  fi
  [[ -x $NC ]] || die "$NC missing"
}
