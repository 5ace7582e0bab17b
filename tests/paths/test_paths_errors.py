"""``on_error`` on every path: a handler's exception, a codec bug, a bad frame, a socket error.

Each check reads what the client gets (the default ``on_error`` of the
harness replies ``error:<type>`` while the connection is writable) and what
``on_error`` was given.
"""

from __future__ import annotations

import errno
import os

import pytest
from pathharness import Harness
from pathmatrix import Path, matrix

from tcpkit import Codec, Connection, Decoder, Encoder, FrameTooLarge, Lines, TcpkitError
from tcpkit.codecs import NeedData

pytestmark = pytest.mark.anyio


def echo(conn: Connection[str, str], line: str) -> None:
    if line == "boom":
        raise ValueError("boom")
    conn.put(f"re:{line}")


@matrix()
async def test_a_handler_exception_reaches_on_error_and_the_read_goes_on(
    path: Path, h: Harness
) -> None:
    app = h.app(shutdown_on_error=False)
    app.add_on_input(h.handler(echo))
    async with h.serve(app) as served:
        client = await served.connect()
        await client.send_lines("a", "boom", "c")
        assert await client.recv_lines(3) == ["re:a", "error:ValueError", "re:c"]
        await client.send_lines("d")
        assert await client.recv_lines(1) == ["re:d"]
    assert [str(exc) for _, exc in h.rec.errors] == ["boom"]
    assert h.rec.error_types() == [ValueError]
    assert h.rec.overlaps == []


class _BuggyDecoder(Decoder[str]):
    """Lines, except that the line ``bug`` makes the decoder itself fail (not a FrameError)."""

    def __init__(self) -> None:
        self.lines = Lines().decoder()

    def push(self, data: bytes) -> None:
        self.lines.push(data)

    def next_message(self) -> str | NeedData:
        message = self.lines.next_message()
        if message == "bug":
            raise RuntimeError("decoder bug")
        return message

    def take_pending(self) -> bytes:
        return self.lines.take_pending()


class BuggyLines(Codec[str, str]):
    def decoder(self) -> Decoder[str]:
        return _BuggyDecoder()

    def encoder(self) -> Encoder[str]:
        return Lines().encoder()


@matrix()
async def test_a_codec_bug_reaches_on_error_and_shuts_the_connection_down(
    path: Path, h: Harness
) -> None:
    app = h.app(BuggyLines())
    seen: list[str] = []

    def handle(conn: Connection[str, str], line: str) -> None:
        seen.append(line)
        conn.put(f"re:{line}")

    app.add_on_input(h.handler(handle))
    async with h.serve(app) as served:
        client = await served.connect()
        await client.send_lines("a", "bug", "c")
        lines, ending = await client.recv_lines_until_closed()
    assert lines == ["re:a", "error:RuntimeError"]  # output queued before still goes out
    assert ending.data == b""
    assert seen == ["a"]  # nothing is decoded after the codec failed
    assert [str(exc) for _, exc in h.rec.errors] == ["decoder bug"]
    assert h.rec.overlaps == []


@matrix()
async def test_an_oversized_line_reaches_on_error_and_the_next_lines_are_handled(
    path: Path, h: Harness
) -> None:
    app = h.app(Lines(max_length=16), shutdown_on_error=False)
    app.add_on_input(h.handler(echo))
    async with h.serve(app) as served:
        client = await served.connect()
        await client.send(b"a\r\n" + b"x" * 100 + b"\r\nb\r\n")
        assert await client.recv_lines(3) == ["re:a", "error:FrameTooLarge", "re:b"]
    assert h.rec.error_types() == [FrameTooLarge]
    assert h.rec.overlaps == []


# -- socket errors ---------------------------------------------------------------------

RESET_ERRNOS = (errno.ECONNRESET, errno.EPIPE)


def says_reset(exc: BaseException) -> bool:
    """SPEC §11: a reset reaches on_error "as ConnectionResetError, or a tcpkit exception
    naming the errno" (a broken pipe likewise)."""
    if isinstance(exc, (ConnectionResetError, BrokenPipeError)):
        return True
    text = str(exc)
    return isinstance(exc, TcpkitError) and any(
        errno.errorcode[code] in text or os.strerror(code) in text for code in RESET_ERRNOS
    )


def describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}({exc!s}) cause={exc.__cause__!r}"


@matrix()
async def test_a_reset_while_the_server_reads_reaches_on_error_as_a_reset(
    path: Path, h: Harness
) -> None:
    app = h.app()
    app.add_on_input(h.handler(echo))
    async with h.serve(app) as served:
        client = await served.connect()
        await client.send_lines("hello")
        await client.wait_unread()  # the reply is here: the server is back to reading
        await client.reset()
        await h.wait_until("on_disconnect", lambda: len(h.rec.disconnects) == 1)
    assert len(h.rec.errors) == 1, h.rec
    exc = h.rec.errors[0][1]
    assert says_reset(exc), describe(exc)


@matrix()
async def test_a_reset_while_the_server_writes_reaches_on_error_as_a_reset(
    path: Path, h: Harness
) -> None:
    app = h.app()

    def flood(conn: Connection[str, str], line: str) -> None:
        for _ in range(256):  # 4 MiB: far more than the socket buffers hold
            conn.put("y" * 16384)

    app.add_on_input(h.handler(flood))
    async with h.serve(app) as served:
        client = await served.connect(small_buffers=True)
        await client.send_lines("flood")
        await client.recv_exactly(65536)  # the server is writing
        await client.reset()
        await h.wait_until("on_disconnect", lambda: len(h.rec.disconnects) == 1)
    assert len(h.rec.errors) == 1, h.rec
    exc = h.rec.errors[0][1]
    assert says_reset(exc), describe(exc)
