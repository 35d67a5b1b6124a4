#!/usr/bin/env bash
# Where the relay's CPU goes natively, flat out, beside the two parts assembled (BENCHMARKS.md):
#
#   bash bench/sample.sh                              # 2 rounds of 40,000 webhooks, 64 connections
#   SAMPLE_COUNT=20000 SAMPLE_ROUNDS=3 bash bench/sample.sh
#
# Runs the release relay (`serve`, JSON log lines to a file) and the two parts assembled
# (examples/bench_http publishing as lapin alone does), sends each the same number of signed
# webhooks flat out with `polyai-relay send`, in alternating rounds, under `perf record` on the
# cpu-clock software event (it works where the hardware counters are not exposed). Each process's
# samples are then grouped by what they belong to (the kernel's scheduling, its network stack,
# the allocator, tracing, lapin, hyper, ...) in µs of CPU per webhook, side by side. Self time, after
# inlining: a function inlined into another counts as its caller. Callgrind's instruction counts
# (bench/profile.sh) say what each part executes; these say what it costs on the machine, cache
# misses, wake-ups and the kernel included. Profiles stay in bench/profiles/ for `perf report`.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh

COUNT=${SAMPLE_COUNT:-40000}
ROUNDS=${SAMPLE_ROUNDS:-2}
# Samples per second of CPU: a few thousand per round and process at the default.
HZ=${SAMPLE_HZ:-4999}
VHOST="relay-sample-$$"
OUT=bench/profiles
mkdir -p "$OUT"

perf record -q -e cpu-clock -o /dev/null true 2>/dev/null || { echo "needs perf with the cpu-clock event (apt-get install linux-perf)" >&2; exit 1; }
bench_build bench_http
make_vhost

send() { "$BIN" send --url "$1" --secret $SECRET --count "$2" --concurrency "$CONCURRENCY" --body-size "$SIZE"; }

export AMQP_URL="$AMQP" POLYAI_WEBHOOK_SECRET=$SECRET RELAY_LISTEN=127.0.0.1:18090 RELAY_ADMIN_LISTEN=127.0.0.1:19090 RELAY_LOG_FORMAT=json RUST_LOG=${RUST_LOG:-info}
"$BIN" serve 2>"$WORK/relay.log" &
RELAY=$!; PIDS+=("$RELAY")
wait_ready http://127.0.0.1:19090/readyz 60
target/release/examples/bench_http 127.0.0.1:18093 $SECRET "$AMQP" polyai.events conversation.completed 2>"$WORK/assembled.log" &
ASSEMBLED=$!; PIDS+=("$ASSEMBLED")
# It answers only the webhook path, so its readiness is the first 401 to an unsigned POST.
until [ "$(curl -s -o /dev/null -w '%{http_code}' -X POST http://127.0.0.1:18093/polyai-events)" = 401 ]; do sleep 0.2; done
# Warm-up: connections, pools, lazy statics.
send http://127.0.0.1:18090/polyai-events 2000 >/dev/null
send http://127.0.0.1:18093/polyai-events 2000 >/dev/null

# sampled NAME PID PORT ROUND: perf record of PID while $COUNT webhooks go to PORT.
sampled() {
  local name=$1 pid=$2 port=$3 round=$4 data="$OUT/$1.sample.$4.data"
  perf record -q -F "$HZ" -e cpu-clock -p "$pid" -o "$data" 2>/dev/null &
  local perf=$!
  # perf attaches to each thread before it samples; its first samples would otherwise miss the start.
  wait_until "perf attached to $name" 30 test -s "$data"
  local before; before=$(cpu_ticks "$pid")
  send "http://127.0.0.1:$port/polyai-events" "$COUNT" >"$OUT/$name.sample.$round.send.txt"
  local after; after=$(cpu_ticks "$pid")
  kill -INT "$perf"; wait "$perf" 2>/dev/null || true
  echo "round $round, $name: $(( (after - before) * 1000000 / TICK / COUNT )) µs CPU per webhook (/proc), $(field '([0-9.]+) req/s' "$OUT/$name.sample.$round.send.txt") req/s"
}
for round in $(seq 1 "$ROUNDS"); do
  sampled relay "$RELAY" 18090 "$round"
  sampled assembled "$ASSEMBLED" 18093 "$round"
done

python3 - "$OUT" "$COUNT" "$ROUNDS" "$HZ" <<'PY'
import collections, re, subprocess, sys

out, count, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
HZ = int(sys.argv[4])
# First match wins: the relay's telemetry and verifier count as tracing and HMAC, not as its own.
GROUPS = [
    ("kernel: scheduling, wake-ups", r"\[k\] .*(finish_task_switch|schedule|_raw_spin_unlock_irq|wake_up|futex|ttwu|enqueue_|dequeue_|pick_next|update_curr|irqentry_exit|select_task|idle|do_epoll|ep_poll)"),
    ("kernel: network", r"\[k\] .*(tcp|ip_|inet|net_|sock|skb|dev_|loopback|softirq|napi|sk_|__x64_sys_send|__x64_sys_recv)"),
    ("kernel: file writes (the log)", r"\[k\] .*(ext4|vfs_write|generic_perform_write|filemap|folio|pipe_write|jbd2|block_)"),
    ("kernel: other", r"\[k\] "),
    ("allocator (mimalloc)", r"\b_?mi_"),
    ("memcpy, memcmp, memset", r"\b__mem|\bmem(cpy|move|set|cmp|chr)"),
    ("tracing: spans, log lines", r"tracing|sharded_slab|polyai_relay::telemetry"),
    ("JSON", r"serde_json|zmij|ryu|itoa"),
    ("HMAC, SHA-256", r"sha2|hmac|polyai_relay::signature"),
    ("lapin", r"lapin|amq_protocol|async_rs|tcp_stream|event_listener"),
    ("hyper, http", r"hyper|httparse|\bhttp::"),
    ("axum, tower", r"axum|tower"),
    ("tokio", r"tokio"),
    ("metrics", r"metrics"),
    ("clock reads", r"vdso|clock_gettime|Timespec"),
    ("hash maps, B-trees", r"hashbrown|btree"),
    ("the relay's own code", r"polyai_relay"),
    ("other", r""),
]

def grouped(path):
    report = subprocess.run(
        ["perf", "report", "-i", path, "--stdio", "--no-children", "-n", "--sort", "dso,sym", "--percent-limit", "0"],
        capture_output=True, text=True, check=True,
    ).stdout
    groups = collections.Counter()
    for line in report.splitlines():
        m = re.match(r"\s+[\d.]+%\s+(\d+)\s+(.*)$", line)
        if m:
            name = next(name for name, pattern in GROUPS if re.search(pattern, m.group(2)))
            groups[name] += int(m.group(1))
    return groups

per_webhook = lambda samples: samples / HZ * 1e6 / (count * rounds)
relay, assembled = collections.Counter(), collections.Counter()
for round in range(1, rounds + 1):
    relay += grouped(f"{out}/relay.sample.{round}.data")
    assembled += grouped(f"{out}/assembled.sample.{round}.data")
print(f"\nµs of CPU per webhook, sampled ({rounds} × {count:,} webhooks each):")
print(f"| {'':32} | relay | assembled | relay − assembled |")
print("|---|---|---|---|")
for name, _ in GROUPS:
    r, a = per_webhook(relay[name]), per_webhook(assembled[name])
    print(f"| {name:32} | {r:.1f} | {a:.1f} | {r - a:+.1f} |")
r, a = per_webhook(sum(relay.values())), per_webhook(sum(assembled.values()))
print(f"| {'all':32} | {r:.1f} | {a:.1f} | {r - a:+.1f} |")
PY
