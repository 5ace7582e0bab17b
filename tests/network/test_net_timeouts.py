"""Time limits and per-client limits over real sockets (SPEC.md §11), on every backend.

Each limit closes only its own connection, reports its exception to
``on_error``, counts it in ``server.stats``, and leaves well-behaved clients
alone. The limits are short here (a fraction of a second); no test asserts a
duration, only what happens and what does not.
"""

from __future__ import annotations

import contextlib
import socket
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import pytest
from netutil import proxy_v1

from tcpkit import (
    App,
    ConnectionClosed,
    ConnectionTimeout,
    IdleTimeout,
    MessageTimeout,
    SendTimeout,
)
from tcpkit import Connection as Conn

pytestmark = pytest.mark.anyio

LIMIT = 0.3


class Seen:
    """What the app's handlers saw."""

    def __init__(self) -> None:
        self.errors: list[BaseException] = []
        self.gone = anyio.Event()
        self.disconnects = 0
        self.send_raised: list[BaseException] = []


def app_with(seen: Seen, **options: Any) -> App[str, str]:
    app: App[str, str] = App(**options)

    @app.on_input
    async def handle(conn: Conn[str, str], line: str) -> None:
        if line == "flood":  # more than the client will read
            try:
                while True:
                    await conn.send("x" * 65536)
            except ConnectionClosed as exc:
                seen.send_raised.append(exc)
            return
        await conn.send(f"re:{line}")

    @app.on_error
    def report(conn: Conn[str, str], exc: Exception) -> None:
        seen.errors.append(exc)

    @app.on_disconnect
    def gone(conn: Conn[str, str]) -> None:
        seen.disconnects += 1
        seen.gone.set()

    return app


async def read_all(stream: anyio.abc.ByteStream, timeout: float = 10) -> bytes:
    data = b""
    with anyio.fail_after(timeout):
        while True:
            try:
                data += await stream.receive()
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                return data


async def test_idle_timeout_closes_a_silent_client_only() -> None:
    seen = Seen()
    app = app_with(seen, idle_timeout=LIMIT)
    async with app.start() as server:
        assert server.port is not None
        async with await anyio.connect_tcp("127.0.0.1", server.port) as silent:
            busy = await anyio.connect_tcp("127.0.0.1", server.port)
            with anyio.fail_after(10):
                i = 0
                while not seen.gone.is_set():  # the busy one talks while the silent one waits
                    await busy.send(f"{i}\r\n".encode())
                    assert await busy.receive() == f"re:{i}\r\n".encode()
                    await anyio.sleep(LIMIT / 4)
                    i += 1
            assert await read_all(silent) == b""
        assert server.stats.idle_timeouts == 1
        assert server.connection_count == 1
        await busy.aclose()
    assert [type(e) for e in seen.errors] == [IdleTimeout]
    assert isinstance(seen.errors[0], ConnectionTimeout)


async def test_a_download_being_read_is_not_idle() -> None:
    """Output the OS keeps taking is progress: a client that only reads is not idle."""
    app: App[str, str] = App(idle_timeout=LIMIT)
    errors: list[BaseException] = []

    @app.on_input
    def start(conn: Conn[str, str], line: str) -> None:
        conn.put("c" * 16384)

    @app.on_flushed
    def more(conn: Conn[str, str]) -> None:  # an endless download (chargen)
        conn.put("c" * 16384)

    @app.on_error
    def report(conn: Conn[str, str], exc: Exception) -> None:
        errors.append(exc)

    async with app.start() as server:
        assert server.port is not None
        async with await anyio.connect_tcp("127.0.0.1", server.port) as client:
            # The server sees the client read only as the kernel acknowledges: with the
            # megabytes of an autotuned receive buffer between them, a slow reader can look
            # idle for longer than LIMIT. A small buffer keeps the test about the server.
            raw = client.extra(anyio.abc.SocketAttribute.raw_socket)
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
            await client.send(b"go\r\n")
            received = 0
            with anyio.move_on_after(LIMIT * 5):  # reading, sending nothing, for 5 limits
                while True:
                    received += len(await client.receive())
                    await anyio.sleep(0.005)
            assert server.connection_count == 1
            assert server.stats.idle_timeouts == 0
            assert errors == []
    assert received > 0


async def test_message_timeout_cuts_a_slow_trickle() -> None:
    seen = Seen()
    app = app_with(seen, message_timeout=LIMIT)
    async with app.start() as server:
        assert server.port is not None
        async with await anyio.connect_tcp("127.0.0.1", server.port) as client:
            await client.send(b"ok\r\n")
            assert await client.receive() == b"re:ok\r\n"
            with anyio.fail_after(10):
                for byte in b"a very long line that never ends":
                    try:
                        await client.send(bytes([byte]))
                    except (anyio.BrokenResourceError, OSError):
                        break
                    if seen.gone.is_set():
                        break
                    await anyio.sleep(0.05)
                await seen.gone.wait()
            assert await read_all(client) == b""
        assert server.stats.message_timeouts == 1
    assert [type(e) for e in seen.errors] == [MessageTimeout]


async def test_complete_messages_sent_slowly_are_not_cut() -> None:
    seen = Seen()
    app = app_with(seen, message_timeout=LIMIT)
    async with app.start() as server:
        assert server.port is not None
        async with await anyio.connect_tcp("127.0.0.1", server.port) as client:
            for i in range(6):  # 6 lines a little apart: longer than the limit in all
                await client.send(f"{i}\r\n".encode())
                with anyio.fail_after(10):
                    assert await client.receive() == f"re:{i}\r\n".encode()
                await anyio.sleep(LIMIT / 3)
        assert server.stats.message_timeouts == 0


async def test_send_timeout_closes_a_client_that_stopped_reading() -> None:
    seen = Seen()
    app = app_with(seen, send_timeout=LIMIT, write_buffer=(65536, 16384, 64 * 1024 * 1024))
    async with app.start() as server:
        assert server.port is not None
        client = await anyio.connect_tcp("127.0.0.1", server.port)
        await client.send(b"flood\r\n")
        with anyio.fail_after(10):
            await seen.gone.wait()
        await client.aclose()
        assert server.stats.send_timeouts == 1
    assert [type(e) for e in seen.errors] == [SendTimeout]
    assert [type(e) for e in seen.send_raised] == [ConnectionClosed]  # the waiting send


async def test_max_lifetime_shuts_down_gracefully() -> None:
    app: App[str, str] = App(max_lifetime=LIMIT)
    errors: list[BaseException] = []

    @app.on_connect
    def hello(conn: Conn[str, str]) -> None:
        conn.put("hello")
        for i in range(200):  # queued output still goes out at the end
            conn.put(f"line {i}")

    @app.on_error
    def report(conn: Conn[str, str], exc: Exception) -> None:
        errors.append(exc)

    async with app.start() as server:
        assert server.port is not None
        async with await anyio.connect_tcp("127.0.0.1", server.port) as client:
            data = await read_all(client)
        assert server.stats.lifetimes_ended == 1
    lines = data.decode().split("\r\n")
    assert lines[0] == "hello" and lines[200] == "line 199"
    assert errors == []


async def test_max_connections_per_ip_counts_the_real_client_behind_a_proxy() -> None:
    app: App[str, str] = App(max_connections_per_ip=1, proxy_protocol=True)

    @app.on_input
    def echo(conn: Conn[str, str], line: str) -> None:
        conn.put(f"{conn.remote_ip} {line}")

    async def connect_as(ip: str, port: int) -> anyio.abc.SocketStream:
        stream = await anyio.connect_tcp("127.0.0.1", port)
        await stream.send(proxy_v1(ip, "10.0.0.1", 40000, 80))
        return stream

    async with app.start() as server:
        assert server.port is not None
        first = await connect_as("203.0.113.1", server.port)
        await first.send(b"one\r\n")
        with anyio.fail_after(10):
            assert await first.receive() == b"203.0.113.1 one\r\n"
        second = await connect_as("203.0.113.1", server.port)  # the same client again
        assert await read_all(second) == b""
        other = await connect_as("203.0.113.2", server.port)  # another one, through the same proxy
        await other.send(b"two\r\n")
        with anyio.fail_after(10):
            assert await other.receive() == b"203.0.113.2 two\r\n"
        assert (server.stats.rejected, server.stats.rejected_per_ip) == (1, 1)
        await first.aclose()  # its count is given back
        with anyio.fail_after(10):
            while server.connection_count > 1:
                await anyio.sleep(0.01)
        third = await connect_as("203.0.113.1", server.port)
        await third.send(b"three\r\n")
        with anyio.fail_after(10):
            assert await third.receive() == b"203.0.113.1 three\r\n"
        for stream in (second, other, third):
            await stream.aclose()


def kernel_send_buffer_max() -> int:
    """The most a TCP send buffer grows to (Linux: ``tcp_wmem``; else a guess)."""
    try:
        return int(Path("/proc/sys/net/ipv4/tcp_wmem").read_text().split()[2])
    except (OSError, ValueError, IndexError):
        return 4 << 20


@pytest.mark.parametrize("handler", ["async def send", "def put"])
async def test_lines_the_server_has_not_read_yet_are_not_a_slow_message(handler: str) -> None:
    """A client that pipelines whole lines and reads the answers slowly is not cut.

    The server stops reading while its output waits for that reader (a handler
    waiting on ``send``, or the connection's task draining what ``put`` queued):
    the lines it holds stay undecoded for many limits, yet none is a slow message
    (found by the chaos soak, ``reliability/test_chaos_soak.py``). The client
    leaves before reading everything (its small buffer makes the rest slow).
    """
    seen = Seen()
    options: dict[str, Any] = {"message_timeout": LIMIT}
    if handler == "def put":
        app: App[str, str] = App(**options)

        @app.on_input
        def echo(conn: Conn[str, str], line: str) -> None:
            conn.put(f"re:{line}")

        @app.on_error
        def report(conn: Conn[str, str], exc: Exception) -> None:
            seen.errors.append(exc)
    else:
        app = app_with(seen, write_buffer=(4096, 1024, 64 * 1024 * 1024), **options)
    # More whole lines than the kernel's buffers hold (the client's is kept small).
    lines = [f"{i:07d} " + "y" * 92 for i in range((kernel_send_buffer_max() + 2_000_000) // 100)]
    payload = "".join(f"{line}\n" for line in lines).encode()
    expected = "".join(f"re:{line}\r\n" for line in lines).encode()
    async with app.start() as server:
        assert server.port is not None
        async with await anyio.connect_tcp("127.0.0.1", server.port) as client:
            raw = client.extra(anyio.abc.SocketAttribute.raw_socket)
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
            received = b""

            async def send_all() -> None:
                with contextlib.suppress(anyio.BrokenResourceError):
                    await client.send(payload)

            async with anyio.create_task_group() as tg:
                tg.start_soon(send_all)
                with anyio.fail_after(30):
                    try:
                        slow_until = anyio.current_time() + LIMIT * 6
                        while anyio.current_time() < slow_until:  # a slow, steady reader
                            received += await client.receive(8192)
                            await anyio.sleep(LIMIT / 6)
                    except (anyio.BrokenResourceError, anyio.EndOfStream):
                        pass  # cut: seen.errors says why
                # The server stopped reading while the lines waited, and cut nothing.
                assert server.stats.bytes_in < len(payload)
                assert seen.errors == []
                assert received == expected[: len(received)]
                tg.cancel_scope.cancel()
        assert server.stats.message_timeouts == 0
