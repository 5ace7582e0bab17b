"""Messages on every path: the order of replies, a codec switch inside one read."""

from __future__ import annotations

import struct
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from pathharness import Harness
from pathmatrix import Path, matrix

from tcpkit import Connection, LengthPrefixed

pytestmark = pytest.mark.anyio

COUNT = 100


@matrix()
async def test_replies_keep_the_order_of_many_messages_sent_in_one_write(
    path: Path, h: Harness
) -> None:
    app = h.app()
    seen: list[str] = []

    def echo(conn: Connection[str, str], line: str) -> None:
        seen.append(line)
        conn.put(f"re:{line}")

    app.add_on_input(h.handler(echo))
    lines = [f"m{i}" for i in range(COUNT)]
    async with h.serve(app) as served:
        client = await served.connect()
        await client.send_lines(*lines)
        assert await client.recv_lines(COUNT) == [f"re:{line}" for line in lines]
        await client.send_lines("last")  # the connection goes on as before
        assert await client.recv_lines(1) == ["re:last"]
    assert seen == [*lines, "last"]
    assert h.rec.errors == []
    assert h.rec.overlaps == []


@matrix(lambda p: p.is_async)
async def test_handlers_that_wait_on_some_messages_of_one_read_keep_every_reply_in_order(
    path: Path, h: Harness
) -> None:
    # One read, many messages: the handler returns without waiting on most and
    # waits (a timer, a checkpoint) on some, and raises on one: every message is
    # handled once, in order, each reply after the one before, the error reported.
    app = h.app(shutdown_on_error=False)
    seen: list[str] = []

    async def echo(conn: Connection[str, str], line: str) -> None:
        seen.append(line)
        n = int(line[1:])
        if n % 7 == 3:
            await anyio.sleep(0.001)
        elif n % 5 == 1:
            await anyio.lowlevel.checkpoint()
        if n == 42:
            raise ValueError("no 42")
        await conn.send(f"re:{line}")

    app.add_on_input(h.async_handler(echo))
    lines = [f"m{i}" for i in range(COUNT)]
    async with h.serve(app) as served:
        client = await served.connect()
        await client.send_lines(*lines)
        expected = [f"re:{line}" if line != "m42" else "error:ValueError" for line in lines]
        assert await client.recv_lines(COUNT) == expected
        await client.send_lines("m1000")
        assert await client.recv_lines(1) == ["re:m1000"]
    assert seen == [*lines, "m1000"]
    assert h.rec.error_types() == [ValueError]
    assert h.rec.overlaps == []


def frame(data: bytes) -> bytes:
    return struct.pack("!I", len(data)) + data


@matrix()
async def test_a_codec_switch_applies_to_the_rest_of_the_same_read(path: Path, h: Harness) -> None:
    app = h.app()
    seen: list[Any] = []

    def handle(conn: Connection[Any, Any], message: Any) -> None:
        seen.append(message)
        if message == "switch":
            conn.put("ok")  # still a line: encoded before the switch
            conn.set_codec(LengthPrefixed())
        elif isinstance(message, bytes):
            conn.put(b"echo:" + message)
        else:
            conn.put(f"re:{message}")

    app.add_on_input(h.handler(handle))
    async with h.serve(app) as served:
        client = await served.connect()
        # The command and the frames after it in one write: they arrive in one read.
        await client.send(b"a\r\nswitch\r\n" + frame(b"abc") + frame(b"line\r\n") + frame(b""))
        assert await client.recv_lines(2) == ["re:a", "ok"]
        expected = frame(b"echo:abc") + frame(b"echo:line\r\n") + frame(b"echo:")
        assert await client.recv_exactly(len(expected)) == expected
        await client.send(frame(b"later"))  # and in later reads
        assert await client.recv_exactly(len(frame(b"echo:later"))) == frame(b"echo:later")
    assert seen == ["a", "switch", b"abc", b"line\r\n", b"", b"later"]
    assert h.rec.errors == []
    assert h.rec.overlaps == []
