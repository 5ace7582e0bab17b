"""Flow control on every path: pause/resume, the write-buffer marks and the hard limit."""

from __future__ import annotations

from typing import Any

import pytest
from pathharness import Harness, shrink_send_buffer
from pathmatrix import Path, matrix

from tcpkit import Connection, ConnectionClosed, WriteBufferFull

pytestmark = pytest.mark.anyio


@matrix()
async def test_input_after_a_pause_waits_for_resume_and_none_is_lost(
    path: Path, h: Harness
) -> None:
    app = h.app()
    seen: list[str] = []
    conns: dict[int, Connection[str, str]] = {}

    def handle(conn: Connection[str, str], line: str) -> None:
        conns[conn.id] = conn
        seen.append(line)
        conn.put(f"re:{line}")
        if line == "pause":
            conn.pause_input()

    def resume(conn: Connection[str, str]) -> None:
        conn.put("resuming")
        conn.resume_input()

    app.add_on_input(h.handler(handle))
    app.add_on_event("resume", h.handler(resume))
    async with h.serve(app) as served:
        client = await served.connect()
        await client.send_lines("a", "pause", "b", "c")  # one write: one read
        assert await client.recv_lines(2) == ["re:a", "re:pause"]
        await client.send_lines("d")  # and more while paused
        assert seen == ["a", "pause"]
        (conn,) = conns.values()
        assert conn.input_paused
        assert served.server.post(conn.id, "resume")
        assert await client.recv_lines(4) == ["resuming", "re:b", "re:c", "re:d"]
    assert seen == ["a", "pause", "b", "c", "d"]
    assert h.rec.errors == []
    assert h.rec.overlaps == []


HIGH, LOW = 64 * 1024, 16 * 1024
CHUNKS = 64
CHUNK = "w" * 16382  # 16 KiB a line with its CRLF: 1 MiB in all
SLACK = 256 * 1024
"""More than the kernel (or in-memory pipe) buffers between the server and the client hold."""


@matrix(lambda p: p.is_async)
async def test_send_waits_above_the_high_mark_until_the_client_reads_down_to_low(
    path: Path, h: Harness
) -> None:
    app = h.app(write_buffer=(HIGH, LOW, 64 * 1024 * 1024))
    observed: dict[str, int] = {}
    clients: list[Any] = []

    async def flood(conn: Connection[str, str], line: str) -> None:
        shrink_send_buffer(conn)
        for i in range(CHUNKS):
            conn.put(f"{CHUNK[:-6]}{i:06d}")
        observed["before"] = conn.pending_output
        await conn.send("end")
        observed["after"] = conn.pending_output
        observed["client_read"] = clients[0].received

    app.add_on_input(h.async_handler(flood))
    async with h.serve(app) as served:
        client = await served.connect(small_buffers=True)
        clients.append(client)
        await client.send_lines("flood")
        lines = await client.recv_lines(CHUNKS + 1)
    assert lines == [f"{CHUNK[:-6]}{i:06d}" for i in range(CHUNKS)] + ["end"]
    total = CHUNKS * (len(CHUNK) + 2)
    assert observed["before"] > HIGH
    assert observed["after"] <= LOW
    # send() returned only once the client had read all but what the buffers hold.
    assert observed["client_read"] >= total - LOW - SLACK, observed
    assert h.rec.errors == []
    assert h.rec.overlaps == []


@matrix()
async def test_put_past_the_hard_limit_closes_with_write_buffer_full(
    path: Path, h: Harness
) -> None:
    limit = 256 * 1024
    app = h.app(write_buffer=(16 * 1024, 4 * 1024, limit))
    refused: list[int] = []

    def overflow(conn: Connection[str, str], line: str) -> None:
        for i in range(64):  # 16 KiB each: the 17th passes the limit
            try:
                conn.put("v" * 16000)
            except ConnectionClosed:
                refused.append(i)
                return

    app.add_on_input(h.handler(overflow))
    async with h.serve(app) as served:
        client = await served.connect(small_buffers=True)
        await client.send_lines("overflow")  # and never read while the server writes
        ending = await client.recv_until_closed()
        await h.wait_until("on_disconnect", lambda: h.rec.disconnects == [1])
    assert refused == [16]
    assert ending.data == b""  # what was queued is discarded with the connection
    assert h.rec.error_types() == [WriteBufferFull]
    assert h.rec.overlaps == []
