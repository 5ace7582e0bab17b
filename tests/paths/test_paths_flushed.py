"""``on_flushed`` on every path: after output from every kind of handler, and a download.

Each ``on_flushed`` call that has a marker pending replies ``flushed:<marker>``,
so the client sees, line by line, that the flush of each output was reported.
"""

from __future__ import annotations

from typing import Any

import pytest
from pathharness import Harness
from pathmatrix import Path, matrix

from tcpkit import Connection

pytestmark = pytest.mark.anyio

with_flushed = matrix(lambda p: p.flushed)


@with_flushed
async def test_on_flushed_follows_the_output_of_every_kind_of_handler(
    path: Path, h: Harness
) -> None:
    pending: dict[int, str] = {}

    def on_error(conn: Connection[str, str], exc: BaseException) -> None:
        conn.put(f"error:{type(exc).__name__}")
        pending[conn.id] = "error"

    app = h.app(flushed=False, on_error=on_error, shutdown_on_error=False)

    def hello(conn: Connection[str, str]) -> None:
        conn.put("hello")
        pending[conn.id] = "hello"

    def handle(conn: Connection[str, str], line: str) -> None:
        if line == "ping":
            conn.put("pong")
            pending[conn.id] = "pong"
        elif line == "emit":
            conn.emit("event")  # no output of its own
        elif line == "boom":
            raise ValueError("boom")

    def event(conn: Connection[str, str]) -> None:
        conn.put("event")
        pending[conn.id] = "event"

    def flushed(conn: Connection[str, str]) -> None:
        h.rec.flushed[conn.id] += 1
        marker = pending.pop(conn.id, None)
        if marker is not None:
            conn.put(f"flushed:{marker}")

    app.add_on_connect(h.handler(hello))
    app.add_on_input(h.handler(handle))
    app.add_on_event("event", h.handler(event))
    app.add_on_flushed(h.handler(flushed, "on_flushed"))
    async with h.serve(app) as served:
        client = await served.connect()
        assert await client.recv_lines(2) == ["hello", "flushed:hello"]  # on_connect
        await client.send_lines("ping")
        assert await client.recv_lines(2) == ["pong", "flushed:pong"]  # on_input
        await client.send_lines("emit")
        assert await client.recv_lines(2) == ["event", "flushed:event"]  # an event
        await client.send_lines("boom")
        assert await client.recv_lines(2) == ["error:ValueError", "flushed:error"]  # on_error
        (conn,) = served.server.connections
        pending[conn.id] = "broadcast"
        assert served.server.broadcast("news") == 1  # output from outside the handlers
        assert await client.recv_lines(2) == ["news", "flushed:broadcast"]
    assert h.rec.error_types() == [ValueError]
    assert h.rec.overlaps == []


CHUNKS = 20
CHUNK = "x" * 8000


@with_flushed
async def test_a_download_continued_from_on_flushed_sends_every_chunk(
    path: Path, h: Harness
) -> None:
    app = h.app(flushed=False)
    remaining: dict[int, int] = {}

    def command(conn: Connection[str, str], line: str) -> None:
        count = int(line.removeprefix("download "))
        conn.put(f"chunk 0 {CHUNK}")
        remaining[conn.id] = count - 1

    def next_chunk(conn: Connection[str, str]) -> Any:
        h.rec.flushed[conn.id] += 1
        left = remaining.get(conn.id, 0)
        if left:
            remaining[conn.id] = left - 1
            conn.put(f"chunk {CHUNKS - left} {CHUNK}")
            if left == 1:
                conn.put("done")

    app.add_on_input(h.handler(command))
    app.add_on_flushed(h.handler(next_chunk, "on_flushed"))
    async with h.serve(app) as served:
        client = await served.connect()
        await client.send_lines(f"download {CHUNKS}")
        lines = await client.recv_lines(CHUNKS + 1)
    assert lines == [f"chunk {i} {CHUNK}" for i in range(CHUNKS)] + ["done"]
    assert h.rec.errors == []
    assert h.rec.overlaps == []
