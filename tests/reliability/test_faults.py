"""Bad clients and faults stay inside their own connection (every backend)."""

from __future__ import annotations

import errno
import socket
import struct
from typing import Any

import anyio
import anyio.abc
import pytest
from helpers import LineClient
from hypothesis import given, settings
from hypothesis import strategies as st

from tcpkit import App, Codec, Connection, Lines, Raw
from tcpkit.codecs import Decoder, Encoder, FixedBlocks, Json, LengthPrefixed, NeedData, Netstrings

pytestmark = pytest.mark.anyio

CODECS: dict[str, Codec[Any, Any]] = {
    "lines": Lines(max_length=1024),
    "lines-bytes": Lines(encoding=None, max_length=1024),
    "raw": Raw(),
    "fixed": FixedBlocks(8),
    "length": LengthPrefixed("!H", max_length=1024),
    "netstrings": Netstrings(max_length=1024),
    "json-lines": Lines(max_length=1024) | Json(),
}


def echo_app(codec: Codec[Any, Any], **options: Any) -> App[Any, Any]:
    app: App[Any, Any] = App(codec=codec, **options)

    @app.on_input
    def echo(conn: Connection[Any, Any], message: Any) -> None:
        conn.put(message)

    app.add_on_error(lambda conn, exc: None)  # garbage is expected here; keep logs quiet
    return app


async def healthy(port: int) -> None:
    """A well-behaved Lines client is still answered."""
    async with await LineClient.connect(port) as client:
        await client.send("are you there?")
        assert await client.recv_line() == "are you there?"


@pytest.mark.parametrize("name", sorted(CODECS))
@settings(max_examples=25)
@given(garbage=st.lists(st.binary(min_size=1, max_size=300), min_size=1, max_size=6))
async def test_random_garbage_never_hurts_the_server(name: str, garbage: list[bytes]) -> None:
    app = echo_app(CODECS[name])
    probe = echo_app(Lines())
    async with app.start() as server, probe.start() as other:
        async with await LineClient.connect(server.port or 0) as client:
            for chunk in garbage:
                try:
                    await client.send_raw(chunk)
                except (anyio.BrokenResourceError, OSError):
                    break  # the server closed this connection on bad input: fine
            await client.send_eof()
            await client.recv_until_closed()
        with anyio.fail_after(5):
            while server.connection_count:
                await anyio.sleep(0.005)
        # The same server still answers a good client of its own codec...
        if name.startswith("lines") or name == "raw":
            async with await LineClient.connect(server.port or 0) as client:
                await client.send_raw(b"ok\n")
                with anyio.fail_after(5):
                    while b"ok" not in client.buffer:
                        client.buffer += await client.stream.receive()
        await healthy(other.port or 0)


@settings(max_examples=20)
@given(cut=st.integers(min_value=0, max_value=2000), linger=st.booleans())
async def test_abrupt_resets_at_random_points(cut: int, linger: bool) -> None:
    app = echo_app(Lines())
    payload = b"".join(b"line %d\n" % i for i in range(300))
    async with app.start() as server:
        sock = socket.create_connection(("127.0.0.1", server.port or 0))
        sock.setblocking(False)
        try:
            sock.send(payload[:cut])
        except BlockingIOError:
            pass
        if linger:  # SO_LINGER 0: close() sends a reset instead of a FIN
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
        with anyio.fail_after(5):
            while server.connection_count:
                await anyio.sleep(0.005)
        await healthy(server.port or 0)


async def test_idle_timeout_closes_a_silent_client() -> None:
    app = echo_app(Lines(), idle_timeout=0.2)
    async with app.start() as server:
        silent = await LineClient.connect(server.port or 0)
        chatty = await LineClient.connect(server.port or 0)
        with anyio.fail_after(5):
            closed = False
            while not closed:
                await chatty.send("tick")
                assert await chatty.recv_line() == "tick"  # activity keeps it open
                with anyio.move_on_after(0.05):
                    await silent.recv_until_closed()
                    closed = True
            while server.connection_count != 1:  # the server side finishes its close
                await anyio.sleep(0.005)
        await silent.aclose()
        await chatty.aclose()


async def test_slowloris_partial_line_is_cut_by_idle_timeout() -> None:
    app = echo_app(Lines(), idle_timeout=0.2)
    async with app.start() as server, await LineClient.connect(server.port or 0) as client:
        await client.send_raw(b"never finished")
        assert await client.recv_until_closed(timeout=5) == b""


async def test_slowloris_partial_line_is_cut_by_message_timeout() -> None:
    """A trickle is progress (idle_timeout never fires on it); message_timeout cuts it."""
    app = echo_app(Lines(), idle_timeout=5, message_timeout=0.3)
    async with app.start() as server, await LineClient.connect(server.port or 0) as client:
        with anyio.fail_after(10):
            for byte in b"a line that never ends, one byte at a time" * 4:
                try:
                    await client.send_raw(bytes([byte]))
                except (anyio.BrokenResourceError, OSError):
                    break
                if server.stats.message_timeouts:
                    break
                await anyio.sleep(0.05)
        assert await client.recv_until_closed(timeout=5) == b""
        assert (server.stats.message_timeouts, server.stats.idle_timeouts) == (1, 0)


async def test_setup_timeout_closes_a_stuck_pre_connect() -> None:
    app = echo_app(Lines(), setup_timeout=0.2)

    @app.pre_connect
    async def stuck(conn: Connection[Any, Any], stream: anyio.abc.ByteStream) -> bool:
        await anyio.sleep(3600)
        return True

    async with app.start() as server, await LineClient.connect(server.port or 0) as client:
        assert await client.recv_until_closed(timeout=5) == b""
        assert server.stats.rejected == 1


async def test_on_error_handler_that_raises_is_contained() -> None:
    app: App[str, str] = App()

    @app.on_input
    def bad(conn: Connection[str, str], line: str) -> None:
        raise ValueError(line)

    @app.on_error
    def worse(conn: Connection[str, str], exc: Exception) -> None:
        raise RuntimeError("on_error itself fails")

    async with app.start() as server:
        async with await LineClient.connect(server.port or 0) as client:
            await client.send("x")
            assert await client.recv_until_closed() == b""
        probe = echo_app(Lines())
        async with probe.start() as other:
            await healthy(other.port or 0)
        assert server.stats.errors == 1


class BuggyDecoder(Decoder[str]):
    """Lines, except that the line ``boom`` makes it raise a non-FrameError (a codec bug)."""

    def __init__(self) -> None:
        self.inner = Lines().decoder()

    def push(self, data: bytes) -> None:
        if data == b"crash on push\n":
            raise KeyError("push bug")
        self.inner.push(data)

    def next_message(self) -> str | NeedData:
        message = self.inner.next_message()
        if message == "boom":
            raise ZeroDivisionError("codec bug")
        return message

    def take_pending(self) -> bytes:
        return self.inner.take_pending()


class BuggyLines(Codec[str, str]):
    def decoder(self) -> Decoder[str]:
        return BuggyDecoder()

    def encoder(self) -> Encoder[str]:
        return Lines().encoder()


@pytest.mark.parametrize("handler", ["def", "async def"])
@pytest.mark.parametrize("with_on_error", [False, True])
async def test_a_codec_that_raises_ends_only_its_connection_and_loses_no_output(
    handler: str, with_on_error: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """A decoder bug reaches on_error as itself (or the log, with its traceback), on
    every path: replies to the lines before it still go out, none after it is
    decoded, and the server goes on."""
    app: App[str, str] = App(codec=BuggyLines())
    if handler == "def":

        @app.on_input
        def echo(conn: Connection[str, str], line: str) -> None:
            conn.put(line)
    else:

        @app.on_input
        async def echo_async(conn: Connection[str, str], line: str) -> None:
            await conn.send(line)

    seen: list[BaseException] = []
    if with_on_error:
        app.add_on_error(lambda conn, exc: seen.append(exc))
    async with app.start() as server:
        for garbage, error in [
            (b"x\nboom\ny\n", ZeroDivisionError),
            (b"crash on push\n", KeyError),
        ]:
            async with await LineClient.connect(server.port or 0) as client:
                await client.send("first")
                assert await client.recv_line() == "first"
                await client.send_raw(garbage)
                rest = await client.recv_until_closed()
                assert rest == (b"x\r\n" if error is ZeroDivisionError else b"")
            if with_on_error:
                assert [type(exc) for exc in seen] == [error]
                seen.clear()
            else:
                records = [r for r in caplog.records if r.exc_info and r.exc_info[0] is error]
                assert len(records) == 1 and "codec raised" in records[0].getMessage()
        async with await LineClient.connect(server.port or 0) as client:
            await client.send("still here")
            assert await client.recv_line() == "still here"
        assert server.stats.errors == 2


class FlakyListener:
    """A listener whose accept fails in the ways the kernel can, then succeeds."""

    def __init__(self, real: anyio.abc.SocketListener, failures: list[int]) -> None:
        self.real = real
        self.failures = failures
        self.calls = 0

    async def accept(self) -> anyio.abc.SocketStream:
        self.calls += 1
        if self.failures:
            raise OSError(self.failures.pop(0), "injected")
        return await self.real.accept()

    async def aclose(self) -> None:
        await self.real.aclose()


async def test_per_connection_accept_errors_are_ignored_quietly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = echo_app(Lines())
    errors: list[BaseException] = []
    app.add_on_listen_error(lambda server, exc: errors.append(exc))
    async with (
        app.start() as server,
        await anyio.create_tcp_listener(local_host="127.0.0.1") as extra,
    ):
        real = extra.listeners[0]
        flaky = FlakyListener(real, [errno.ECONNABORTED, errno.EPROTO])
        async with anyio.create_task_group() as tg:
            tg.start_soon(server._accept_loop, flaky)  # type: ignore[arg-type]
            await healthy(real.extra(anyio.abc.SocketAttribute.local_port))
            tg.cancel_scope.cancel()
    assert errors == []
    assert flaky.calls >= 3


async def test_resource_accept_errors_back_off_and_report_once() -> None:
    app = echo_app(Lines())
    errors: list[BaseException] = []
    app.add_on_listen_error(lambda server, exc: errors.append(exc))
    async with (
        app.start() as server,
        await anyio.create_tcp_listener(local_host="127.0.0.1") as extra,
    ):
        real = extra.listeners[0]
        flaky = FlakyListener(real, [errno.EMFILE] * 3)
        started = anyio.current_time()
        async with anyio.create_task_group() as tg:
            tg.start_soon(server._accept_loop, flaky)  # type: ignore[arg-type]
            await healthy(real.extra(anyio.abc.SocketAttribute.local_port))
            tg.cancel_scope.cancel()
    assert len(errors) == 1  # one report for the whole burst
    assert anyio.current_time() - started >= 0.1 + 0.2 + 0.4 - 0.05  # it backed off
