#!/usr/bin/env bash
# Instruction counts per webhook, the figure that stays put on a busy machine (BENCHMARKS.md):
#
#   bash bench/profile.sh                 # 2,000 webhooks at 64 connections, 600-byte events
#   PROFILE_COUNT=5000 bash bench/profile.sh
#
# Runs the release relay (`serve`), the bare HTTP+verify baseline and the two parts assembled
# (examples/bench_http.rs, without and with a broker) under valgrind's callgrind, zeroes the
# counters once each is ready, sends a fixed number of signed webhooks with `polyai-relay send`,
# and dumps: instructions per webhook = Ir / count.
# Also counts the TCP segments the relay sends the broker per message (`ss -ti`), the shape of
# its publishes as the broker sees them. Profiles stay in bench/profiles/ (git-ignored) for
# `callgrind_annotate`.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh

COUNT=${PROFILE_COUNT:-2000}
VHOST="relay-profile-$$"
OUT=bench/profiles
mkdir -p "$OUT"

command -v valgrind >/dev/null || { echo "needs valgrind (apt-get install valgrind)" >&2; exit 1; }
BENCH_BUILD=${PROFILE_BUILD:-${BENCH_BUILD:-1}} bench_build bench_http bench_broker
make_vhost

send() { "$BIN" send --url "$1" --secret $SECRET --count "$2" --concurrency "$CONCURRENCY" --body-size "$SIZE"; }
# Bytes and segments the relay's AMQP connection has sent so far.
amqp_out() { ss -tinH state established "( dport = :5672 )" | python3 -c '
import re, sys
text = sys.stdin.read()
print(sum(int(x) for x in re.findall(r"\bsegs_out:(\d+)", text)), sum(int(x) for x in re.findall(r"\bbytes_sent:(\d+)", text)))'; }

# profile NAME PORT COMMAND...: Ir per request of COMMAND serving $COUNT webhooks after a warm-up.
profile() {
  local name=$1 port=$2; shift 2
  valgrind --tool=callgrind --callgrind-out-file="$OUT/$name.%p.out" --dump-instr=no "$@" 2>"$OUT/$name.log" &
  local pid=$!; PIDS+=("$pid")
  # Under callgrind, start-up is many times slower than natively.
  wait_ready "http://127.0.0.1:$ADMIN_PORT/readyz" 300
  send "http://127.0.0.1:$port/polyai-events" 200 >/dev/null # warm-up: connections, pools, lazy statics
  callgrind_control -z "$pid" >/dev/null
  local before; before=$(amqp_out)
  send "http://127.0.0.1:$port/polyai-events" "$COUNT" >"$OUT/$name.send.txt"
  local after; after=$(amqp_out)
  callgrind_control -d "$name" "$pid" >/dev/null
  kill "$pid"; wait "$pid" 2>/dev/null || true
  local file; file=$(ls -t "$OUT/$name.$pid.out".* | head -n 1)
  local ir; ir=$(awk '/^summary:/ { print $2 }' "$file")
  python3 - "$name" "$ir" "$COUNT" "$before" "$after" "$file" <<'PY'
import sys
name, ir, count, before, after, file = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4].split(), sys.argv[5].split(), sys.argv[6]
segs, sent = int(after[0]) - int(before[0]), int(after[1]) - int(before[1])
line = f"{name}: {ir / count:,.0f} instructions per webhook ({ir:,} for {count})"
if segs:
    line += f"; to the broker {segs / count:.2f} TCP segments and {sent / count:,.0f} bytes per message"
print(f"{line}; profile {file}")
PY
}

# profile_http NAME PORT LABEL [AMQP EXCHANGE KEY]: examples/bench_http as profile() runs the relay;
# it answers only the webhook path, so its readiness is the first 401 to an unsigned POST.
profile_http() {
  local name=$1 port=$2 label=$3; shift 3
  valgrind --tool=callgrind --callgrind-out-file="$OUT/$name.%p.out" --dump-instr=no \
    target/release/examples/bench_http "127.0.0.1:$port" $SECRET "$@" 2>"$OUT/$name.log" &
  local pid=$!; PIDS+=("$pid")
  until [ "$(curl -s -o /dev/null -w '%{http_code}' -X POST "http://127.0.0.1:$port/polyai-events")" = 401 ]; do sleep 0.2; done
  send "http://127.0.0.1:$port/polyai-events" 200 >/dev/null
  callgrind_control -z "$pid" >/dev/null
  send "http://127.0.0.1:$port/polyai-events" "$COUNT" >"$OUT/$name.send.txt"
  callgrind_control -d "$name" "$pid" >/dev/null
  kill "$pid"; wait "$pid" 2>/dev/null || true
  local file; file=$(ls -t "$OUT/$name.$pid.out".* | head -n 1)
  echo "$label: $(awk -v n="$COUNT" '/^summary:/ { printf "%\047.0f", $2 / n }' "$file") instructions per webhook; profile $file"
}
profile_http bare 18092 "bare HTTP+verify"

export AMQP_URL="$AMQP" POLYAI_WEBHOOK_SECRET=$SECRET RELAY_LISTEN=127.0.0.1:18090 RELAY_ADMIN_LISTEN=127.0.0.1:19090 RELAY_LOG_FORMAT=json RUST_LOG=${RUST_LOG:-info}
ADMIN_PORT=19090 profile relay 18090 "$BIN" serve

# The two parts assembled (bench_http publishing as the ceiling does), into the topology the relay
# declared: what the relay would cost with nothing of its own.
profile_http assembled 18093 "the two parts assembled" "$AMQP" polyai.events conversation.completed

# The lapin client alone doing the relay's broker work (examples/bench_broker.rs ceiling), into
# the topology the relay declared: Ir per confirmed message, start-up included (a few 0.1%).
valgrind --tool=callgrind --callgrind-out-file="$OUT/lapin.%p.out" --dump-instr=no \
  target/release/examples/bench_broker ceiling "$AMQP" polyai.events conversation.completed "$SIZE" "$CONCURRENCY" 5 \
  >"$OUT/lapin.txt" 2>"$OUT/lapin.log" &
LAPIN=$!; PIDS+=("$LAPIN"); wait "$LAPIN"
lapin_file=$(ls -t "$OUT/lapin.$LAPIN.out"* | head -n 1)
confirmed=$(awk '/^confirmed:/ { print $2 }' "$OUT/lapin.txt")
echo "lapin ceiling client: $(awk -v n="$confirmed" '/^summary:/ { printf "%\047.0f", $2 / n }' "$lapin_file") instructions per message ($confirmed confirmed); profile $lapin_file"

# Natively: per message, the syscalls, context switches and CPU time of the relay and of the
# broker (software counters; `perf stat` works where hardware counters are not exposed).
if command -v perf >/dev/null && perf stat -e raw_syscalls:sys_enter true 2>/dev/null; then
  BEAM=$(pgrep -f beam.smp | head -n 1)
  EVENTS=task-clock,context-switches,raw_syscalls:sys_enter
  counted() { # label, pid...: perf stat of each pid until stop_perf
    local label=$1; shift
    PERFS=()
    for pid in "$@"; do perf stat -e "$EVENTS" -p "$pid" -x, -o "$OUT/$label.$pid.perf" & PERFS+=("$!"); done
  }
  per_message() { # label, count, pid, name
    python3 - "$OUT/$1.$3.perf" "$2" "$4" <<'PY'
import sys
path, count, name = sys.argv[1], int(sys.argv[2]), sys.argv[3]
values = {}
for line in open(path):
    parts = line.strip().split(",")
    if len(parts) > 2 and parts[0] and not line.startswith("#"):
        values[parts[2]] = float(parts[0])
print(f"  {name}: {values.get('task-clock', 0) * 1000 / count:.1f} µs CPU, "
      f"{values.get('raw_syscalls:sys_enter', 0) / count:.2f} syscalls, "
      f"{values.get('context-switches', 0) / count:.2f} context switches per message")
PY
  }
  stop_perf() { kill -INT "${PERFS[@]}" 2>/dev/null || true; wait "${PERFS[@]}" 2>/dev/null || true; }

  "$BIN" serve 2>"$OUT/relay.native.log" &
  RELAY=$!; PIDS+=("$RELAY")
  wait_ready http://127.0.0.1:19090/readyz 30
  send http://127.0.0.1:18090/polyai-events 500 >/dev/null
  counted relay "$RELAY" "$BEAM"
  sleep 0.5
  send http://127.0.0.1:18090/polyai-events "$COUNT" >"$OUT/relay.native.send.txt"
  stop_perf
  echo "relay, natively, $COUNT webhooks:"
  per_message relay "$COUNT" "$RELAY" relay
  per_message relay "$COUNT" "$BEAM" broker
  kill "$RELAY"; wait "$RELAY" 2>/dev/null || true

  counted lapin "$BEAM"
  sleep 0.5
  target/release/examples/bench_broker ceiling "$AMQP" polyai.events conversation.completed "$SIZE" "$CONCURRENCY" 5 >"$OUT/lapin.native.txt"
  stop_perf
  confirmed=$(awk '/^confirmed:/ { print $2 }' "$OUT/lapin.native.txt")
  echo "lapin ceiling, natively, $confirmed messages:"
  per_message lapin "$confirmed" "$BEAM" broker
fi
