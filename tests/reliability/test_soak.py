"""Soak: 500 concurrent clients with random disconnects; no wrong answer, no leak."""

from __future__ import annotations

import gc
import os
import random
from pathlib import Path

import anyio
import pytest

from tcpkit import App, Connection

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

CLIENTS = 500
DURATION = 2.0


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def close_wait_count(port: int) -> int:
    """Sockets on ``port`` stuck in CLOSE_WAIT (the peer closed, we never did)."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "08":
                count += 1
    return count


def make_app() -> App[str, str]:
    app = App()

    @app.on_input
    async def answer(conn: Connection[str, str], line: str) -> None:
        if line.startswith("slow "):
            await anyio.sleep(0.001)
        await conn.send(f"{line}={len(line)}")

    return app


async def one_client(port: int, seed: int, deadline: float, stats: dict[str, int]) -> None:
    rng = random.Random(seed)
    while anyio.current_time() < deadline:
        try:
            stream = await anyio.connect_tcp("127.0.0.1", port)
        except OSError:
            stats["connect_errors"] += 1
            await anyio.sleep(0.01)
            continue
        buffer = b""
        try:
            for n in range(rng.randint(1, 20)):
                request = f"{'slow ' if rng.random() < 0.2 else ''}c{seed}n{n}"
                await stream.send(request.encode() + b"\n")
                if rng.random() < 0.05:
                    stats["dropped"] += 1
                    break  # disconnect with an answer in flight
                while b"\r\n" not in buffer:
                    chunk = await stream.receive()
                    buffer += chunk
                line, _, buffer = buffer.partition(b"\r\n")
                assert line.decode() == f"{request}={len(request)}", line
                stats["answers"] += 1
        finally:
            await stream.aclose()


@pytest.mark.skipif(not Path("/proc/self/fd").exists(), reason="needs /proc")
async def test_soak_500_clients_random_disconnects_no_leaks() -> None:
    app = make_app()
    async with app.start() as server:  # warm up lazily created loop resources
        await one_client(
            server.port or 0, -1, anyio.current_time() + 0.05, {"answers": 0, "dropped": 0}
        )
    gc.collect()
    fds_before = open_fds()
    tasks_before = len(anyio.get_running_tasks())
    stats = {"answers": 0, "dropped": 0, "connect_errors": 0}
    async with app.start(backlog=1024) as server:
        rss_base = rss_kib()
        deadline = anyio.current_time() + DURATION
        with anyio.fail_after(DURATION + 30):
            async with anyio.create_task_group() as tg:
                for seed in range(CLIENTS):
                    tg.start_soon(one_client, server.port, seed, deadline, stats)
        with anyio.fail_after(10):
            while server.connection_count:
                await anyio.sleep(0.01)
        assert server.connections == []
        assert close_wait_count(server.port or 0) == 0
        # Only a client that hung up with an answer in flight may cause a (reset) error.
        assert server.stats.errors <= stats["dropped"]
        rss_after = rss_kib()
    gc.collect()
    assert stats["answers"] > CLIENTS
    assert stats["connect_errors"] == 0
    assert open_fds() == fds_before
    assert len(anyio.get_running_tasks()) == tasks_before
    assert rss_after - rss_base < 64 * 1024, (rss_base, rss_after)
