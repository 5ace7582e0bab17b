"""SIGTERM with 100 clients mid-stream: every line queued before the signal arrives."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import anyio
import pytest

HERE = Path(__file__).parent
CLIENTS = 100


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_port(port: int, proc: subprocess.Popen[str]) -> None:
    with anyio.fail_after(20):
        while True:
            try:
                stream = await anyio.connect_tcp("127.0.0.1", port)
            except OSError:
                assert proc.poll() is None, proc.communicate()
                await anyio.sleep(0.05)
                continue
            await stream.aclose()
            return


async def client(port: int, received: dict[int, int], started: list[int]) -> None:
    stream = await anyio.connect_tcp("127.0.0.1", port)
    buffer = b""
    conn_id = -1
    lines = 0

    async def keep_sending() -> None:
        n = 0
        while True:  # stopped by cancellation once the server has closed
            await stream.send(f"r{n}\n".encode())
            n += 1
            await anyio.sleep(0.002)

    async with anyio.create_task_group() as tg:
        tg.start_soon(keep_sending)
        with anyio.fail_after(30):
            while True:
                try:
                    buffer += await stream.receive()
                except (anyio.EndOfStream, anyio.BrokenResourceError, OSError):
                    break
                *complete, buffer = buffer.split(b"\r\n")
                for line in complete:
                    if conn_id < 0:
                        conn_id = int(line.split()[1])
                        started.append(conn_id)
                    lines += 1
        tg.cancel_scope.cancel()
    await stream.aclose()
    assert buffer == b"", f"a partial line at the end: {buffer[:50]!r}"
    received[conn_id] = lines


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["asyncio", "uvloop", "trio"])
def test_sigterm_delivers_every_queued_line_and_exits_zero(backend: str, tmp_path: Path) -> None:
    record = tmp_path / "record.txt"
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "stream_server.py"), backend, str(record), str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(HERE.parent.parent / "src")},
    )
    received: dict[int, int] = {}
    started: list[int] = []

    async def main() -> None:
        await wait_port(port, proc)
        async with anyio.create_task_group() as tg:
            for _ in range(CLIENTS):
                tg.start_soon(client, port, received, started)
            with anyio.fail_after(20):
                while len(started) < CLIENTS:
                    await anyio.sleep(0.01)
            await anyio.sleep(0.3)  # mid-stream
            proc.send_signal(signal.SIGTERM)

    try:
        t0 = time.monotonic()
        anyio.run(main)
        _, err = proc.communicate(timeout=30)
        elapsed = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert elapsed < 25
    queued = dict(map(int, line.split()) for line in record.read_text().splitlines())
    queued.pop(1)  # the readiness probe
    assert len(received) == CLIENTS
    assert received == queued  # every line the app put reached its client
    assert sum(queued.values()) > CLIENTS * 10  # they really were mid-stream
