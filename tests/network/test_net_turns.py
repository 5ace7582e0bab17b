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
from tcpkit._transport import Transport

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


# -- a handler that waits ------------------------------------------------------
#
# Output is coalesced while handlers run without waiting; once an async
# handler waits for something else (a lock, a database, a timer), what it has
# sent so far goes out: a client must never wait for a reply that is already
# written. The gate below is only opened after the first reply arrived, so a
# server that held the reply until the handler returned fails with a timeout.


@pytest.mark.parametrize("hook", ["on_input", "on_connect", "on_event"])
async def test_what_an_async_handler_sent_goes_out_while_it_waits(hook: str) -> None:
    app: App[str, str] = App()
    gate = anyio.Event()

    async def slow(conn: Connection[str, str], *_: Any) -> None:
        await conn.send("first")
        conn.put("second")
        await gate.wait()
        await conn.send("last")

    if hook == "on_input":
        app.add_on_input(slow)
    elif hook == "on_connect":
        app.add_on_connect(slow)
    else:
        app.add_on_event("slow", slow)

        @app.on_input
        def start(conn: Connection[str, str], line: str) -> None:
            conn.emit("slow")

    async with app.start() as server:
        assert server.port is not None
        async with await anyio.connect_tcp("127.0.0.1", server.port) as client:
            if hook != "on_connect":
                await client.send(b"go\n")
            assert await read_lines(client, 2) == [b"first", b"second"]
            gate.set()
            assert await read_lines(client, 1) == [b"last"]


async def test_output_from_outside_reaches_a_client_whose_handler_waits() -> None:
    app: App[str, str] = App()
    gate = anyio.Event()
    waiting: list[Connection[str, str]] = []

    @app.on_input
    async def slow(conn: Connection[str, str], line: str) -> None:
        waiting.append(conn)
        await gate.wait()
        await conn.send("done")

    async with app.start() as server:
        assert server.port is not None
        async with await anyio.connect_tcp("127.0.0.1", server.port) as client:
            await client.send(b"go\n")
            with anyio.fail_after(10):
                while not waiting:
                    await anyio.sleep(0.001)
            server.broadcast("news")
            waiting[0].put("more news")
            assert await read_lines(client, 2) == [b"news", b"more news"]
            gate.set()
            assert await read_lines(client, 1) == [b"done"]


async def test_an_async_handler_that_does_not_wait_still_gets_one_write_per_read() -> None:
    app: App[str, str] = App()
    sends: list[bytes] = []

    @app.on_connect
    def spy(conn: Connection[str, str]) -> None:
        stream = conn.stream
        assert isinstance(stream, Transport)  # tcpkit's own socket streams are transports
        real_write = stream.write

        def write(data: bytes) -> bool:
            sends.append(data)
            return real_write(data)

        stream.write = write  # type: ignore[method-assign]

    @app.on_input
    async def echo(conn: Connection[str, str], line: str) -> None:
        await conn.send(line)
        await conn.send(line.upper())

    async with app.start() as server:
        assert server.port is not None
        async with await anyio.connect_tcp("127.0.0.1", server.port) as client:
            await client.send(b"a\nb\nc\n")
            assert await read_lines(client, 6) == [b"a", b"A", b"b", b"B", b"c", b"C"]
    assert sends[0] == b"a\r\nA\r\nb\r\nB\r\nc\r\nC\r\n"


async def test_a_waiting_handler_that_raises_or_is_cancelled_is_handled_as_any_other() -> None:
    """The driver that flushes while a handler waits passes errors and cancellation through."""
    app: App[str, str] = App(shutdown_on_error=False)
    errors: list[str] = []
    ended: list[int] = []

    @app.on_input
    async def handle(conn: Connection[str, str], line: str) -> None:
        await conn.send(f"got {line}")
        await anyio.sleep(0.01)
        if line == "raise":
            raise ValueError("after a wait")
        if line == "hang":
            await anyio.sleep_forever()
        await conn.send(f"done {line}")

    @app.on_error
    async def report(conn: Connection[str, str], exc: BaseException) -> None:
        await anyio.sleep(0.001)  # on_error may wait too
        errors.append(f"{type(exc).__name__}: {exc}")
        conn.put("error")

    @app.on_disconnect
    def bye(conn: Connection[str, str]) -> None:
        ended.append(conn.id)

    async with app.start() as server:
        assert server.port is not None
        async with await anyio.connect_tcp("127.0.0.1", server.port) as client:
            await client.send(b"raise\nok\n")
            assert await read_lines(client, 4) == [b"got raise", b"error", b"got ok", b"done ok"]
            await client.send(b"hang\n")
            assert await read_lines(client, 1) == [b"got hang"]
            with anyio.fail_after(10):
                await server.shutdown(grace=0.05, drain_timeout=0.05)  # cancels the handler
            assert await read_to_end(client) == b""
    assert errors == ["ValueError: after a wait"]
    assert ended == [1]
