"""A connection flood against a relay on loopback, with signed webhooks sent through it.

    python3 bench/flood.py --port 18180 --pid PID --secret S [--sockets 10000] [--seconds 30] [--mode silent]

Keeps `--sockets` connections open to the webhook port for `--seconds` (one reopened whenever the
relay closes one), each silent (`silent`) or sending its headers one byte a second (`trickle`).
Meanwhile it posts one signed webhook every 200 ms on a fresh connection and records its status
and latency. Prints one JSON line: the webhooks' statuses and latencies, the most sockets held
at once, and the relay's RSS (peak and at the end) read from /proc/PID/status.

Loopback only, bounded in sockets and time: it refuses any other address.
"""

import argparse
import asyncio
import hashlib
import hmac
import json
import time

HOST = "127.0.0.1"


def rss_kb(pid, field):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


async def hold(port, mode, deadline, stats):
    """One attacking socket, reopened until the deadline whenever the relay closes it."""
    while time.monotonic() < deadline:
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, port), timeout=5)
        except (OSError, asyncio.TimeoutError):
            stats["connect_failures"] += 1
            await asyncio.sleep(0.5)
            continue
        stats["open"] += 1
        stats["max_open"] = max(stats["max_open"], stats["open"])
        stats["opened"] += 1
        try:
            head = b"POST /polyai-events HTTP/1.1\r\nhost: relay\r\nx-slow: "
            sent = 0
            while time.monotonic() < deadline:
                if mode == "trickle":
                    writer.write(head[sent:sent + 1] if sent < len(head) else b"a")
                    sent += 1
                    await writer.drain()
                # The relay closing the socket ends the read; otherwise wake up each second.
                try:
                    data = await asyncio.wait_for(reader.read(1024), timeout=1)
                    if not data:
                        break
                except asyncio.TimeoutError:
                    pass
        except OSError:
            pass
        finally:
            stats["open"] -= 1
            writer.close()


async def signed_webhook(port, secret, number):
    body = json.dumps({"type": "conversation.completed",
                       "data": {"conversation_id": f"CAflood{number}", "environment": "live"}}).encode()
    timestamp = str(int(time.time()))
    signature = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    request = (f"POST /polyai-events HTTP/1.1\r\nhost: relay\r\ncontent-type: application/json\r\n"
               f"x-polyai-timestamp: {timestamp}\r\nx-polyai-signature: {signature}\r\n"
               f"x-polyai-event-id: flood-{number}\r\ncontent-length: {len(body)}\r\nconnection: close\r\n\r\n").encode() + body
    started = time.monotonic()
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, port), timeout=30)
        writer.write(request)
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), timeout=30)
        writer.close()
        status = int(line.split()[1]) if line.startswith(b"HTTP/1.1 ") else 0
    except (OSError, asyncio.TimeoutError, ValueError, IndexError):
        status = 0
    return status, (time.monotonic() - started) * 1000


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--pid", type=int, required=True)
    parser.add_argument("--secret", required=True)
    parser.add_argument("--sockets", type=int, default=10000)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--mode", choices=["silent", "trickle"], default="silent")
    args = parser.parse_args()
    if args.sockets > 20000 or args.seconds > 300:
        raise SystemExit("bounded: at most 20,000 sockets for 300 s")

    stats = {"open": 0, "max_open": 0, "opened": 0, "connect_failures": 0}
    deadline = time.monotonic() + args.seconds
    attackers = [asyncio.create_task(hold(args.port, args.mode, deadline, stats)) for _ in range(args.sockets)]
    # Let the flood build before the first webhook.
    await asyncio.sleep(min(5, args.seconds / 4))
    webhooks, number = [], 0
    peak_rss = 0
    while time.monotonic() < deadline - 1:
        webhooks.append(asyncio.create_task(signed_webhook(args.port, args.secret, number)))
        number += 1
        peak_rss = max(peak_rss, rss_kb(args.pid, "VmRSS"))
        await asyncio.sleep(0.2)
    results = await asyncio.gather(*webhooks)
    await asyncio.gather(*attackers)
    latencies = sorted(ms for status, ms in results if status == 204)
    pick = lambda q: round(latencies[min(len(latencies) - 1, int(q * len(latencies)))]) if latencies else None
    print(json.dumps({
        "mode": args.mode, "sockets": args.sockets, "seconds": args.seconds,
        "max_open": stats["max_open"], "opened": stats["opened"], "connect_failures": stats["connect_failures"],
        "webhooks": len(results), "answered_204": len(latencies),
        "statuses": {str(s): sum(1 for r, _ in results if r == s) for s in sorted({r for r, _ in results})},
        "latency_ms": {"p50": pick(0.5), "p99": pick(0.99), "max": latencies[-1] if latencies else None},
        "rss_peak_kb": max(peak_rss, rss_kb(args.pid, "VmHWM")), "rss_end_kb": rss_kb(args.pid, "VmRSS"),
    }))


asyncio.run(main())
