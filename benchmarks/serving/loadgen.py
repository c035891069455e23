"""Fallback load client (used only when wrk is missing): asyncio + httpx, in its own process.

    python loadgen.py URL BODY_FILE --connections 32 --duration 10

Keeps ``connections`` requests in flight for ``duration`` seconds and prints one JSON object:
requests, errors, seconds, requests_per_s, p50_ms, p99_ms. A Python client is far slower than
wrk, so on a small machine it may be the bottleneck: its figures are a lower bound.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from pathlib import Path

import httpx


async def _worker(
    client: httpx.AsyncClient,
    url: str,
    body: bytes,
    deadline: float,
    out: list[float],
    delay: float,
) -> int:
    await asyncio.sleep(delay)  # half the connections open later, as wrk's second thread does
    errors = 0
    headers = {"Content-Type": "application/json"}
    while time.perf_counter() < deadline:
        started = time.perf_counter()
        try:
            response = await client.post(url, content=body, headers=headers)
            ok = response.status_code < 400
        except httpx.HTTPError:
            ok = False
        if ok:
            out.append(time.perf_counter() - started)
        else:
            errors += 1
    return errors


async def run(url: str, body: bytes, connections: int, duration: float) -> dict[str, float]:
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    latencies: list[float] = []
    async with httpx.AsyncClient(limits=limits, timeout=30.0) as client:
        started = time.perf_counter()
        deadline = started + duration
        errors = await asyncio.gather(
            *(
                _worker(client, url, body, deadline, latencies, 0.3 if i % 2 else 0.0)
                for i in range(connections)
            )
        )
        seconds = time.perf_counter() - started
    cuts = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [0.0] * 99
    return {
        "requests": len(latencies),
        "errors": sum(errors),
        "seconds": seconds,
        "requests_per_s": len(latencies) / seconds,
        "p50_ms": cuts[49] * 1000,
        "p99_ms": cuts[98] * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("url")
    parser.add_argument("body", type=Path)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--duration", type=float, default=10.0)
    args = parser.parse_args()
    result = asyncio.run(run(args.url, args.body.read_bytes(), args.connections, args.duration))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
