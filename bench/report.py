"""The table of bench/run.sh: each figure, its baseline from the same run, and its target.

Reads the phases' outputs from $WORK and the other figures from the environment.
"""

import os
import re
import statistics

env = os.environ
work = env["WORK"]


def text(name):
    with open(os.path.join(work, name)) as f:
        return f.read()


def number(pattern, name, default=0.0):
    m = re.search(pattern, text(name))
    return float(m.group(1)) if m else default


def sent(name):
    """A `polyai-relay send` summary: requests, req/s, 204s, p50/p99/max, the sender's CPU seconds."""
    return {
        "requests": number(r"requests: (\d+)", name),
        "rps": number(r"\(([0-9.]+) req/s\)", name),
        "ok": number(r"204: (\d+)", name),
        "p50": number(r"p50 ([0-9.]+)", name),
        "p99": number(r"p99 ([0-9.]+)", name),
        "max": number(r"max ([0-9.]+)", name),
        "cpu": float(text(name + ".cpu")),
    }


def lapin(name):
    """A `bench_broker ceiling` summary: confirmed messages, msg/s, confirm latency, broker CPU."""
    return {
        "messages": number(r"confirmed: (\d+)", name),
        "rate": number(r"\(([0-9.]+) msg/s\)", name),
        "p50": number(r"p50 ([0-9.]+)", name),
        "p99": number(r"p99 ([0-9.]+)", name),
        "max": number(r"max ([0-9.]+)", name),
        "broker": float(text(name + ".beam")),
    }


def first_seconds(name, count=5):
    """The broker's CPU in each of a phase's first seconds: a phase that starts while the broker
    still works off the one before shows 100% and more there."""
    seconds = text(name + ".persec").split()[:count]
    return f"its first {len(seconds)} s at {'/'.join(seconds)}% CPU"


def us(seconds, count):
    return seconds / max(count, 1) * 1e6


def verdict(ok):
    return "met" if ok else "**not met**"


secs, conc, size, rate = env["SECONDS_PER_PHASE"], env["CONCURRENCY"], env["SIZE"], float(env["RATE"])
ceiling_msgs = number(r"confirmed: (\d+)", "ceiling.txt")
ceiling_rate = number(r"\(([0-9.]+) msg/s\)", "ceiling.txt")
lapin_us = us(float(text("ceiling.txt.cpu")), ceiling_msgs)
ceiling_broker_us = us(float(env["ceiling_beam"]), ceiling_msgs)
bare = sent("bare.txt")
bare_us = us(float(env["bare_cpu"]), bare["requests"])


def rounds(name):
    """The alternating flat-out rounds of one server: each round's req/s, server and broker µs."""
    runs = []
    for r in range(1, int(env["ROUNDS"]) + 1):
        run = sent(f"{name}.{r}.txt")
        run["us"] = us(float(text(f"{name}.{r}.txt.server")), run["requests"])
        run["broker"] = us(float(text(f"{name}.{r}.txt.beam")), run["ok"])
        runs.append(run)
    return runs


def median(runs, key):
    return statistics.median(run[key] for run in runs)


def each(values):
    return ", ".join(f"{v:.2f}" for v in values)


assembled, own, quiet = rounds("assembled"), rounds("relay"), rounds("quiet")
assembled_us, own_us, quiet_us = median(assembled, "us"), median(own, "us"), median(quiet, "us")
assembled_rps, own_rps, quiet_rps = median(assembled, "rps"), median(own, "rps"), median(quiet, "rps")
relay = sent("max.txt")
relay_us = us(float(env["relay_cpu"]), relay["requests"])
relay_broker_us = us(float(env["relay_beam"]), relay["ok"])
parts = bare_us + lapin_us
sender_us = us(relay["cpu"], relay["requests"])
ceiling_cost = lapin_us + ceiling_broker_us
fixed = [sent(f"fixed{i}.txt") for i in (1, 2, 3)]
fixed_broker = [float(text(f"fixed{i}.txt.beam")) for i in (1, 2, 3)]
lapin_fixed = [lapin(f"lapin_fixed{i}.txt") for i in (1, 2, 3)]
matched = lapin("lapin_matched.txt")
matched_broker_us = us(matched["broker"], matched["messages"])
# The relay and its two parts paced at three quarters of the relay's flat-out rate (phase 6c).
paced = lapin("lapin_paced.txt")
lapin_matched_us = us(float(text("lapin_paced.txt.cpu")), paced["messages"])
bare_matched = sent("bare_matched.txt")
bare_matched_us = us(float(env["bare_matched_cpu"]), bare_matched["requests"])
relay_matched = sent("relay_matched.txt")
relay_matched_us = us(float(env["relay_matched_cpu"]), relay_matched["requests"])
parts_matched = bare_matched_us + lapin_matched_us
idle_mb, peak_mb = int(env["idle_rss"]) / 1024, int(env["peak_rss"]) / 1024
worker_records = number(r"records: (\d+)", "worker.txt")
worker_fetches = number(r"fetches: (\d+)", "worker.txt")
worker_first_s = number(r"first_record_s: ([0-9.]+)", "worker.txt")
worker_last_s = number(r"last_record_s: ([0-9.]+)", "worker.txt")
# From the first record to the last: the API's pace, not start-up (timed on its own below).
worker = (worker_records - number(r"records_at_first: (\d+)", "worker.txt")) / max(worker_last_s - worker_first_s, 1e-3)
ideal = 64 / 0.05
build_s = float(re.search(r"(\d+) s", env["build"]).group(1))
queued = int(env["queued"])

rows = [
    ("broker ceiling: lapin alone, confirmed", f"{ceiling_rate:,.0f} msg/s",
     f"client {lapin_us:.1f} µs/msg, broker {ceiling_broker_us:.1f} µs/msg", ""),
    ("bare HTTP+verify (axum, no broker)", f"{bare['rps']:,.0f} req/s",
     f"server {bare_us:.1f} µs/req, sender {us(bare['cpu'], bare['requests']):.1f} µs/req", ""),
    ("the two parts assembled: bare HTTP+verify then lapin's confirmed publish, nothing else",
     f"{assembled_rps:,.0f} req/s = {assembled_rps / ceiling_rate:.0%} of the ceiling",
     f"medians of {len(assembled)} alternating rounds: server {assembled_us:.1f} µs/webhook = "
     f"{assembled_us / parts:.2f} × (bare {bare_us:.1f} + lapin {lapin_us:.1f}); broker {median(assembled, 'broker'):.1f} µs/msg; "
     f"{sum(run['requests'] - run['ok'] for run in assembled):.0f} not 204", ""),
    ("receiver flat out", f"{relay['rps']:,.0f} req/s = {relay['rps'] / ceiling_rate:.0%} of the ceiling",
     f"CPU per webhook on the shared cores: sender {sender_us:.1f} + relay {relay_us:.1f} + broker {relay_broker_us:.1f} µs, "
     f"against the ceiling's lapin {lapin_us:.1f} + broker {ceiling_broker_us:.1f}. The sender and the HTTP+verify part, "
     f"which the ceiling does not run, bound the ratio at {ceiling_cost / (ceiling_cost + sender_us + bare_us):.0%} "
     f"(the relay at exactly its two parts, the broker at the ceiling's cost)",
     f"≥ 85%: {verdict(relay['rps'] >= 0.85 * ceiling_rate)}"),
    ("relay CPU per webhook, each flat out", f"{relay_us:.1f} µs = {relay_us / parts:.2f} × (bare {bare_us:.1f} + lapin {lapin_us:.1f})",
     f"the relay at {relay['rps']:,.0f} req/s, bare at {bare['rps']:,.0f}, lapin at {ceiling_rate:,.0f}",
     f"≤ 1.3 ×: {verdict(relay_us <= 1.3 * parts)}"),
    ("the relay's own cost: against the two parts assembled, flat out",
     f"CPU per webhook {own_us / assembled_us:.2f} ×, throughput {own_rps / assembled_rps:.0%}",
     f"medians of the same rounds: relay {own_us:.1f} against {assembled_us:.1f} µs, {own_rps:,.0f} req/s "
     f"= {own_rps / ceiling_rate:.0%} of the ceiling; round by round "
     f"{each(o['us'] / a['us'] for o, a in zip(own, assembled))} ×. What parsing, the duplicate check, the "
     f"deadline, logs, spans and metrics add", ""),
    ("the same with RUST_LOG=warn: no per-webhook log line or span",
     f"CPU per webhook {quiet_us / assembled_us:.2f} ×, throughput {quiet_rps / assembled_rps:.0%}",
     f"medians: relay {quiet_us:.1f} µs = {quiet_us / parts:.2f} × the parts, {quiet_rps:,.0f} req/s = "
     f"{quiet_rps / ceiling_rate:.0%} of the ceiling; round by round {each(q['us'] / a['us'] for q, a in zip(quiet, assembled))} ×", ""),
    ("relay CPU per webhook, all paced at ¾ of the relay's flat-out rate",
     f"{relay_matched_us:.1f} µs = {relay_matched_us / parts_matched:.2f} × (bare {bare_matched_us:.1f} + lapin {lapin_matched_us:.1f})",
     f"paced at {float(env['paced_rate']):,.0f}/s: the relay reached {relay_matched['rps']:,.0f} req/s "
     f"({relay_matched['requests'] - relay_matched['ok']:.0f} not 204), bare {bare_matched['rps']:,.0f}, lapin {paced['rate']:,.0f} msg/s",
     f"≤ 1.3 ×: {verdict(relay_matched_us <= 1.3 * parts_matched)}"),
    ("broker CPU per message, relay publishing", f"{relay_broker_us:.1f} µs = {relay_broker_us / ceiling_broker_us:.2f} × the ceiling's",
     f"the ceiling at {ceiling_rate:,.0f} msg/s", f"≤ 1.1 ×: {verdict(relay_broker_us <= 1.1 * ceiling_broker_us)}"),
    ("the same, against lapin alone at the relay's rate", f"{relay_broker_us / matched_broker_us:.2f} × ({relay_broker_us:.1f} against {matched_broker_us:.1f} µs)",
     f"lapin alone paced at {matched['rate']:,.0f} msg/s", f"≤ 1.1 ×: {verdict(relay_broker_us <= 1.1 * matched_broker_us)}"),
    ("receiver latency, flat out", f"p50 {relay['p50']:.1f} ms, p99 {relay['p99']:.1f} ms, max {relay['max']:.0f} ms",
     f"{relay['requests'] - relay['ok']:.0f} of {relay['requests']:.0f} not 204", ""),
    ("queue holds every 204", f"{queued} queued / {relay['ok']:.0f} accepted", "exact passive declare",
     "ok" if queued == relay["ok"] else "**MISMATCH**"),
]
for i, (label, run, broker_s, alone) in enumerate(zip(("fresh queue", "right after flat out", "after a purge"), fixed, fixed_broker, lapin_fixed), 1):
    rows.append((f"p99 at {rate:,.0f} req/s, {label}", f"{run['p99']:.1f} ms (p50 {run['p50']:.1f}, max {run['max']:.0f})",
                 f"{run['rps']:,.0f} req/s, {run['requests'] - run['ok']:.0f} not 204; broker {us(broker_s, run['ok']):.0f} µs/msg, "
                 f"{first_seconds(f'fixed{i}.txt')}. "
                 f"lapin alone, same rate and phase: confirm p99 {alone['p99']:.1f} ms (p50 {alone['p50']:.1f}, max {alone['max']:.0f}), "
                 f"broker {us(alone['broker'], alone['messages']):.0f} µs/msg, {first_seconds(f'lapin_fixed{i}.txt')}",
                 f"≤ 10 ms: {verdict(run['p99'] <= 10)}"))
rows += [
    ("receiver RSS idle / peak", f"{idle_mb:.1f} / {peak_mb:.1f} MB", "",
     f"≤ 12 / 32 MB: {verdict(idle_mb <= 12 and peak_mb <= 32)}"),
    ("worker, API at 50 ms, concurrency 64", f"{worker:,.0f} records/s = {worker / ideal:.0%} of {ideal:,.0f}/s",
     f"{worker_records:,.0f} records, {worker_fetches:,.0f} API fetches; first record {worker_first_s:.2f} s, "
     f"last {worker_last_s:.2f} s after start; peak RSS {int(env['worker_rss']) / 1024:.1f} MB",
     f"≥ 95%: {verdict(worker >= 0.95 * ideal)}" if worker_fetches >= worker_records else "**invalid**: fewer fetches than records"),
    ("release build", env["build"], f"binary {env['binary_mb']} MB",
     f"≤ 150 s clean: {verdict(build_s <= 150)}" if "clean" in env["build"] else "clean build not timed"),
    ("start-up to /readyz", f"{env['ready_ms']} ms", "", ""),
]
print(f"\n{secs} s phases, {conc} connections, {size}-byte events\n")
print("| measure | result | baseline / note | target |\n|---|---|---|---|")
for row in rows:
    print("| " + " | ".join(row) + " |")
