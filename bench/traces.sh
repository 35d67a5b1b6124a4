#!/usr/bin/env bash
# The receiver flat out with traces off and on (BENCHMARKS.md, "Traces"): the same `send` against
# `serve`, alternating off and on so that a noisy machine weighs on both alike.
#
#   bash bench/traces.sh                            # 3 rounds, 10 s each way
#   BENCH_SECONDS=5 BENCH_ROUNDS=2 bash bench/traces.sh
#   BENCH_TRACES=1 bash bench/run.sh                # the whole benchmark, then this
#   BENCH_BASELINE=../main/target/release/polyai-relay bash bench/traces.sh
#                                                   # and a third run each round: an older build
#
# "on" exports every span over OTLP/HTTP to a sink on 127.0.0.1:18318 that reads and discards
# them (a collector that keeps up). It runs in a vhost of its own on the local RabbitMQ (deleted
# at the end), on loopback ports 18080 (admin 19082) and 18318; every loop is bounded in time.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh

SECONDS_PER_RUN=${BENCH_SECONDS:-10}
ROUNDS=${BENCH_ROUNDS:-3}
VHOST="relay-bench-traces-$$"
SINK=127.0.0.1:18318

bench_build bench_broker
make_vhost

# The OTLP sink: answers 200 to every export after reading it; GET / says how much it took.
python3 - "$SINK" <<'PY' 2>/dev/null &
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
host, port = sys.argv[1].split(":")
taken = {"exports": 0, "bytes": 0}
class Sink(BaseHTTPRequestHandler):
    def do_POST(self):
        length = int(self.headers.get("content-length", 0))
        taken["bytes"] += len(self.rfile.read(length))
        taken["exports"] += 1
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()
    def do_GET(self):
        body = f"{taken['exports']} {taken['bytes']}".encode()
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
ThreadingHTTPServer((host, int(port)), Sink).serve_forever()
PY
PIDS+=("$!")
wait_ready "http://$SINK/" 10

# One run: `serve` with traces $1 (off/on), flat out for SECONDS_PER_RUN; prints
# "mode req/s p50 p99 relay-µs-per-request".
run() {
  local mode=$1 otel=() binary=$BIN
  [ "$mode" = on ] && otel=(OTEL_EXPORTER_OTLP_ENDPOINT="http://$SINK")
  [ "$mode" = baseline ] && binary=$BENCH_BASELINE
  env AMQP_URL="$AMQP" POLYAI_WEBHOOK_SECRET=$SECRET RELAY_LISTEN=127.0.0.1:18080 RELAY_ADMIN_LISTEN=127.0.0.1:19082 RELAY_LOG_FORMAT=json \
    RUST_LOG="${RUST_LOG:-info}" "${otel[@]}" "$binary" serve 2>"$WORK/serve-$mode.log" &
  local serve=$!
  PIDS+=("$serve")
  wait_ready http://127.0.0.1:19082/readyz 30
  local cpu0
  cpu0=$(cpu_ticks "$serve")
  "$BIN" send --url http://127.0.0.1:18080/polyai-events --secret $SECRET --duration "${SECONDS_PER_RUN}s" \
    --concurrency "$CONCURRENCY" --body-size "$SIZE" >"$WORK/send.txt" || true
  local cpu total
  cpu=$(( $(cpu_ticks "$serve") - cpu0 ))
  total=$(field 'requests: (\d+)' "$WORK/send.txt")
  kill "$serve"; wait "$serve" 2>/dev/null || true
  "$BROKER" purge "$AMQP" polyai.enrich >/dev/null
  python3 -c 'import sys; m, rps, p50, p99, cpu, total, ticks = sys.argv[1:]; print(m, rps, p50, p99, round(int(cpu) / int(ticks) / max(int(total), 1) * 1e6))' \
    "$mode" "$(field '\(([0-9.]+) req/s\)' "$WORK/send.txt")" "$(field 'p50 ([0-9.]+)' "$WORK/send.txt")" \
    "$(field 'p99 ([0-9.]+)' "$WORK/send.txt")" "$cpu" "$total" "$(getconf CLK_TCK)"
}

for round in $(seq 1 "$ROUNDS"); do
  echo "round $round of $ROUNDS..." >&2
  if [ -n "${BENCH_BASELINE:-}" ]; then run baseline >>"$WORK/runs.txt"; fi
  run off >>"$WORK/runs.txt"
  run on >>"$WORK/runs.txt"
done
sink=$(curl -fs "http://$SINK/")

python3 - "$WORK/runs.txt" "$sink" "$SECONDS_PER_RUN" "$CONCURRENCY" "$SIZE" <<'PY'
import statistics, sys
runs = [line.split() for line in open(sys.argv[1]) if line.strip()]
exports, taken = map(int, sys.argv[2].split())
secs, conc, size = sys.argv[3:]
modes = [m for m in ("baseline", "off", "on") if any(r[0] == m for r in runs)]
print(f"\n{len(runs) // len(modes)} rounds of {secs} s each way, {conc} connections, {size}-byte events\n")
print("| traces | req/s (each run) | median req/s | median p50 / p99 ms | median relay CPU per request |")
print("|---|---|---|---|---|")
for mode in modes:
    rows = [r for r in runs if r[0] == mode]
    rps = [float(r[1]) for r in rows]
    print(f"| {mode} | {', '.join(f'{x:,.0f}' for x in rps)} | {statistics.median(rps):,.0f} | "
          f"{statistics.median(float(r[2]) for r in rows):.1f} / {statistics.median(float(r[3]) for r in rows):.1f} | "
          f"{statistics.median(int(r[4]) for r in rows)} µs |")
print(f"\nthe sink took {exports:,} exports, {taken / 1e6:,.1f} MB of spans")
PY
