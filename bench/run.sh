#!/usr/bin/env bash
# The benchmark of BENCHMARKS.md, in one run on one machine, each figure beside its baseline:
# the release build, the broker's ceiling (lapin alone, flat out and paced), a bare HTTP+verify
# server, the receiver flat out, its latency at a fixed rate (before and right after the flat-out
# phase), alternating rounds of the two parts assembled (the same server publishing as lapin alone
# does), the receiver and the receiver without its per-webhook log line, the receiver and both
# baselines paced at the receiver's flat-out rate, memory, the worker against a 50 ms API, and
# start-up time. CPU per message for every process comes from
# /proc/PID/stat (utime+stime) before and after each phase, or getrusage for the load generators.
#
#   bash bench/run.sh                        # 20 s phases, 64 connections, 600-byte events
#   BENCH_SECONDS=5 bash bench/run.sh        # a quicker look
#   BENCH_CLEAN_BUILD=1 bash bench/run.sh    # also time a clean release build (fresh target dir)
#   BENCH_ROUNDS=5 bash bench/run.sh         # alternating rounds of the relay against its parts (3)
#   BENCH_TRACES=1 bash bench/run.sh         # then traces off against on (bench/traces.sh)
#
# It runs in a vhost of its own on the local RabbitMQ (deleted at the end), on loopback ports
# 18080/18082/18083/18099 (admin listeners on 19080/19081/19082). Every request loop is bounded in time and count.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh

SECONDS_PER_PHASE=${BENCH_SECONDS:-20}
RATE=${BENCH_FIXED_RATE:-1000}
WORKER_EVENTS=${BENCH_WORKER_EVENTS:-10000}
VHOST="relay-bench-$$"
BARE=target/release/examples/bench_http

port_open() { (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null; }
if ! port_open; then
  command -v rabbitmq-server >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rabbitmq-server >/dev/null; }
  rabbitmq-server -detached
  for _ in $(seq 1 120); do port_open && break; sleep 1; done
  timeout 120 rabbitmqctl await_startup >/dev/null
fi

# 0. The build. A clean clone has no target/release: then this first build is the clean one.
# BENCH_CLEAN_BUILD=1 times one into an empty target directory (the registry stays warm).
echo "building (release)..." >&2
if [ "${BENCH_CLEAN_BUILD:-0}" = 1 ]; then
  started=$(ms_now)
  CARGO_TARGET_DIR="$WORK/clean-target" cargo build --release --locked --quiet --bin polyai-relay
  build="clean, fresh target dir: $(( ($(ms_now) - started) / 1000 )) s"
  rm -rf "$WORK/clean-target"
fi
[ -d target/release ] && kind=incremental || kind=clean
started=$(ms_now)
cargo build --release --locked --quiet --bin polyai-relay
build=${build:-"$kind: $(( ($(ms_now) - started) / 1000 )) s"}
cargo build --release --locked --quiet --example bench_broker --example bench_http
binary_mb=$(( $(stat -c %s "$BIN") / 1024 / 1024 ))
make_vhost

rss_kb() { awk -v k="$2" '$1 == k":" { print $2 }' "/proc/$1/status"; }
queue_depth() { "$BROKER" depth "$AMQP" "$1"; }
purge() { "$BROKER" purge "$AMQP" "$1"; }
BEAM=$(pgrep -f 'beam.smp' | head -n 1)
# Runs a command to completion; its CPU seconds (user+system, from getrusage) go to file $1.
measured() {
  local out=$1; shift
  python3 -c 'import resource, subprocess, sys
code = subprocess.run(sys.argv[2:]).returncode
r = resource.getrusage(resource.RUSAGE_CHILDREN)
open(sys.argv[1], "w").write(f"{r.ru_utime + r.ru_stime:.3f}")
sys.exit(code)' "$out" "$@"
}
# CPU seconds of a running process since the mark.
mark() { cpu_ticks "$1"; }
since() { python3 -c "print(f'{($(cpu_ticks "$1") - $2) / $TICK:.3f}')"; }
send() { # output file, then extra `send` arguments
  local out=$1; shift
  measured "$out.cpu" "$BIN" send --url "$URL" --secret $SECRET --concurrency "$CONCURRENCY" --body-size "$SIZE" "$@" >"$out"
}
# A phase, and the broker's CPU seconds during it in file $1.beam.
# Also the broker's CPU second by second in file $1.persec: a phase that starts while the broker
# still works off the one before (BENCHMARKS.md, p99) shows it in its first seconds.
with_broker_cpu() {
  local out=$1 beam0 status=0 sampler
  shift
  cpu_per_second "$BEAM" >"$out.persec" &
  sampler=$!
  beam0=$(mark "$BEAM")
  "$@" || status=$?
  since "$BEAM" "$beam0" >"$out.beam"
  kill "$sampler" 2>/dev/null || true
  wait "$sampler" 2>/dev/null || true
  return "$status"
}
# lapin alone: the receiver's broker work, flat out or paced at a rate (output file, [rate]).
lapin_alone() {
  local out=$1; shift
  measured "$out.cpu" "$BROKER" ceiling "$AMQP" polyai.events conversation.completed "$SIZE" "$CONCURRENCY" \
    "$SECONDS_PER_PHASE" "$@" >"$out"
}

export RELAY_LOG_FORMAT=json RUST_LOG=${RUST_LOG:-info}

# 1. Start-up: process start to /readyz 200 (broker connected, topology declared).
started=$(ms_now)
AMQP_URL="$AMQP" POLYAI_WEBHOOK_SECRET=$SECRET RELAY_LISTEN=127.0.0.1:18080 RELAY_ADMIN_LISTEN=127.0.0.1:19080 "$BIN" serve 2>"$WORK/serve.log" &
SERVE=$!; PIDS+=("$SERVE")
wait_ready http://127.0.0.1:19080/readyz 30
ready_ms=$(( $(ms_now) - started ))
sleep 1
idle_rss=$(rss_kb "$SERVE" VmRSS)
URL=http://127.0.0.1:18080/polyai-events

# 2. Latency at a fixed rate on a fresh queue.
echo "fixed ${RATE} req/s (before)..." >&2
with_broker_cpu "$WORK/fixed1.txt" send "$WORK/fixed1.txt" --duration "${SECONDS_PER_PHASE}s" --rate "$RATE" || true
purge polyai.enrich

# 3. The broker's ceiling for the same work: lapin alone, confirmed persistent mandatory
# publishes of the same size and concurrency, to the same exchange and quorum queue. Around it,
# lapin alone at the fixed rate, as the receiver's phases 2 and 6 run: the confirm latency and
# the broker's CPU the broker itself gives that load, on a fresh queue, right after flat out
# (its messages still queued) and after a purge.
echo "broker ceiling..." >&2
with_broker_cpu "$WORK/lapin_fixed1.txt" lapin_alone "$WORK/lapin_fixed1.txt" "$RATE"
purge polyai.enrich
with_broker_cpu "$WORK/ceiling.txt" lapin_alone "$WORK/ceiling.txt"
ceiling_beam=$(cat "$WORK/ceiling.txt.beam")
with_broker_cpu "$WORK/lapin_fixed2.txt" lapin_alone "$WORK/lapin_fixed2.txt" "$RATE"
purge polyai.enrich
with_broker_cpu "$WORK/lapin_fixed3.txt" lapin_alone "$WORK/lapin_fixed3.txt" "$RATE"
purge polyai.enrich

# 4. The bare HTTP+verify baseline: the relay's verifier behind an axum handler answering 204.
echo "bare HTTP+verify..." >&2
BARE_URL=http://127.0.0.1:18082/polyai-events
# start_http PORT [AMQP EXCHANGE KEY]: examples/bench_http on PORT, its pid in HTTP_PID; ready at
# its first 401 to an unsigned POST.
start_http() {
  "$BARE" "127.0.0.1:$1" $SECRET "${@:2}" &
  HTTP_PID=$!; PIDS+=("$HTTP_PID")
  until [ "$(curl -s -o /dev/null -w '%{http_code}' -X POST "http://127.0.0.1:$1/polyai-events")" = 401 ]; do sleep 0.05; done
}
start_bare() { start_http 18082; BARE_PID=$HTTP_PID; }
start_bare
bare0=$(mark "$BARE_PID")
URL=$BARE_URL send "$WORK/bare.txt" --duration "${SECONDS_PER_PHASE}s"
bare_cpu=$(since "$BARE_PID" "$bare0")
kill "$BARE_PID"

# 5. The receiver flat out, with the CPU each process used (relay, broker, sender share the cores).
echo "receiver throughput..." >&2
relay0=$(mark "$SERVE"); beam0=$(mark "$BEAM")
send "$WORK/max.txt" --duration "${SECONDS_PER_PHASE}s"
relay_cpu=$(since "$SERVE" "$relay0"); relay_beam=$(since "$BEAM" "$beam0")
queued=$(queue_depth polyai.enrich)
peak_rss=$(rss_kb "$SERVE" VmHWM)

# 6. Latency at a fixed rate right after the flat-out phase (its messages still in the queue),
# then again after a purge.
echo "fixed ${RATE} req/s (after)..." >&2
with_broker_cpu "$WORK/fixed2.txt" send "$WORK/fixed2.txt" --duration "${SECONDS_PER_PHASE}s" --rate "$RATE" || true
purge polyai.enrich
with_broker_cpu "$WORK/fixed3.txt" send "$WORK/fixed3.txt" --duration "${SECONDS_PER_PHASE}s" --rate "$RATE" || true
peak_rss=$(rss_kb "$SERVE" VmHWM)
purge polyai.enrich

# 6a. The relay against the two parts put together the plainest way (bench_http publishing as
# lapin alone does, 204 on the ack: what a relay with nothing of its own would cost on the same
# shared cores), and against itself without its per-webhook log line and span (a second `serve`
# with RUST_LOG=warn). In alternating rounds, each the three flat out back to back: one flat-out
# phase moves by 10–15% from run to run on these cores, so the ratios come from the medians.
ROUNDS=${BENCH_ROUNDS:-3}
start_http 18083 "$AMQP" polyai.events conversation.completed
ASSEMBLED_PID=$HTTP_PID
RUST_LOG=warn AMQP_URL="$AMQP" POLYAI_WEBHOOK_SECRET=$SECRET RELAY_LISTEN=127.0.0.1:18081 RELAY_ADMIN_LISTEN=127.0.0.1:19082 \
  "$BIN" serve 2>"$WORK/serve_quiet.log" &
QUIET=$!; PIDS+=("$QUIET")
wait_ready http://127.0.0.1:19082/readyz 30
# flat_out NAME PID URL ROUND: `send` flat out at URL; the server's and the broker's CPU seconds
# go beside its summary in $WORK/NAME.ROUND.txt.server and .beam.
flat_out() {
  local out="$WORK/$1.$4.txt" server0 beam0
  server0=$(mark "$2"); beam0=$(mark "$BEAM")
  URL=$3 send "$out" --duration "${SECONDS_PER_PHASE}s"
  since "$2" "$server0" >"$out.server"
  since "$BEAM" "$beam0" >"$out.beam"
  purge polyai.enrich
}
for round in $(seq 1 "$ROUNDS"); do
  echo "round $round of $ROUNDS: the two parts assembled, the receiver, the receiver with RUST_LOG=warn..." >&2
  flat_out assembled "$ASSEMBLED_PID" http://127.0.0.1:18083/polyai-events "$round"
  flat_out relay "$SERVE" "$URL" "$round"
  flat_out quiet "$QUIET" http://127.0.0.1:18081/polyai-events "$round"
done
kill "$ASSEMBLED_PID" "$QUIET"; wait "$QUIET" 2>/dev/null || true

# 6b. lapin alone paced at the rate the receiver reached flat out: what the broker spends per
# message at that rate when the publishes are lapin's own, against the receiver's phase 5.
relay_rate=$(field '\(([0-9.]+) req/s\)' "$WORK/max.txt")
echo "lapin alone at the receiver's rate (${relay_rate}/s)..." >&2
with_broker_cpu "$WORK/lapin_matched.txt" lapin_alone "$WORK/lapin_matched.txt" "$relay_rate"
purge polyai.enrich

# 6c. The relay and its two parts at one rate, paced: CPU per message falls as a process's rate
# rises (each wake-up, read and write carries more messages), so the parts flat out (phases 3 and
# 4, at several times the relay's rate) cost less per message than at the relay's. The rate is
# three quarters of the relay's flat-out rate: paced, requests arrive spread out and every process
# spends more per message than flat out, so the relay does not hold its full flat-out rate.
paced_rate=$(python3 -c "print(round($relay_rate * 0.75, 1))")
echo "lapin alone, bare HTTP+verify and the receiver, paced at ${paced_rate}/s..." >&2
with_broker_cpu "$WORK/lapin_paced.txt" lapin_alone "$WORK/lapin_paced.txt" "$paced_rate"
purge polyai.enrich
start_bare
bare0=$(mark "$BARE_PID")
URL=$BARE_URL send "$WORK/bare_matched.txt" --duration "${SECONDS_PER_PHASE}s" --rate "$paced_rate"
bare_matched_cpu=$(since "$BARE_PID" "$bare0")
kill "$BARE_PID"
relay0=$(mark "$SERVE")
send "$WORK/relay_matched.txt" --duration "${SECONDS_PER_PHASE}s" --rate "$paced_rate" || true
relay_matched_cpu=$(since "$SERVE" "$relay0")
purge polyai.enrich

# 7. The worker against an API that takes 50 ms per call, at concurrency 64: ideal 64 / 0.05 s.
echo "worker..." >&2
# One event per conversation, each a conversation the mock API knows: every record costs the
# worker one API call, as distinct webhooks would (events of one conversation are not).
"$BIN" mock-api --listen 127.0.0.1:18099 --latency 50ms --conversations "$WORKER_EVENTS" 2>"$WORK/mock.log" &
PIDS+=("$!")
wait_ready http://127.0.0.1:18099/healthz 30
python3 - "$WORKER_EVENTS" >"$WORK/conversations.txt" <<'PY'
import json, sys, urllib.request
wanted, ids = int(sys.argv[1]), []
# The list shows one environment at a time; the by-id route the worker uses serves them all.
for env in ("live", "sandbox", "pre-release"):
    offset = 0
    while offset is not None:
        url = f"http://127.0.0.1:18099/v3/ws-mock/PROJECT-MOCK/conversations?limit=1000&offset={offset}&client_env={env}"
        page = json.load(urllib.request.urlopen(urllib.request.Request(url, headers={"x-api-key": "mock-api-key"})))
        ids += [c["id"] for c in page["conversations"]]
        offset = page.get("next_offset") if page["conversations"] else None
if len(set(ids)) != wanted:
    sys.exit(f"the mock API listed {len(set(ids))} distinct conversations, not {wanted}")
print("\n".join(ids))
PY
"$BROKER" fill "$AMQP" polyai.events conversation.completed "$WORK/conversations.txt"
kill "$SERVE"; wait "$SERVE" 2>/dev/null || true
# The rate is timed from the first record to the last, so that start-up (phase 1 measures it)
# does not count against the API's pace; the time from start to the last record is shown too.
worker_started=$(ms_now)
AMQP_URL="$AMQP" POLYAI_API_KEY=mock-api-key POLYAI_BASE_URL=http://127.0.0.1:18099 \
  POLYAI_ACCOUNT_ID=ws-mock POLYAI_PROJECT_ID=PROJECT-MOCK RELAY_API_CONCURRENCY=64 RELAY_ADMIN_LISTEN=127.0.0.1:19081 \
  "$BIN" work 2>"$WORK/work.log" &
WORKER=$!; PIDS+=("$WORKER")
python3 - "$WORKER_EVENTS" "$worker_started" >"$WORK/worker.txt" <<'PY'
import re, sys, time, urllib.request
wanted, started = int(sys.argv[1]), int(sys.argv[2]) / 1000
def counts():
    """Records published, and API fetches answered 200, from the worker's /metrics."""
    try:
        text = urllib.request.urlopen("http://127.0.0.1:19081/metrics", timeout=2).read().decode()
    except OSError:
        return 0, 0
    total = lambda pattern: int(sum(float(v) for v in re.findall(pattern, text, re.M)))
    return (total(r'^relay_enriched_total(?:\{[^}]*\})? (\S+)$'),
            total(r'^relay_api_fetches_total\{[^}]*status="200"[^}]*\} (\S+)$'))
first = None
while True:
    now = time.time()
    enriched, fetched = counts()
    if enriched and first is None:
        first = (now, enriched)
    if enriched >= wanted:
        break
    if now - started > 300:
        sys.exit("the worker did not finish in 300 s")
    time.sleep(0.005)
print(f"records: {enriched}\nfetches: {fetched}\nfirst_record_s: {first[0] - started:.3f}\n"
      f"records_at_first: {first[1]}\nlast_record_s: {now - started:.3f}")
PY
worker_rss=$(rss_kb "$WORKER" VmHWM)

export WORK SECONDS_PER_PHASE CONCURRENCY SIZE RATE WORKER_EVENTS build binary_mb ready_ms idle_rss peak_rss \
  queued ceiling_beam bare_cpu ROUNDS relay_cpu relay_beam worker_rss paced_rate bare_matched_cpu relay_matched_cpu
python3 bench/report.py

# With BENCH_TRACES=1: the receiver with traces off against on (bench/traces.sh).
if [ "${BENCH_TRACES:-0}" = 1 ]; then
  bash bench/traces.sh
fi
