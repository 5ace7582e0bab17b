"""Custom events on every path: ``emit``/``post`` order, turns, and a stream of events."""

from __future__ import annotations

import pytest
from pathharness import Harness, shrink_send_buffer
from pathmatrix import Path, matrix

from tcpkit import Connection

pytestmark = pytest.mark.anyio

EVENTS = 10


@matrix()
async def test_events_run_in_order_after_the_handler_that_emitted_them(
    path: Path, h: Harness
) -> None:
    app = h.app()
    conns: dict[int, Connection[str, str]] = {}

    def handle(conn: Connection[str, str], line: str) -> None:
        conns[conn.id] = conn
        if line == "go":
            for i in range(EVENTS):
                conn.emit("ev", i)
            conn.put("went")  # queued before the events run: it comes first
        else:
            conn.put(f"re:{line}")

    def event(conn: Connection[str, str], i: int) -> None:
        conn.put(f"ev{i}")

    app.add_on_input(h.handler(handle))
    app.add_on_event("ev", h.handler(event, "ev"))
    async with h.serve(app) as served:
        client = await served.connect()
        await client.send_lines("go")
        assert await client.recv_lines(EVENTS + 1) == ["went"] + [f"ev{i}" for i in range(EVENTS)]
        (conn,) = conns.values()
        # Posted from outside, with input arriving meanwhile: the events keep
        # their order, the input is answered, no two handlers overlap.
        for i in range(EVENTS):
            assert served.server.post(conn.id, "ev", 100 + i)
        await client.send_lines("ping")
        lines = await client.recv_lines(EVENTS + 1)
    assert [line for line in lines if line.startswith("ev")] == [
        f"ev{100 + i}" for i in range(EVENTS)
    ]
    assert lines.count("re:ping") == 1
    assert h.rec.errors == []
    assert h.rec.overlaps == []


CHUNKS = 128
FIRST = 8  # 128 KiB: more than the buffers between server and client hold
CHUNK = "s" * 16382  # 16 KiB a line: 2 MiB in all, twice the hard limit below


@matrix(lambda p: p.handler != "awaits")
async def test_a_stream_of_events_each_emitting_the_next_is_held_back_by_the_client(
    path: Path, h: Harness
) -> None:
    """POE's way to stream: each event puts a chunk and yields the next event.

    The output of an event is written before the next event runs, so a
    client that reads keeps the pending output far below the hard limit.
    The command's own reply is large, so that its flush (in the reader task)
    is still waiting for the client when the events start. (Not run with
    ``awaits`` handlers: each event then waits a timer, and whether output
    piles up depends on how fast the client reads.)
    """
    app = h.app(write_buffer=(64 * 1024, 16 * 1024, 1024 * 1024))

    def start(conn: Connection[str, str], line: str) -> None:
        shrink_send_buffer(conn)
        for i in range(FIRST):  # the command answers with the first chunks...
            conn.put(f"{i:06d}{CHUNK[6:]}")
        conn.emit("chunk", FIRST)  # ...and the events send the rest

    def chunk(conn: Connection[str, str], i: int) -> None:
        conn.put(f"{i:06d}{CHUNK[6:]}")
        if i + 1 < CHUNKS:
            conn.emit("chunk", i + 1)
        else:
            conn.put("done")

    app.add_on_input(h.handler(start))
    app.add_on_event("chunk", h.handler(chunk, "chunk"))
    async with h.serve(app) as served:
        client = await served.connect(small_buffers=True)
        await client.send_lines("stream")
        lines = await client.recv_lines(CHUNKS + 1)
    assert lines == [f"{i:06d}{CHUNK[6:]}" for i in range(CHUNKS)] + ["done"]
    assert h.rec.errors == []
    assert h.rec.overlaps == []
