#!/usr/bin/env bash
# The benchmark of BENCHMARKS.md: broker ceiling, receiver throughput and latency, memory,
# worker throughput against a 50 ms API, and start-up time, in one run on one machine.
#
#   bash bench/run.sh            # 20 s phases, 64 connections, 600-byte events
#   BENCH_SECONDS=5 bash bench/run.sh
#   BENCH_TRACES=1 bash bench/run.sh   # then traces off against on (bench/traces.sh)
#
# It runs in a vhost of its own on the local RabbitMQ (deleted at the end), on loopback ports
# 18080/18081/18099 (admin listeners on 19080/19081). Every request loop is bounded in time and count.
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_PER_PHASE=${BENCH_SECONDS:-20}
CONCURRENCY=${BENCH_CONCURRENCY:-64}
SIZE=${BENCH_BODY_SIZE:-600}
RATE=${BENCH_FIXED_RATE:-1000}
WORKER_EVENTS=${BENCH_WORKER_EVENTS:-5000}
VHOST="relay-bench-$$"
AMQP="amqp://guest:guest@127.0.0.1:5672/$VHOST"
SECRET=whsec_bench
BIN=target/release/polyai-relay
WORK=$(mktemp -d)
PIDS=()

port_open() { (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null; }
if ! port_open; then
  command -v rabbitmq-server >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rabbitmq-server >/dev/null; }
  rabbitmq-server -detached
  for _ in $(seq 1 120); do port_open && break; sleep 1; done
  timeout 120 rabbitmqctl await_startup >/dev/null
fi

cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rabbitmqctl delete_vhost "$VHOST" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

echo "building (release)..." >&2
cargo build --release --quiet --bin polyai-relay --example bench_broker
rabbitmqctl add_vhost "$VHOST" >/dev/null
rabbitmqctl set_permissions -p "$VHOST" guest '.*' '.*' '.*' >/dev/null

ms_now() { date +%s%3N; }
wait_ready() { # url, limit in seconds
  local deadline=$(( $(ms_now) + $2 * 1000 ))
  until curl -fs -o /dev/null "$1"; do
    [ "$(ms_now)" -lt "$deadline" ] || { echo "not ready: $1" >&2; exit 1; }
    sleep 0.005
  done
}
rss_kb() { awk -v k="$2" '$1 == k":" { print $2 }' "/proc/$1/status"; }
BROKER=target/release/examples/bench_broker
queue_depth() { "$BROKER" depth "$AMQP" "$1"; }
purge() { "$BROKER" purge "$AMQP" "$1"; }
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
broker_pid() { pgrep -f 'beam.smp' | head -n 1; }
field() { python3 -c "import re,sys; m=re.search(sys.argv[1], open(sys.argv[2]).read()); print(m.group(1) if m else 'n/a')" "$1" "$2"; }

export RELAY_LOG_FORMAT=json RUST_LOG=${RUST_LOG:-info}

# 1. Start-up: process start to /readyz 200 (broker connected, topology declared).
started=$(ms_now)
AMQP_URL="$AMQP" POLYAI_WEBHOOK_SECRET=$SECRET RELAY_LISTEN=127.0.0.1:18080 RELAY_ADMIN_LISTEN=127.0.0.1:19080 "$BIN" serve 2>"$WORK/serve.log" &
SERVE=$!; PIDS+=("$SERVE")
wait_ready http://127.0.0.1:19080/readyz 30
ready_ms=$(( $(ms_now) - started ))
sleep 1
idle_rss=$(rss_kb "$SERVE" VmRSS)

# 2. The broker's ceiling for the same work: confirmed persistent publishes, same size and concurrency.
echo "broker ceiling..." >&2
target/release/examples/bench_broker ceiling "$AMQP" polyai.events conversation.completed "$SIZE" "$CONCURRENCY" "$SECONDS_PER_PHASE" >"$WORK/ceiling.txt"
ceiling=$(field '\(([0-9.]+) msg/s\)' "$WORK/ceiling.txt")
purge polyai.enrich

# 3. The receiver flat out, with the CPU each party used (relay, broker, sender share 2 cores).
echo "receiver throughput..." >&2
BEAM=$(broker_pid)
relay_cpu0=$(cpu_ticks "$SERVE"); broker_cpu0=$(cpu_ticks "$BEAM")
"$BIN" send --url http://127.0.0.1:18080/polyai-events --secret $SECRET --duration "${SECONDS_PER_PHASE}s" \
  --concurrency "$CONCURRENCY" --body-size "$SIZE" >"$WORK/max.txt" &
SENDER=$!
sender_cpu=0
while kill -0 "$SENDER" 2>/dev/null; do sender_cpu=$(cpu_ticks "$SENDER" 2>/dev/null || echo "$sender_cpu"); sleep 0.2; done
wait "$SENDER" || true
relay_cpu=$(( $(cpu_ticks "$SERVE") - relay_cpu0 )); broker_cpu=$(( $(cpu_ticks "$BEAM") - broker_cpu0 ))
ticks=$(getconf CLK_TCK)
rps=$(field 'requests: \d+ in [0-9.]+s \(([0-9.]+) req/s\)' "$WORK/max.txt")
accepted=$(field '204: (\d+)' "$WORK/max.txt")
total=$(field 'requests: (\d+)' "$WORK/max.txt")
p50=$(field 'p50 ([0-9.]+)' "$WORK/max.txt"); p99=$(field 'p99 ([0-9.]+)' "$WORK/max.txt"); max=$(field 'max ([0-9.]+)' "$WORK/max.txt")
queued=$(queue_depth polyai.enrich)
peak_rss=$(rss_kb "$SERVE" VmHWM)
purge polyai.enrich

# 4. Latency at a fixed rate.
echo "fixed ${RATE} req/s..." >&2
"$BIN" send --url http://127.0.0.1:18080/polyai-events --secret $SECRET --duration "${SECONDS_PER_PHASE}s" \
  --concurrency "$CONCURRENCY" --rate "$RATE" --body-size "$SIZE" >"$WORK/fixed.txt" || true
fixed_rps=$(field '\(([0-9.]+) req/s\)' "$WORK/fixed.txt")
fixed_p50=$(field 'p50 ([0-9.]+)' "$WORK/fixed.txt"); fixed_p99=$(field 'p99 ([0-9.]+)' "$WORK/fixed.txt")
peak_rss=$(rss_kb "$SERVE" VmHWM)
purge polyai.enrich

# 5. The worker against an API that takes 50 ms per call, at concurrency 64: ideal 64 / 0.05 s.
echo "worker..." >&2
"$BIN" mock-api --listen 127.0.0.1:18099 --latency 50ms 2>"$WORK/mock.log" &
PIDS+=("$!")
wait_ready http://127.0.0.1:18099/healthz 30
conversation=$(curl -fs -H 'x-api-key: mock-api-key' \
  'http://127.0.0.1:18099/v3/ws-mock/PROJECT-MOCK/conversations?limit=1' | python3 -c 'import json,sys; print(json.load(sys.stdin)["conversations"][0]["id"])')
"$BIN" send --url http://127.0.0.1:18080/polyai-events --secret $SECRET --count "$WORKER_EVENTS" \
  --concurrency "$CONCURRENCY" --conversation-id "$conversation" >"$WORK/prefill.txt"
kill "$SERVE"; wait "$SERVE" 2>/dev/null || true
AMQP_URL="$AMQP" POLYAI_API_KEY=mock-api-key POLYAI_BASE_URL=http://127.0.0.1:18099 \
  POLYAI_ACCOUNT_ID=ws-mock POLYAI_PROJECT_ID=PROJECT-MOCK RELAY_API_CONCURRENCY=64 RELAY_ADMIN_LISTEN=127.0.0.1:19081 \
  "$BIN" work 2>"$WORK/work.log" &
WORKER=$!; PIDS+=("$WORKER")
wait_ready http://127.0.0.1:19081/readyz 30
worker_started=$(ms_now)
deadline=$(( worker_started + 300000 ))
until [ "$(curl -fs http://127.0.0.1:19081/metrics | awk '$1 == "relay_enriched_total" { print int($2) }')" -ge "$WORKER_EVENTS" ] 2>/dev/null; do
  [ "$(ms_now)" -lt "$deadline" ] || { echo "the worker did not finish in 300 s" >&2; exit 1; }
  sleep 0.05
done
worker_ms=$(( $(ms_now) - worker_started ))
worker_rss=$(rss_kb "$WORKER" VmHWM)

python3 - "$ceiling" "$rps" "$total" "$accepted" "$queued" "$p50" "$p99" "$max" "$fixed_rps" "$fixed_p50" "$fixed_p99" \
  "$peak_rss" "$idle_rss" "$WORKER_EVENTS" "$worker_ms" "$ready_ms" "$worker_rss" "$SECONDS_PER_PHASE" "$CONCURRENCY" "$SIZE" \
  "$relay_cpu" "$broker_cpu" "$sender_cpu" "$ticks" <<'PY'
import sys
(ceiling, rps, total, accepted, queued, p50, p99, mx, frps, fp50, fp99, peak, idle, events, wms, ready, wrss, secs, conc, size,
 relay_cpu, broker_cpu, sender_cpu, ticks) = sys.argv[1:]
cpu = lambda t: int(t) / int(ticks)
per_request = lambda t: cpu(t) / max(int(total), 1) * 1e6
worker = int(events) / (int(wms) / 1000)
ideal = 64 / 0.05
rows = [
    ("broker ceiling (confirmed publishes)", f"{float(ceiling):,.0f} msg/s", ""),
    ("receiver throughput", f"{float(rps):,.0f} req/s", f"{float(rps) / float(ceiling):.0%} of the ceiling (target >= 70%)"),
    ("CPU while flat out", f"relay {cpu(relay_cpu):.1f} s, broker {cpu(broker_cpu):.1f} s, sender {cpu(sender_cpu):.1f} s of {2 * int(secs)} s",
     f"relay {per_request(relay_cpu):.0f} µs/request, broker {per_request(broker_cpu):.0f} µs/request"),
    ("receiver latency, flat out", f"p50 {p50} ms, p99 {p99} ms, max {mx} ms", f"{int(total) - int(accepted)} of {total} not 204"),
    ("queue holds every 204", f"{queued} queued / {accepted} accepted", "ok" if queued == accepted else "MISMATCH"),
    ("latency at a fixed rate", f"{float(frps):,.0f} req/s: p50 {fp50} ms, p99 {fp99} ms", "target p99 <= 20 ms"),
    ("receiver RSS", f"peak {int(peak) / 1024:.1f} MB, idle {int(idle) / 1024:.1f} MB", "targets 64 MB / 16 MB"),
    ("worker, API at 50 ms, concurrency 64", f"{worker:,.0f} records/s", f"{worker / ideal:.0%} of the ideal {ideal:,.0f}/s (target >= 90%); peak RSS {int(wrss) / 1024:.1f} MB"),
    ("start-up to /readyz", f"{ready} ms", "target <= 1 s after the broker answers"),
]
print(f"\n{secs} s phases, {conc} connections, {size}-byte events\n")
print("| measure | result | note |\n|---|---|---|")
for name, value, note in rows:
    print(f"| {name} | {value} | {note} |")
PY

# 6. With BENCH_TRACES=1: the receiver with traces off against on (bench/traces.sh).
if [ "${BENCH_TRACES:-0}" = 1 ]; then
  bash bench/traces.sh
fi
