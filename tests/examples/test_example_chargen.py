"""examples/chargen.py over loopback: the RFC 864 pattern, paced by on_flushed."""

from __future__ import annotations

import logging

import anyio
import pytest
from helpers import LineClient

from examples.chargen import CHARACTERS, LINE_WIDTH, LINES_PER_FLUSH, app, line

pytestmark = pytest.mark.anyio


def test_the_pattern_follows_rfc_864() -> None:
    assert len(CHARACTERS) == 95
    assert line(0) == CHARACTERS[:LINE_WIDTH]
    assert line(1) == CHARACTERS[1 : LINE_WIDTH + 1]
    assert line(94) == CHARACTERS[94] + CHARACTERS[: LINE_WIDTH - 1]
    assert line(95) == line(0)
    assert all(len(line(n)) == LINE_WIDTH for n in range(200))


async def test_streams_the_pattern_past_many_flushes() -> None:
    count = LINES_PER_FLUSH * 10 + 7
    async with app.start() as server, await LineClient.connect(server.port or 0) as client:
        with anyio.fail_after(10):
            while len(client.buffer) < 2 * (LINE_WIDTH + 2):
                client.buffer += await client.stream.receive()
        first_two = f"{line(0)}\r\n{line(1)}\r\n".encode()
        assert client.buffer.startswith(first_two)  # CRLF-terminated lines
        lines = await client.recv_lines(count)
        assert lines == [line(n) for n in range(count)]


async def test_input_is_read_and_thrown_away() -> None:
    async with app.start() as server, await LineClient.connect(server.port or 0) as client:
        # No line framing on input: even 200 KiB without a newline is no error.
        await client.send_raw(b"x" * 200_000)
        await client.send("and a line")
        count = LINES_PER_FLUSH * 3
        assert await client.recv_lines(count) == [line(n) for n in range(count)]
        assert server.stats.errors == 0


async def test_a_client_that_stops_reading_stops_the_stream() -> None:
    bound = LINES_PER_FLUSH * (LINE_WIDTH + 2)  # one batch of output
    async with app.start() as server, await LineClient.connect(server.port or 0) as client:
        await client.recv_line()
        # The client reads nothing more. Once the socket buffers are full, no
        # flush completes, so on_flushed stops queueing: the server's pending
        # output stays under one batch, and bytes_out stops growing.
        with anyio.fail_after(20):
            last, still = -1, 0
            while still < 5:
                await anyio.sleep(0.05)
                current = server.stats.bytes_out
                still = still + 1 if current == last else 0
                last = current
        (conn,) = server.connections
        assert conn.pending_output <= bound
        assert server.stats.bytes_out < 64 * 1024 * 1024  # far from a runaway


async def test_the_stream_ends_quietly_when_the_client_leaves(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with app.start() as server:
        async with await LineClient.connect(server.port or 0) as client:
            await client.recv_lines(LINES_PER_FLUSH * 2)
        with anyio.fail_after(10):
            while server.connection_count:
                await anyio.sleep(0.01)
    # Leaving mid-stream is how a chargen client stops: no warning is logged.
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
