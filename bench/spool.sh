#!/usr/bin/env bash
# The spool's benchmark (BENCHMARKS.md, "The spool"): how fast the receiver spools with the broker
# away, how fast the spool drains into RabbitMQ against the broker's own ceiling, and the outage
# run: a broker cut off for 60 s while 1,000 webhooks arrive, ending with every one enriched.
#
#   bash bench/spool.sh                                   # 20 s phases, a 60 s outage, 1,000 webhooks
#   BENCH_SECONDS=5 BENCH_OUTAGE=10 BENCH_OUTAGE_WEBHOOKS=200 bash bench/spool.sh   # a quicker look
#
# It runs in a vhost of its own on the local RabbitMQ (deleted at the end), on a free loopback
# port, with its spools in a temporary directory.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh

SECONDS_PER_PHASE=${BENCH_SECONDS:-20}
OUTAGE=${BENCH_OUTAGE:-60}
OUTAGE_WEBHOOKS=${BENCH_OUTAGE_WEBHOOKS:-1000}
VHOST="relay-spool-bench-$$"
# Nothing listens on port 1: the broker is "away" for the spooling phase.
AWAY="amqp://guest:guest@127.0.0.1:1/$VHOST"
# A free port picked now (other benchmarks on this host use fixed ones), or BENCH_SPOOL_PORT.
PORT=${BENCH_SPOOL_PORT:-$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
# The admin listener's (/readyz, /metrics), picked the same way, or BENCH_SPOOL_ADMIN_PORT.
ADMIN_PORT=${BENCH_SPOOL_ADMIN_PORT:-$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
  echo "port $PORT is in use; set BENCH_SPOOL_PORT" >&2
  exit 1
fi
bench_build bench_broker spool_outage
make_vhost

metric() { curl -fs http://127.0.0.1:${ADMIN_PORT}/metrics | awk -v name="$1" '$1 == name { print int($2) }'; }
spool_is() { [ "$(metric relay_spool_events)" = "$1" ]; }
ready() { kill -0 "$SERVE" || { echo "the relay exited; see its log" >&2; exit 1; }; curl -fs -o /dev/null http://127.0.0.1:${ADMIN_PORT}/readyz; }
serve() { # amqp url, spool dir (empty: none), log
  AMQP_URL="$1" RELAY_SPOOL_DIR="$2" POLYAI_WEBHOOK_SECRET=$SECRET RELAY_LISTEN=127.0.0.1:${PORT} \
    RELAY_ADMIN_LISTEN=127.0.0.1:${ADMIN_PORT} RELAY_LOG_FORMAT=json RUST_LOG=warn "$BIN" serve 2>"$3" &
  SERVE=$!; PIDS+=("$SERVE")
}
stop() { kill "$1"; wait "$1" 2>/dev/null || true; }

# 1. The broker's ceiling for the receiver's work (the topology declared by a relay first; without
# a spool, /readyz waits for the broker and the topology).
serve "$AMQP" "" "$WORK/declare.log"
wait_until "the relay declares the topology" 30 ready
stop "$SERVE"
echo "broker ceiling..." >&2
"$BROKER" ceiling "$AMQP" polyai.events conversation.completed "$SIZE" "$CONCURRENCY" "$SECONDS_PER_PHASE" >"$WORK/ceiling.txt"
ceiling=$(field '\(([0-9.]+) msg/s\)' "$WORK/ceiling.txt")
"$BROKER" purge "$AMQP" polyai.enrich

# 2. Spooling flat out: the broker is away, every webhook goes to the spool (fsync'd each).
echo "spooling with the broker away..." >&2
serve "$AWAY" "$WORK/spool" "$WORK/spooling.log"
wait_until "ready on the spool" 30 ready
"$BIN" send --url http://127.0.0.1:${PORT}/polyai-events --secret $SECRET --duration "${SECONDS_PER_PHASE}s" \
  --concurrency "$CONCURRENCY" --body-size "$SIZE" >"$WORK/spooling.txt"
spooled=$(metric relay_spool_events)
spool_bytes=$(metric relay_spool_bytes)
stop "$SERVE"
spool_file=$(du -sk "$WORK/spool" | cut -f1)

# 3. Draining: a relay started on the same spool with the broker reachable forwards it all.
echo "draining..." >&2
started=$(ms_now)
serve "$AMQP" "$WORK/spool" "$WORK/draining.log"
wait_until "the spool drains" 600 spool_is 0
drain_ms=$(( $(ms_now) - started ))
queued=$("$BROKER" depth "$AMQP" polyai.enrich)
stop "$SERVE"
"$BROKER" purge "$AMQP" polyai.enrich

# 4. The outage run: the broker cut off for $OUTAGE s while $OUTAGE_WEBHOOKS webhooks arrive.
echo "a ${OUTAGE} s outage with ${OUTAGE_WEBHOOKS} webhooks..." >&2
target/release/examples/spool_outage "$BIN" "$AMQP" "$OUTAGE" "$OUTAGE_WEBHOOKS" "$WORK/outage-spool" >"$WORK/outage.txt"

python3 - "$ceiling" "$WORK/spooling.txt" "$spooled" "$spool_bytes" "$spool_file" "$drain_ms" "$queued" \
  "$SECONDS_PER_PHASE" "$CONCURRENCY" "$SIZE" <<'PY'
import re, sys
ceiling, spooling, spooled, spool_bytes, spool_kb, drain_ms, queued, secs, conc, size = sys.argv[1:]
text = open(spooling).read()
get = lambda pattern: (re.search(pattern, text) or [None, "n/a"])[1]
rps, total, ok = get(r"\(([0-9.]+) req/s\)"), get(r"requests: (\d+)"), get(r"204: (\d+)")
p50, p99, mx = get(r"p50 ([0-9.]+)"), get(r"p99 ([0-9.]+)"), get(r"max ([0-9.]+)")
drain = int(spooled) / (int(drain_ms) / 1000)
rows = [
    ("broker ceiling (confirmed publishes)", f"{float(ceiling):,.0f} msg/s", ""),
    ("spooling, broker away", f"{float(rps):,.0f} req/s", f"p50 {p50} ms, p99 {p99} ms, max {mx} ms; {int(total) - int(ok)} of {total} not 204"),
    ("spool holds every 204", f"{spooled} spooled / {ok} answered 204", "ok" if spooled == ok else "MISMATCH"),
    ("spool size", f"{int(spool_bytes) / 2**20:.1f} MiB of events, {int(spool_kb) / 1024:.1f} MiB on disk", ""),
    ("drain into RabbitMQ", f"{drain:,.0f} events/s", f"{drain / float(ceiling):.0%} of the ceiling; {spooled} in {int(drain_ms) / 1000:.1f} s, start-up included"),
    ("queue holds every spooled event", f"{queued} queued / {spooled} spooled", "ok" if queued == spooled else "MISMATCH (duplicates are allowed, losses are not)"),
]
print(f"\n{secs} s phases, {conc} connections, {size}-byte events\n")
print("| measure | result | note |\n|---|---|---|")
for name, value, note in rows:
    print(f"| {name} | {value} | {note} |")
PY
echo
cat "$WORK/outage.txt"
