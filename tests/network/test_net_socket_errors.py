"""Socket errors reach ``on_error`` as an exception that says what happened.

A reset is a ``ConnectionResetError`` (or ``BrokenPipeError`` when the reset
shows up as a failed write), a TLS failure mid-stream an ``ssl.SSLError``:
never an anyio ``BrokenResourceError`` with an empty message.
"""

from __future__ import annotations

import errno
import socket
import ssl
import struct

import anyio
import anyio.abc
import pytest
from anyio.streams.tls import TLSStream
from netutil import Certs

from tcpkit import App, Connection

pytestmark = pytest.mark.anyio

CHUNK = "x" * 16384


def recording_app() -> tuple[App[str, str], list[BaseException], anyio.Event, list[str | None]]:
    """An app that records the errors ``on_error`` gets and ``conn.close_error`` at the end."""
    app: App[str, str] = App()
    errors: list[BaseException] = []
    ended = anyio.Event()
    closes: list[str | None] = []

    @app.on_input
    async def handle(conn: Connection[str, str], line: str) -> None:
        if line == "stream":  # write until the client goes away
            while True:
                await conn.send(CHUNK)
        await conn.send(f"echo {line}")

    @app.on_error
    def report(conn: Connection[str, str], exc: Exception) -> None:
        errors.append(exc)

    @app.on_disconnect
    def gone(conn: Connection[str, str]) -> None:
        closes.append(conn.close_error)  # (the access log's and the metrics' error kind)
        ended.set()

    return app, errors, ended, closes


async def reset(stream: anyio.abc.SocketStream) -> None:
    """Close with SO_LINGER 0: the kernel sends a reset instead of a FIN."""
    raw = stream.extra(anyio.abc.SocketAttribute.raw_socket)
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    await stream.aclose()


async def test_a_reset_while_reading_is_a_connection_reset_error() -> None:
    app, errors, ended, closes = recording_app()
    async with app.start() as server:
        assert server.port is not None
        client = await anyio.connect_tcp("127.0.0.1", server.port)
        await client.send(b"hi\r\n")
        with anyio.fail_after(5):
            assert await client.receive() == b"echo hi\r\n"
        await reset(client)
        with anyio.fail_after(5):
            await ended.wait()
    (exc,) = errors
    assert isinstance(exc, ConnectionResetError), repr(exc)
    assert exc.errno == errno.ECONNRESET
    assert closes == ["ConnectionResetError"]


async def test_a_reset_while_writing_is_a_reset_or_broken_pipe() -> None:
    app, errors, ended, closes = recording_app()
    async with app.start() as server:
        assert server.port is not None
        client = await anyio.connect_tcp("127.0.0.1", server.port)
        await client.send(b"stream\r\n")
        with anyio.fail_after(5):
            await client.receive()  # the server is writing now
        await reset(client)
        with anyio.fail_after(5):
            await ended.wait()
    (exc,) = errors
    assert isinstance(exc, (ConnectionResetError, BrokenPipeError)), repr(exc)
    assert exc.errno in (errno.ECONNRESET, errno.EPIPE)
    assert str(exc)  # says what happened
    assert closes == [type(exc).__name__]


async def test_a_tls_failure_mid_stream_is_an_ssl_error(certs: Certs) -> None:
    app, errors, ended, closes = recording_app()
    async with app.start(ssl=certs.server) as server:
        assert server.port is not None
        raw = await anyio.connect_tcp("127.0.0.1", server.port)
        tls = await TLSStream.wrap(
            raw, hostname="localhost", ssl_context=certs.client, standard_compatible=False
        )
        await tls.send(b"hi\r\n")
        with anyio.fail_after(5):
            assert await tls.receive() == b"echo hi\r\n"
        await raw.send(b"\x17\x03\x03\x00\x20" + b"\x00" * 32)  # a record TLS cannot decrypt
        with anyio.fail_after(5):
            await ended.wait()
        await raw.aclose()
    (exc,) = errors
    assert isinstance(exc, ssl.SSLError), repr(exc)
    assert closes == [type(exc).__name__]
