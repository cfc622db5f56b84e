#!/usr/bin/env python3
"""Hostile clients against a proxy port, for the "Hostile clients" section
of RELIABILITY.md (not a test: it asserts nothing, it reports).

  idle N       open N connections and send nothing
  slowloris N  open N connections, send a request line and Host, then one
               header byte a second, never finishing the head

Each connection is held for --hold seconds or until the server closes it;
the report says how many opened, how many the server closed (and after how
long), and how many were still open at the end. Raise `ulimit -n` first.
"""

import argparse
import asyncio
import statistics
import time


async def one(args, stats):
    try:
        reader, writer = await asyncio.open_connection(args.host, args.port)
    except OSError:
        stats["connect_failed"] += 1
        return
    opened = time.monotonic()
    stats["opened"] += 1
    trickle = b"X-Slow: abcdefghijklmnopqrstuvwxyz"
    k = 0
    try:
        if args.mode == "slowloris":
            writer.write(f"GET / HTTP/1.1\r\nHost: {args.vhost}\r\n".encode())
            await writer.drain()
        deadline = opened + args.hold
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                stats["open_at_end"] += 1
                return
            try:
                data = await asyncio.wait_for(reader.read(4096), min(1.0, remaining))
                if not data:
                    stats["closed_after"].append(time.monotonic() - opened)
                    return
                stats["answered"] += 1
            except asyncio.TimeoutError:
                pass
            if args.mode == "slowloris":
                writer.write(trickle[k % len(trickle):][:1])
                k += 1
                await writer.drain()
    except (ConnectionError, OSError):
        stats["closed_after"].append(time.monotonic() - opened)
    finally:
        writer.close()


async def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["idle", "slowloris"])
    p.add_argument("count", type=int)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--vhost", default="demo.localhost")
    p.add_argument("--hold", type=float, default=60.0)
    args = p.parse_args()
    stats = {"opened": 0, "connect_failed": 0, "open_at_end": 0, "answered": 0, "closed_after": []}
    tasks = []
    start = time.monotonic()
    # In batches, so the listen backlog is not the thing measured.
    for i in range(args.count):
        tasks.append(asyncio.create_task(one(args, stats)))
        if i % 500 == 499:
            await asyncio.sleep(0.05)
    print(f"{time.strftime('%H:%M:%S')} {args.mode}: {args.count} started in "
          f"{time.monotonic() - start:.1f} s", flush=True)
    await asyncio.gather(*tasks)
    closed = sorted(stats["closed_after"])
    summary = f"closed by the server: {len(closed)}"
    if closed:
        summary += (f" (after min {closed[0]:.1f} s, median {statistics.median(closed):.1f} s, "
                    f"max {closed[-1]:.1f} s)")
    print(f"{time.strftime('%H:%M:%S')} {args.mode}: opened {stats['opened']}, "
          f"connect failed {stats['connect_failed']}, {summary}, "
          f"answered {stats['answered']}, open at the end {stats['open_at_end']}", flush=True)


asyncio.run(main())
