#!/usr/bin/env bash
# What the broker does right after a flat-out phase (BENCHMARKS.md, the runs of 18:20): pairs of
# phases, each a flat-out phase then one at a fixed rate, by the relay or by lapin alone, in the
# order given, with a purge after each pair. For each paced phase it prints the broker's CPU second
# by second, the latency (the relay's answers, or lapin's confirms) and, where the broker's data
# directory is readable, its quorum write-ahead log file before and after the pair.
#
#   bash bench/after_flat_out.sh                             # lapin relay lapin relay lapin
#   bash bench/after_flat_out.sh relay relay                 # any order of `relay` and `lapin`
#   RELAY_CONVERSATIONS_LOG=off bash bench/after_flat_out.sh # without the conversations log stream
#
# A paced phase starting while the broker copies a rolled-over write-ahead log into segments shows
# 100% CPU and more for its first seconds, and a p99 over 10 ms, whichever of the two publishes.
# It runs in a vhost of its own on the local RabbitMQ (deleted at the end), on the ports of
# bench/run.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh

SECONDS_PER_PHASE=${BENCH_SECONDS:-20}
RATE=${BENCH_FIXED_RATE:-1000}
VHOST="relay-after-flat-out-$$"
URL=http://127.0.0.1:18080/polyai-events
[ $# -gt 0 ] || set -- lapin relay lapin relay lapin
bench_build bench_broker
make_vhost
BEAM=$(pgrep -f 'beam.smp' | head -n 1)

# The newest quorum write-ahead log file, when this user can read the broker's data directory.
wal() { ls /var/lib/rabbitmq/mnesia/*/quorum/*/*.wal 2>/dev/null | tail -n 1 | xargs -r basename || true; }

# The relay declares the topology (and, unless RELAY_CONVERSATIONS_LOG=off, the stream) first.
AMQP_URL="$AMQP" POLYAI_WEBHOOK_SECRET=$SECRET RELAY_LOG_FORMAT=json RUST_LOG=info \
  RELAY_LISTEN=127.0.0.1:18080 RELAY_ADMIN_LISTEN=127.0.0.1:19080 "$BIN" serve 2>"$WORK/serve.log" &
PIDS+=("$!")
wait_ready http://127.0.0.1:19080/readyz 30

for who in "$@"; do
  before=$(wal)
  case $who in
    relay)
      "$BIN" send --url "$URL" --secret $SECRET --concurrency "$CONCURRENCY" --body-size "$SIZE" \
        --duration "${SECONDS_PER_PHASE}s" | grep '^requests:' | sed 's/^/flat out: /'
      cpu_per_second "$BEAM" "$SECONDS_PER_PHASE" >"$WORK/broker" &
      sampler=$!
      "$BIN" send --url "$URL" --secret $SECRET --concurrency "$CONCURRENCY" --body-size "$SIZE" \
        --duration "${SECONDS_PER_PHASE}s" --rate "$RATE" >"$WORK/paced" || true
      latency=$(grep '^latency' "$WORK/paced")
      ;;
    lapin)
      "$BROKER" ceiling "$AMQP" polyai.events conversation.completed "$SIZE" "$CONCURRENCY" "$SECONDS_PER_PHASE" |
        grep '^confirmed:' | sed 's/^/flat out: /'
      cpu_per_second "$BEAM" "$SECONDS_PER_PHASE" >"$WORK/broker" &
      sampler=$!
      "$BROKER" ceiling "$AMQP" polyai.events conversation.completed "$SIZE" "$CONCURRENCY" "$SECONDS_PER_PHASE" "$RATE" >"$WORK/paced"
      latency=$(grep '^confirm latency' "$WORK/paced")
      ;;
    *) echo "unknown publisher: $who (relay or lapin)" >&2; exit 2 ;;
  esac
  wait "$sampler"
  echo "$who, then $RATE/s: $latency"
  echo "  broker CPU %, second by second: $(cat "$WORK/broker")"
  [ -z "$before" ] || echo "  write-ahead log: $before -> $(wal)"
  "$BROKER" purge "$AMQP" polyai.enrich >/dev/null
done
