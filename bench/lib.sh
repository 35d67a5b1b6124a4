# What the benchmark scripts share, sourced by each from the repository root (`. bench/lib.sh`):
# the release binaries' paths, a temporary WORK directory, the processes to stop and the vhost to
# delete at exit, the build, and the waits.
#
#   BENCH_BUILD=0            skip the build and run the binaries already in target/release
#   BENCH_KEEP=1             keep WORK (its logs and outputs) after the run
#   BENCH_CONCURRENCY=64     connections a sending script keeps busy
#   BENCH_BODY_SIZE=600      bytes of each event it sends

SECRET=whsec_bench
BIN=target/release/polyai-relay
BROKER=target/release/examples/bench_broker
WORK=$(mktemp -d)
# Processes started in the background, stopped at exit.
PIDS=()
# The RabbitMQ vhost of this run (see make_vhost), deleted at exit.
VHOST=""
# The load of the scripts that send: connections at once, and bytes per event.
CONCURRENCY=${BENCH_CONCURRENCY:-64}
SIZE=${BENCH_BODY_SIZE:-600}

bench_cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [ -z "$VHOST" ] || rabbitmqctl delete_vhost "$VHOST" >/dev/null 2>&1 || true
  if [ "${BENCH_KEEP:-0}" = 1 ]; then echo "kept $WORK" >&2; else rm -rf "$WORK"; fi
}
trap bench_cleanup EXIT

# bench_build EXAMPLE...: the release relay, then the examples. Two invocations: the examples
# bring the dev-dependencies' features, and the relay measured must be built without them.
bench_build() {
  [ "${BENCH_BUILD:-1}" = 1 ] || return 0
  echo "building (release)..." >&2
  cargo build --release --locked --quiet --bin polyai-relay
  local example examples=()
  for example in "$@"; do examples+=(--example "$example"); done
  [ ${#examples[@]} -eq 0 ] || cargo build --release --locked --quiet "${examples[@]}"
}

# make_vhost: creates $VHOST on the local RabbitMQ for guest (deleted at exit); AMQP is its URL.
make_vhost() {
  AMQP="amqp://guest:guest@127.0.0.1:5672/$VHOST"
  rabbitmqctl add_vhost "$VHOST" >/dev/null
  rabbitmqctl set_permissions -p "$VHOST" guest '.*' '.*' '.*' >/dev/null
}

ms_now() { date +%s%3N; }

# wait_until DESCRIPTION SECONDS COMMAND...: until COMMAND succeeds; fails after SECONDS.
wait_until() {
  local what=$1 deadline=$(( $(ms_now) + $2 * 1000 ))
  shift 2
  until "$@"; do
    [ "$(ms_now)" -lt "$deadline" ] || { echo "timed out: $what" >&2; return 1; }
    sleep 0.005
  done
}

# wait_ready URL SECONDS: until URL answers 2xx.
wait_ready() { wait_until "not ready: $1" "$2" curl -fs -o /dev/null "$1"; }

# CPU time (user + system, in clock ticks of TICK a second) of process $1 so far.
TICK=$(getconf CLK_TCK)
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

# cpu_per_second PID [SECONDS]: the process's CPU in % of one core, each second on one line, for
# SECONDS or until killed.
cpu_per_second() {
  local previous now left=${2:--1}
  previous=$(cpu_ticks "$1")
  while [ "$left" -ne 0 ] && sleep 1; do
    now=$(cpu_ticks "$1")
    printf '%s ' $(( (now - previous) * 100 / TICK ))
    previous=$now
    left=$(( left - 1 ))
  done
  echo
}

# field REGEX FILE: the first group of REGEX's first match in FILE, or n/a.
field() { python3 -c "import re,sys; m=re.search(sys.argv[1], open(sys.argv[2]).read()); print(m.group(1) if m else 'n/a')" "$1" "$2"; }
