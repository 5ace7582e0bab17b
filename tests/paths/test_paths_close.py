"""Ending a connection on every path: ``shutdown()``, ``close()``, the client's half-close."""

from __future__ import annotations

import logging

import pytest
from pathclient import SocketClient
from pathharness import Harness
from pathmatrix import Path, matrix, per_backend

from tcpkit import Connection, ConnectionClosed, IncompleteFrame

pytestmark = pytest.mark.anyio

BIG = 64  # lines of 16 KiB: 1 MiB, more than one write
LINE = "z" * 16384


@matrix()
async def test_shutdown_delivers_the_queued_output_then_closes(path: Path, h: Harness) -> None:
    app = h.app()
    seen: list[str] = []

    def handle(conn: Connection[str, str], line: str) -> None:
        seen.append(line)
        if line != "quit":
            conn.put(f"re:{line}")
            return
        for i in range(BIG):
            conn.put(f"{i} {LINE}")
        conn.shutdown()
        h.rec.note(f"shutting_down={conn.shutting_down}")
        try:
            conn.put("after")
        except ConnectionClosed:
            h.rec.note("put refused")

    app.add_on_input(h.handler(handle))
    async with h.serve(app) as served:
        client = await served.connect()
        await client.send_lines("a", "quit", "b")  # "b" comes after the shutdown
        lines, ending = await client.recv_lines_until_closed()
        await client.aclose()  # the client closes too: the server stops lingering
        await h.wait_until("on_disconnect", lambda: h.rec.disconnects == [1])
    assert lines == ["re:a"] + [f"{i} {LINE}" for i in range(BIG)]
    assert ending.data == b""
    assert seen == ["a", "quit"]  # no input is delivered after shutdown()
    assert h.rec.log == ["shutting_down=True", "put refused"]
    assert h.rec.errors == []
    assert h.rec.overlaps == []


@matrix()
async def test_close_discards_the_queued_output(path: Path, h: Harness) -> None:
    app = h.app()

    def handle(conn: Connection[str, str], line: str) -> None:
        if line != "close":
            conn.put(f"re:{line}")
            return
        for i in range(BIG):
            conn.put(f"bye {i} {LINE}")
        conn.close()

    app.add_on_input(h.handler(handle))
    async with h.serve(app) as served:
        client = await served.connect()
        await client.send_lines("a", "close")
        ending = await client.recv_until_closed()
        await h.wait_until("on_disconnect", lambda: h.rec.disconnects == [1])
    # "re:a" is gone too unless it was handed to the OS before close(): an
    # awaits handler lets what was queued go out while it waits.
    assert b"re:a\r\n".startswith(ending.data), ending.data[:100]
    assert h.rec.errors == []
    assert h.rec.overlaps == []


@matrix()
async def test_after_the_clients_half_close_every_line_is_handled_and_answered(
    path: Path, h: Harness
) -> None:
    app = h.app()
    seen: list[str] = []

    def handle(conn: Connection[str, str], line: str) -> None:
        seen.append(line)
        conn.put(f"re:{line}")

    app.add_on_input(h.handler(handle))
    lines = [f"m{i}" for i in range(50)]
    async with h.serve(app) as served:
        client = await served.connect()
        await client.send_lines(*lines)
        await client.send_eof()
        replies, ending = await client.recv_lines_until_closed()
        await h.wait_until("on_disconnect", lambda: h.rec.disconnects == [1])
    assert replies == [f"re:{line}" for line in lines]
    assert ending == type(ending)(b"", reset=False)  # a clean close after the replies
    assert seen == lines
    assert h.rec.errors == []
    assert h.rec.overlaps == []


@matrix()
async def test_a_partial_line_at_the_clients_eof_reaches_on_error(path: Path, h: Harness) -> None:
    app = h.app()

    def handle(conn: Connection[str, str], line: str) -> None:
        conn.put(f"re:{line}")

    app.add_on_input(h.handler(handle))
    async with h.serve(app) as served:
        client = await served.connect()
        await client.send(b"a\r\nb\r\npartial")
        await client.send_eof()
        replies, ending = await client.recv_lines_until_closed()
        await h.wait_until("on_disconnect", lambda: h.rec.disconnects == [1])
    assert replies == ["re:a", "re:b", "error:IncompleteFrame"], h.rec
    assert not ending.reset
    assert h.rec.error_types() == [IncompleteFrame]
    assert h.rec.overlaps == []


@per_backend(stream="tls")
async def test_output_after_a_tls_clients_bare_fin_is_no_unexpected_error(
    path: Path, h: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    """A TLS client that half-closes the socket without ``close_notify`` (a bare FIN).

    Output queued after that EOF (here on_error's reply to the partial line)
    cannot go out; that must end the connection as a lost peer does, not
    escape as an exception nobody expected.
    """
    app = h.app()

    def handle(conn: Connection[str, str], line: str) -> None:
        conn.put(f"re:{line}")

    app.add_on_input(h.handler(handle))
    async with h.serve(app) as served:
        client = await served.connect()
        assert isinstance(client, SocketClient)
        await client.send(b"a\r\npartial")
        assert await client.recv_lines(1) == ["re:a"]
        await client.send_ragged_eof()
        await client.recv_until_closed()
        await h.wait_until("on_disconnect", lambda: h.rec.disconnects == [1])
    assert h.rec.error_types()[:1] == [IncompleteFrame]
    unexpected = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert unexpected == []
