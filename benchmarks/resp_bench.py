"""Drive a Redis-protocol server with ``redis-benchmark``; print the load generator's JSON.

Run by the benchmark runner in its own process, as it runs the load generator::

    python -m benchmarks.resp_bench --port P [--tests set,get] [--clients 50]
        [--pipeline 1] [--duration S] [--warmup S] [--server-pid PID]

``redis-benchmark`` counts requests, not seconds: a small first run gives the
rate, a warm-up run of about ``--warmup`` seconds at that rate refines it, and
the measured run asks for ``--duration`` seconds' worth. The rate reported is
every request over the sum of each test's time (``redis-benchmark --csv``);
the latencies are its p50 (the median of the tests') and p99 (the worst
test's), per request, or per pipeline with ``--pipeline``; the server's CPU
time is read from ``/proc`` around the measured run, as the load generator does.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import subprocess
import sys
import time
from typing import Any

from .loadgen import LoadError, server_cpu_ns


def redis_benchmark(
    port: int, tests: str, clients: int, pipeline: int, requests: int
) -> tuple[list[dict[str, str]], float]:
    """One run of ``requests`` per test; its CSV rows and its wall time."""
    command = [
        "redis-benchmark",
        *("-h", "127.0.0.1", "-p", str(port), "-t", tests),
        *("-n", str(requests), "-c", str(clients), "-P", str(pipeline), "--csv"),
    ]
    start = time.monotonic()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    except subprocess.TimeoutExpired:
        raise LoadError("redis-benchmark did not finish within 120 s") from None
    elapsed = time.monotonic() - start
    rows = [row for row in csv.DictReader(done.stdout.splitlines()) if row.get("rps")]
    if done.returncode or not rows:
        raise LoadError(f"redis-benchmark failed: {(done.stderr or done.stdout)[-300:]!r}")
    return rows, elapsed


def _rate(rows: list[dict[str, str]], requests: int) -> float:
    """Every request over the sum of each test's time."""
    seconds = sum(requests / float(row["rps"]) for row in rows if float(row["rps"]) > 0)
    return requests * len(rows) / seconds if seconds else 0.0


def measure(args: argparse.Namespace) -> dict[str, Any]:
    ntests = len(args.tests.split(","))
    probe = max(1000, args.clients * args.pipeline * 10)
    rows, _ = redis_benchmark(args.port, args.tests, args.clients, args.pipeline, probe)
    rate = _rate(rows, probe)
    if args.warmup > 0:
        requests = max(probe, int(rate * args.warmup / ntests))
        rows, _ = redis_benchmark(args.port, args.tests, args.clients, args.pipeline, requests)
        rate = _rate(rows, requests)
    requests = max(probe, int(rate * args.duration / ntests))
    cpu0 = server_cpu_ns(args.server_pid)
    rows, elapsed = redis_benchmark(args.port, args.tests, args.clients, args.pipeline, requests)
    cpu = server_cpu_ns(args.server_pid) - cpu0
    count = requests * ntests
    result: dict[str, Any] = {
        "rate": _rate(rows, requests),
        "count": count,
        "elapsed": elapsed,
        "p50_us": statistics.median(float(r["p50_latency_ms"]) for r in rows) * 1000,
        "p99_us": max(float(r["p99_latency_ms"]) for r in rows) * 1000,
        "tests": {r["test"]: float(r["rps"]) for r in rows},
    }
    if args.server_pid:
        result["cpu_us"] = cpu / 1000 / count
        result["cpu_util"] = cpu / 1e9 / elapsed
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.resp_bench")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--tests", default="set,get", help="redis-benchmark -t")
    parser.add_argument("--clients", type=int, default=50, help="redis-benchmark -c")
    parser.add_argument("--pipeline", type=int, default=1, help="redis-benchmark -P")
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--server-pid", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        result = measure(args)
    except (LoadError, OSError) as exc:
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}))
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
