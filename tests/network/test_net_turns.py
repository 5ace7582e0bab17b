"""Turns over real sockets: what happens inside one read, on every backend.

On asyncio and uvloop a plain ``def`` on_input runs inside the stream's
protocol callback (no task switch per read); whatever needs an ``await`` is
handed to the connection's task. These tests send several messages in one
write (so they arrive in one read) and check that an error, a pause or a
client that stops reading changes nothing a client can see: order, bytes and
reports stay those of the plain path, and trio runs the same checks.
"""

from __future__ import annotations

import logging
import socket
from typing import Any

import anyio
import anyio.abc
import pytest

from tcpkit import App, Connection, FrameError, Lines, Raw

pytestmark = pytest.mark.anyio


async def read_lines(stream: anyio.abc.ByteStream, n: int) -> list[bytes]:
    data = b""
    with anyio.fail_after(10):
        while data.count(b"\n") < n:
            data += await stream.receive()
    return data.split(b"\r\n")[:n]


async def read_to_end(stream: anyio.abc.ByteStream) -> bytes:
    """Everything until the server closes (EOF, or a reset after ``close()``)."""
    data = bytearray()
    with anyio.fail_after(20):
        while True:
            try:
                data += await stream.receive()
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                return bytes(data)


async def slow_reader(port: int) -> anyio.abc.SocketStream:
    """A client with a 4 KiB receive buffer: what the server sends soon backs up."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.setblocking(False)
    return await anyio.abc.SocketStream.from_socket(sock)


async def test_a_handler_error_mid_read_is_reported_and_the_rest_of_the_read_handled() -> None:
    app: App[str, str] = App(shutdown_on_error=False)
    errors: list[str] = []

    @app.on_input
    def echo(conn: Connection[str, str], line: str) -> None:
        if line == "boom":
            raise ValueError("boom")
        conn.put(line)

    @app.on_error
    def report(conn: Connection[str, str], exc: BaseException) -> None:
        errors.append(f"{type(exc).__name__}: {exc}")
        conn.put("error")

    async with app.start() as server:
        assert server.port is not None
        async with await anyio.connect_tcp("127.0.0.1", server.port) as client:
            await client.send(b"a\r\nb\r\nboom\r\nc\r\nd\r\n")
            assert await read_lines(client, 5) == [b"a", b"b", b"error", b"c", b"d"]
            await client.send(b"e\r\n")  # the connection goes on as before
            assert await read_lines(client, 1) == [b"e"]
    assert errors == ["ValueError: boom"]


async def test_a_frame_error_mid_read_is_reported_and_the_next_lines_handled() -> None:
    app: App[str, str] = App(codec=Lines(max_length=8), shutdown_on_error=False)
    errors: list[type[BaseException]] = []

    @app.on_input
    def echo(conn: Connection[str, str], line: str) -> None:
        conn.put(line)

    @app.on_error
    def report(conn: Connection[str, str], exc: BaseException) -> None:
        errors.append(type(exc))

    async with app.start() as server:
        assert server.port is not None
        async with await anyio.connect_tcp("127.0.0.1", server.port) as client:
            await client.send(b"one\r\n" + b"x" * 20 + b"\r\ntwo\r\n")
            assert await read_lines(client, 2) == [b"one", b"two"]
    assert len(errors) == 1 and issubclass(errors[0], FrameError)


async def test_pausing_mid_read_keeps_the_rest_until_resumed() -> None:
    app: App[str, str] = App()
    seen: list[str] = []

    @app.on_input
    def handle(conn: Connection[str, str], line: str) -> None:
        seen.append(line)
        conn.put(line)
        if line == "pause":
            conn.pause_input()
            conn.emit("later")

    @app.on_event("later")
    async def later(conn: Connection[str, str]) -> None:
        await anyio.sleep(0.05)
        conn.put(f"resuming after {len(seen)}")
        conn.resume_input()

    async with app.start() as server:
        assert server.port is not None
        async with await anyio.connect_tcp("127.0.0.1", server.port) as client:
            await client.send(b"a\r\npause\r\nb\r\nc\r\n")
            lines = await read_lines(client, 5)
    assert lines == [b"a", b"pause", b"resuming after 2", b"b", b"c"]


async def test_a_client_that_stops_reading_gets_every_byte_once_it_reads() -> None:
    app: App[bytes, bytes] = App(codec=Raw())

    @app.on_input
    def echo(conn: Connection[bytes, bytes], data: bytes) -> None:
        conn.put(data)

    payload = bytes(range(256)) * 16384  # 4 MiB, against a small receive buffer
    async with app.start() as server:
        assert server.port is not None
        async with await slow_reader(server.port) as client:

            async def write_all() -> None:
                for i in range(0, len(payload), 65536):
                    await client.send(payload[i : i + 65536])
                await client.send_eof()

            async with anyio.create_task_group() as tg:
                tg.start_soon(write_all)
                await anyio.sleep(0.2)  # not reading: the server's output backs up
                received = await read_to_end(client)
    assert received == payload


async def test_close_in_a_handler_drops_the_rest_of_the_read(caplog: Any) -> None:
    app: App[str, str] = App()
    seen: list[str] = []

    @app.on_input
    def handle(conn: Connection[str, str], line: str) -> None:
        seen.append(line)
        conn.put(line)
        if line == "close":
            conn.close()

    caplog.set_level(logging.ERROR, logger="tcpkit")
    async with app.start() as server:
        assert server.port is not None
        async with await anyio.connect_tcp("127.0.0.1", server.port) as client:
            await client.send(b"a\r\nclose\r\nb\r\n")
            data = await read_to_end(client)
    assert seen == ["a", "close"]
    assert data == b""  # close() discards the turn's output, and nothing after it runs
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_shutdown_after_a_big_reply_delivers_all_of_it_and_reports_a_late_error() -> None:
    app: App[str, str] = App()
    errors: list[str] = []
    reply = "y" * (4 * 1024 * 1024)

    @app.on_input
    def handle(conn: Connection[str, str], line: str) -> None:
        conn.put(reply)
        conn.shutdown()
        raise RuntimeError("after shutdown")

    @app.on_error
    def report(conn: Connection[str, str], exc: BaseException) -> None:
        errors.append(str(exc))

    async with app.start() as server:
        assert server.port is not None
        async with await slow_reader(server.port) as client:
            await client.send(b"go\r\n")
            await anyio.sleep(0.2)  # not reading yet: the reply backs up in the server
            data = await read_to_end(client)
    assert data == reply.encode() + b"\r\n"
    assert errors == ["after shutdown"]
