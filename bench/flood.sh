#!/usr/bin/env bash
# The connection-flood benchmark of BENCHMARKS.md ("The public edge under a connection flood"),
# in two parts, each phase on a fresh release relay (its RSS peak is its own):
#
# 1. What one connection costs: 2,000 flood sockets of each kind under a cap above them (no
#    eviction), no webhooks; (RSS peak - RSS before) / sockets.
# 2. The flood: 10,000 sockets of each kind against the default settings, while a signed webhook
#    is posted every 200 ms on a fresh connection (examples/bench_flood.rs); the webhooks'
#    statuses and latencies, the relay's RSS peak, and the connections it evicted.
#
#   bash bench/flood.sh                          # 10,000 sockets, 30 s per flood phase (about 6 minutes)
#   FLOOD_SOCKETS=2000 FLOOD_SECONDS=10 bash bench/flood.sh
#   # other relay settings on top, some kinds only, no cost part:
#   FLOOD_ENV="RELAY_MAX_CONNECTIONS=4096 RELAY_MAX_HEADER_BYTES=64KiB" FLOOD_MODES="trickle full-head" \
#     FLOOD_COST_SOCKETS=0 bash bench/flood.sh
#
# Loopback only (127.0.0.1:18180, admin 127.0.0.1:18190), the embedded queue in a temporary
# directory, bounded in sockets and time. The flood needs file descriptors: the relay gets
# `ulimit -n` 16,384, the flooder sockets + 1024; a hard limit (`ulimit -Hn`) under 16,384 needs
# raising as root.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh

SOCKETS=${FLOOD_SOCKETS:-10000}
SECONDS_PER_PHASE=${FLOOD_SECONDS:-30}
COST_SOCKETS=${FLOOD_COST_SOCKETS:-2000}
read -r -a MODES <<<"${FLOOD_MODES:-silent trickle idle oversized full-head}"
# Settings on top of the defaults for every phase, e.g. "RELAY_MAX_CONNECTIONS=2048 RELAY_MAX_HEADER_BYTES=8KiB".
read -r -a EXTRA_ENV <<<"${FLOOD_ENV:-}"
SECRET=whsec_flood

bench_build bench_flood

# The relay's setting `$1` as this phase runs it (the last assignment among the rest of the
# arguments, else the default from --help).
setting() {
  local name=$1 assignment value=""
  shift
  for assignment in "$@"; do
    case $assignment in "$name="*) value=${assignment#*=} ;; esac
  done
  [ -n "$value" ] && { echo "$value"; return; }
  "$BIN" serve --help | sed -n "s/.*\[env: $name=[^]]*\] \[default: \([^]]*\)\].*/\1/p; s/.*\[default: \([^]]*\)\] \[env: $name=.*/\1/p" | head -1
}

# Handshakes the kernel dropped because a listen queue was full, machine-wide (TcpExt ListenDrops).
listen_drops() {
  awk '/^TcpExt:/ { if (!n) { for (i = 1; i <= NF; i++) col[$i] = i; n = 1 } else print $col["ListenDrops"] }' /proc/net/netstat
}

# One phase: `phase <part> <sockets> <mode> <webhooks: yes|no> [VAR=value...]` (settings on top):
# the flood in the background, the webhooks (if any) from another process meanwhile.
phase() {
  local part=$1 sockets=$2 mode=$3 send=$4
  shift 4
  local env=("${EXTRA_ENV[@]}" "$@")
  local cap header_cap
  cap=$(setting RELAY_MAX_CONNECTIONS "${env[@]}")
  header_cap=$(setting RELAY_MAX_HEADER_BYTES "${env[@]}")
  # full-head: 1 KiB under the header cap (the most a connection can make the relay buffer).
  local head_bytes
  head_bytes=$(python3 -c "import re,sys; n,u=re.fullmatch(r'(\d+)\s*(\w*)', sys.argv[1]).groups(); print(int(n)*{'':1,'B':1,'KiB':1024,'MiB':1<<20}[u]-1024)" "$header_cap")
  rm -rf "$WORK/data"
  (
    ulimit -n 16384
    exec env -i PATH="$PATH" RELAY_DATA_DIR="$WORK/data" POLYAI_WEBHOOK_SECRET=$SECRET \
      RELAY_LISTEN=127.0.0.1:18180 RELAY_ADMIN_LISTEN=127.0.0.1:18190 "${env[@]}" \
      RELAY_LOG_FORMAT=json RUST_LOG=warn "$BIN" serve
  ) 2>"$WORK/relay.log" &
  RELAY=$!
  PIDS+=("$RELAY")
  wait_ready http://127.0.0.1:18190/readyz 30 || { echo "the relay's log:" >&2; cat "$WORK"/relay.log >&2; exit 1; }
  local seconds=$SECONDS_PER_PHASE
  [ "$part" = cost ] && seconds=$(( SECONDS_PER_PHASE < 10 ? SECONDS_PER_PHASE : 10 ))
  echo "$part: $sockets $mode sockets for ${seconds}s, RELAY_MAX_CONNECTIONS=$cap RELAY_MAX_HEADER_BYTES=$header_cap" >&2
  local drops_before
  drops_before=$(listen_drops)
  (
    ulimit -n $(( sockets + 1024 ))
    exec target/release/examples/bench_flood 18180 "$RELAY" $SECRET "$sockets" "$seconds" "$mode" "$head_bytes"
  ) >"$WORK/flood.json" &
  local flood=$!
  echo '{}' >"$WORK/webhooks.json"
  if [ "$send" = yes ]; then
    # From a process of its own, as PolyAI's deliveries come from elsewhere.
    target/release/examples/bench_flood 18180 "$RELAY" $SECRET 0 "$seconds" webhooks >"$WORK/webhooks.json"
  fi
  wait "$flood"
  local drops=$(( $(listen_drops) - drops_before ))
  curl -fs http://127.0.0.1:18190/metrics >"$WORK/metrics.txt"
  python3 - "$WORK/flood.json" "$WORK/webhooks.json" "$part" "$cap" "$header_cap" "$WORK/metrics.txt" "$drops" <<'PY' >>"$WORK/results.jsonl"
import json, re, sys
r = {**json.load(open(sys.argv[1])), **json.load(open(sys.argv[2]))}
evicted = {}
for line in open(sys.argv[6]):
    m = re.match(r'relay_connections_evicted_total\{listener="webhooks",phase="(\w+)"\} (\S+)', line)
    if m:
        evicted[m[1]] = int(float(m[2]))
r.update(part=sys.argv[3], max_connections=sys.argv[4], max_header_bytes=sys.argv[5], evicted=evicted,
         listen_drops=int(sys.argv[7]))
print(json.dumps(r))
PY
  kill "$RELAY"; wait "$RELAY" 2>/dev/null || true
}

for mode in "${MODES[@]}"; do
  [ "$COST_SOCKETS" -gt 0 ] && [ "$mode" != oversized ] || continue
  phase cost "$COST_SOCKETS" "$mode" no RELAY_MAX_CONNECTIONS=$(( COST_SOCKETS * 2 ))
done
for mode in "${MODES[@]}"; do
  phase flood "$SOCKETS" "$mode" yes
done

python3 - "$WORK/results.jsonl" <<'PY'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
costs = [r for r in rows if r["part"] == "cost"]
if costs:
    print("\nWhat one connection costs (no eviction, no webhooks):\n")
    print("| flood | RELAY_MAX_HEADER_BYTES | connected at once | relay RSS before / peak | per connection |")
    print("|---|---|---|---|---|")
for r in costs:
    per = (r["rss_peak_kb"] - r["rss_start_kb"]) / max(r["max_open"], 1)
    print(f"| {r['sockets']:,} {r['mode']} | {r['max_header_bytes']} | {r['max_open']:,} | "
          f"{r['rss_start_kb'] / 1024:.1f} / {r['rss_peak_kb'] / 1024:.1f} MB | {per:.1f} KB |")
print("\nThe flood, signed webhooks through it:\n")
print("| flood | RELAY_MAX_CONNECTIONS / _HEADER_BYTES | connections opened (most at once) | evicted | handshakes dropped by the kernel | signed webhooks 204 | webhook latency p50 / p99 / max | relay RSS peak / end |")
print("|---|---|---|---|---|---|---|---|")
for r in (r for r in rows if r["part"] == "flood"):
    lat = r["latency_ms"]
    others = {k: v for k, v in r["statuses"].items() if k != "204"}
    print(f"| {r['sockets']:,} {r['mode']}, {r['seconds']:.0f} s | {r['max_connections']} / {r['max_header_bytes']} | "
          f"{r['opened']:,} ({r['max_open']:,}) | {sum(r['evicted'].values()):,} "
          f"{json.dumps(r['evicted']) if r['evicted'] else ''} | {r['listen_drops']:,} | "
          f"{r['answered_204']} of {r['webhooks']}{' ' + json.dumps(others) if others else ''} | "
          f"{lat['p50']} / {lat['p99']} / {lat['max']} ms | "
          f"{r['rss_peak_kb'] / 1024:.1f} / {r['rss_end_kb'] / 1024:.1f} MB |")
PY
