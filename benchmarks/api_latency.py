"""Latency of the read-only endpoints on a workspace: p50/p90/p99 over sequential requests.

    .venv/bin/python benchmarks/api_latency.py demo-workspace/config.json --requests 300

Starts `beryl serve` on a free loopback port, warms up, then times each endpoint.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import subprocess
import sys
import time

import httpx


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("config")
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "beryl", "--config", args.config, "serve", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        with httpx.Client(base_url=url, timeout=10) as client:
            print(
                f"{'endpoint':<14} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8}"
                f"  ({args.requests} requests)"
            )
            for path in ("/diagnostics", "/summarystats", "/scoring", "/health"):
                for _ in range(20):
                    client.get(path).raise_for_status()
                times = []
                for _ in range(args.requests):
                    started = time.perf_counter()
                    client.get(path).raise_for_status()
                    times.append((time.perf_counter() - started) * 1000)
                q = statistics.quantiles(times, n=100)
                print(f"{path:<14} {q[49]:>8.2f} {q[89]:>8.2f} {q[98]:>8.2f}")
    finally:
        server.terminate()
        server.wait(timeout=15)


if __name__ == "__main__":
    main()
