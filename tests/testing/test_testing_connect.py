"""tcpkit.connect and Channel against real apps on 127.0.0.1, and live_server."""

from __future__ import annotations

import logging
import socket
import ssl
from pathlib import Path
from typing import Any

import anyio
import pytest
import trustme

import tcpkit
from tcpkit import App, Channel, Connection, Json, LengthPrefixed, Lines, Reconnect
from tcpkit.client import parse_address
from tcpkit.testing import client_codec, live_server, memory_stream_pair

pytestmark = pytest.mark.anyio


def echo_app(**options: Any) -> App[str, str]:
    app = App(**options)

    @app.on_connect
    async def banner(conn: Connection[str, str]) -> None:
        await conn.send(f"hello #{conn.id}")

    @app.on_input
    async def echo(conn: Connection[str, str], line: str) -> None:
        if line == "quit":
            conn.shutdown()
            return
        await conn.send(line)

    return app


async def test_send_receive_and_async_for() -> None:
    async with echo_app().start() as server, tcpkit.connect("127.0.0.1", server.port) as channel:
        assert await channel.receive() == "hello #1"
        await channel.send("one")
        assert await channel.receive() == "one"
        await channel.send("two")
        await channel.send("quit")
        assert [line async for line in channel] == ["two"]
        with pytest.raises(anyio.EndOfStream):
            await channel.receive()


async def test_host_port_in_one_string_and_half_close() -> None:
    async with echo_app().start() as server:
        async with tcpkit.connect(f"127.0.0.1:{server.port}") as channel:
            await channel.send("last")
            await channel.send_eof()
            assert [line async for line in channel] == ["hello #1", "last"]
        assert isinstance(channel, Channel)
        with pytest.raises(anyio.ClosedResourceError):
            await channel.send("after the block")


async def test_a_codec_types_the_channel() -> None:
    app = App(codec=LengthPrefixed() | Json(bytes))

    @app.on_input
    async def add(conn: Connection[Any, Any], value: Any) -> None:
        await conn.send({"sum": sum(value)})

    async with (
        app.start() as server,
        tcpkit.connect("127.0.0.1", server.port, codec=LengthPrefixed() | Json(bytes)) as channel,
    ):
        await channel.send([1, 2, 3])
        assert await channel.receive() == {"sum": 6}


async def test_live_server_speaks_the_apps_codecs() -> None:
    app = App(input_codec=Lines(), output_codec=Lines() | Json())

    @app.on_input
    async def length(conn: Connection[str, Any], line: str) -> None:
        await conn.send({"line": line, "length": len(line)})

    async with live_server(app) as live, live.connect() as channel:
        assert live.host == "127.0.0.1"
        assert live.port == live.server.port
        await channel.send("hello")
        assert await channel.receive() == {"line": "hello", "length": 5}
    assert repr(client_codec(app)).startswith("client_codec(")
    assert client_codec(echo_app()) is not None


async def test_unix_socket(tmp_path: Path) -> None:
    path = str(tmp_path / "echo.sock")
    async with echo_app().start(uds=path), tcpkit.connect(uds=path) as channel:
        assert await channel.receive() == "hello #1"
        await channel.send("over unix")
        assert await channel.receive() == "over unix"


async def test_tls(tmp_path: Path) -> None:
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost", "127.0.0.1").configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    async with echo_app().start(ssl=server_context) as server:
        async with tcpkit.connect("127.0.0.1", server.port, ssl=client_context) as channel:
            assert await channel.receive() == "hello #1"
            await channel.send("secret")
            assert await channel.receive() == "secret"
        # An untrusted certificate is an error at once, never retried.
        with pytest.raises(ssl.SSLError):
            async with tcpkit.connect(
                "127.0.0.1",
                server.port,
                ssl=True,
                reconnect=Reconnect(attempts=5, initial=10, maximum=10),
            ):
                pass


async def test_refused_connection_names_the_address() -> None:
    port = await free_port()
    with pytest.raises(ConnectionRefusedError, match=f"cannot connect to 127.0.0.1:{port}"):
        async with tcpkit.connect("127.0.0.1", port):
            pass


async def test_reconnect_gives_up_after_its_attempts(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "tcpkit.client")
    port = await free_port()
    policy = Reconnect(attempts=3, initial=0.001, maximum=0.002)
    with pytest.raises(ConnectionRefusedError):
        async with tcpkit.connect("127.0.0.1", port, reconnect=policy):
            pass
    retries = [r for r in caplog.records if "retrying in" in r.getMessage()]
    assert len(retries) == 2


async def test_reconnect_retries_until_the_server_listens() -> None:
    # The port is bound but not listening: refused until the retry handler listens.
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]

    class ListenOnRetry(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            sock.listen(8)

    handler = ListenOnRetry()
    logger = logging.getLogger("tcpkit.client")
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    try:
        policy = Reconnect(attempts=5, initial=0.001)
        async with tcpkit.connect("127.0.0.1", port, reconnect=policy) as channel:
            assert channel.extra(anyio.abc.SocketAttribute.remote_port) == port
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
        sock.close()


async def test_channel_reconnect_after_the_server_closed() -> None:
    async with echo_app().start() as server:
        policy = Reconnect(attempts=3, initial=0.01)
        async with tcpkit.connect("127.0.0.1", server.port, reconnect=policy) as channel:
            assert await channel.receive() == "hello #1"
            await channel.send("quit")
            with pytest.raises(anyio.EndOfStream):
                await channel.receive()
            await channel.reconnect()
            assert await channel.receive() == "hello #2"
            await channel.send("back again")
            assert await channel.receive() == "back again"


async def test_connect_timeout_covers_the_tls_handshake() -> None:
    with socket.socket() as sock:  # accepts into its backlog, never answers
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        port = sock.getsockname()[1]
        with pytest.raises(TimeoutError, match=r"timed out after 0\.05 s"):
            async with tcpkit.connect("127.0.0.1", port, ssl=True, timeout=0.05):
                pass


async def test_a_handshake_cut_short_is_a_connection_error() -> None:
    app = echo_app()
    app.add_pre_connect(lambda conn, stream: False)  # closes every connection at once
    async with app.start() as server:
        with pytest.raises(ConnectionResetError, match="closed during the TLS handshake"):
            async with tcpkit.connect("127.0.0.1", server.port, ssl=True, timeout=5):
                pass


async def test_a_channel_over_any_byte_stream() -> None:
    client_end, server_end = memory_stream_pair()
    async with Channel(client_end, Lines()) as client, Channel(server_end, Lines) as server:
        await client.send("ping")
        assert await server.receive() == "ping"
        await server.send("pong")
        assert await client.receive() == "pong"
        assert server.extra(anyio.abc.SocketAttribute.remote_port) == 50000
        assert "Lines" in repr(client)
        with pytest.raises(RuntimeError, match=r"tcpkit\.connect"):
            await client.reconnect()


async def test_an_unfinished_frame_at_the_end_is_an_error() -> None:
    client_end, server_end = memory_stream_pair()
    channel = Channel(client_end, Lines())
    await server_end.send(b"whole\npart")
    await server_end.aclose()
    assert await channel.receive() == "whole"
    with pytest.raises(tcpkit.IncompleteFrame):
        await channel.receive()


def test_connect_checks_its_arguments() -> None:
    with pytest.raises(ValueError, match="no address"):
        tcpkit.connect()
    with pytest.raises(ValueError, match="not both"):
        tcpkit.connect("localhost", 1, uds="/tmp/x")
    with pytest.raises(ValueError, match="HOST:PORT"):
        tcpkit.connect("localhost")
    with pytest.raises(TypeError):
        tcpkit.connect("localhost", 1, codec=42)  # type: ignore[call-overload]


def test_parse_address() -> None:
    assert parse_address("127.0.0.1:80") == ("127.0.0.1", 80)
    assert parse_address("example.com:0") == ("example.com", 0)
    assert parse_address("[::1]:6379") == ("::1", 6379)
    assert parse_address("::1", 5) == ("::1", 5)
    assert parse_address("host", 7) == ("host", 7)
    assert parse_address("[::1]", 9) == ("::1", 9)
    for bad in ("host", "host:", "host:x", "host:70000", "[::1]x", "::1"):
        with pytest.raises(ValueError, match="bad address"):
            parse_address(bad)


def test_reconnect_policy() -> None:
    assert list(Reconnect(attempts=5, initial=0.1, maximum=0.5).delays()) == [0.1, 0.2, 0.4, 0.5]
    assert list(Reconnect(attempts=1).delays()) == []
    endless = Reconnect(attempts=None, initial=1, maximum=3).delays()
    assert [next(endless) for _ in range(5)] == [1, 2, 3, 3, 3]
    for bad in (
        {"attempts": 0},
        {"initial": -1},
        {"initial": 2, "maximum": 1},
        {"factor": 0.5},
    ):
        with pytest.raises(ValueError):
            Reconnect(**bad)


async def free_port() -> int:
    """A port nothing listens on (bound then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port
