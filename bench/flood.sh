#!/usr/bin/env bash
# The connection-flood benchmark of BENCHMARKS.md ("The public edge under a connection flood"):
# 10,000 sockets held against the webhook port (examples/bench_flood.rs) while signed webhooks
# are posted through it; the webhooks' statuses and latencies and the relay's RSS (from /proc).
#
#   bash bench/flood.sh                          # 10,000 sockets, 30 s per phase
#   FLOOD_SOCKETS=2000 FLOOD_SECONDS=10 bash bench/flood.sh
#
# Loopback only (127.0.0.1:18180, admin 127.0.0.1:18190), the embedded queue in a temporary
# directory, bounded in sockets and time. The flood needs file descriptors: the relay gets
# `ulimit -n` RELAY_MAX_CONNECTIONS + 4096 (fds to spare above the cap, as a deployment should
# have), the flooder sockets + 1024; a hard limit (`ulimit -Hn`) under 16,384 needs raising as root.
set -euo pipefail
cd "$(dirname "$0")/.."

SOCKETS=${FLOOD_SOCKETS:-10000}
SECONDS_PER_PHASE=${FLOOD_SECONDS:-30}
SECRET=whsec_flood
BIN=target/release/polyai-relay
WORK=$(mktemp -d)
RELAY=""

cleanup() {
  [ -n "$RELAY" ] && kill "$RELAY" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

echo "building (release)..." >&2
cargo build --release --quiet --bin polyai-relay --example bench_flood

ms_now() { date +%s%3N; }
wait_ready() {
  local deadline=$(( $(ms_now) + 30000 ))
  until curl -fs -o /dev/null http://127.0.0.1:18190/readyz; do
    [ "$(ms_now)" -lt "$deadline" ] || { echo "the relay is not ready:" >&2; cat "$WORK"/relay-*.log >&2; exit 1; }
    sleep 0.01
  done
}

# One phase: a fresh relay (the RSS peak is its own), a flood of `$1` sockets in mode `$2`.
phase() {
  local max_connections=$1 mode=$2
  rm -rf "$WORK/data"
  (
    ulimit -n $(( max_connections + 4096 ))
    exec env -i PATH="$PATH" RELAY_DATA_DIR="$WORK/data" POLYAI_WEBHOOK_SECRET=$SECRET \
      RELAY_LISTEN=127.0.0.1:18180 RELAY_ADMIN_LISTEN=127.0.0.1:18190 RELAY_MAX_CONNECTIONS="$max_connections" \
      RELAY_LOG_FORMAT=json RUST_LOG=warn "$BIN" serve
  ) 2>"$WORK/relay-$mode-$max_connections.log" &
  RELAY=$!
  wait_ready
  echo "flood: $SOCKETS $mode sockets for ${SECONDS_PER_PHASE}s, RELAY_MAX_CONNECTIONS=$max_connections..." >&2
  (
    ulimit -n $(( SOCKETS + 1024 ))
    target/release/examples/bench_flood 18180 "$RELAY" $SECRET "$SOCKETS" "$SECONDS_PER_PHASE" "$mode"
  ) | python3 -c "import json,sys; r=json.load(sys.stdin); r['max_connections']=$max_connections; print(json.dumps(r))" \
    >>"$WORK/results.jsonl"
  kill "$RELAY"; wait "$RELAY" 2>/dev/null || true
  RELAY=""
}

phase 4096 silent
phase 4096 trickle
phase 12288 silent

python3 - "$WORK/results.jsonl" <<'PY'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
print("\n| flood | RELAY_MAX_CONNECTIONS | flood sockets connected at once | signed webhooks 204 | webhook latency p50 / p99 / max | relay RSS peak / end |")
print("|---|---|---|---|---|---|")
for r in rows:
    lat = r["latency_ms"]
    print(f"| {r['sockets']:,} {r['mode']}, {r['seconds']:.0f} s | {r['max_connections']} | {r['max_open']:,} | "
          f"{r['answered_204']} of {r['webhooks']} | {lat['p50']} / {lat['p99']} / {lat['max']} ms | "
          f"{r['rss_peak_kb'] / 1024:.1f} / {r['rss_end_kb'] / 1024:.1f} MB |")
PY
