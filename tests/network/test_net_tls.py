"""TLS: ssl= on the server, bad handshakes contained, TLS from pre_connect, STARTTLS."""

from __future__ import annotations

import logging
import os
import ssl
from collections.abc import Callable

import anyio
import anyio.abc
import pytest
from anyio.streams.tls import TLSAttribute, TLSStream
from helpers import LineClient
from netutil import Certs

from tcpkit import App, Connection

pytestmark = pytest.mark.anyio


def tls_info_app(**options: object) -> App[str, str]:
    """Echoes lines prefixed by the TLS version the server sees (or "plain")."""
    app: App[str, str] = App(**options)  # type: ignore[arg-type]

    @app.on_input
    async def answer(conn: Connection[str, str], line: str) -> None:
        version = conn.stream.extra(TLSAttribute.tls_version, "plain")
        await conn.send(f"{version} {line}")

    return app


async def tls_client(port: int, certs: Certs, host: str = "127.0.0.1") -> LineClient:
    stream = await anyio.connect_tcp(
        host,
        port,
        ssl_context=certs.client,
        tls_hostname="localhost",
        tls_standard_compatible=False,
    )
    return LineClient(stream)


async def test_tls_round_trip(certs: Certs) -> None:
    app = tls_info_app()
    async with (
        app.start(ssl=certs.server) as server,
        await tls_client(server.port or 0, certs) as c,
    ):
        await c.send("hello", "world")
        assert await c.recv_lines(2) == ["TLSv1.3 hello", "TLSv1.3 world"]
        assert c.stream.extra(TLSAttribute.tls_version) == "TLSv1.3"


async def test_tls_client_closing_first_logs_no_error(
    certs: Certs, caplog: pytest.LogCaptureFixture
) -> None:
    disconnected = anyio.Event()
    app = tls_info_app()

    @app.on_disconnect
    def gone(conn: Connection[str, str]) -> None:
        disconnected.set()

    with caplog.at_level(logging.WARNING):
        async with app.start(ssl=certs.server) as server:
            async with await tls_client(server.port or 0, certs) as client:
                await client.send("bye")
                assert await client.recv_line() == "TLSv1.3 bye"
            with anyio.fail_after(5):
                await disconnected.wait()
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


async def test_failed_handshakes_affect_only_their_client(certs: Certs) -> None:
    async with tls_info_app().start(ssl=certs.server) as server:
        port = server.port or 0
        async with await tls_client(port, certs) as before:
            await before.send("one")
            assert await before.recv_line() == "TLSv1.3 one"
            # a plain-text client, then a client sending garbage
            # (not random bytes: 0x16 or a high bit first reads as the start of a long
            # record, and the server then waits for the rest: its setup_timeout)
            for payload in (b"hello in clear text\r\n", bytes(range(256)) * 2):
                async with LineClient(await anyio.connect_tcp("127.0.0.1", port)) as bad:
                    await bad.send_raw(payload)
                    data = await bad.recv_until_closed()
                    assert b"TLSv1.3" not in data and b"hello" not in data
            # a client that does not trust the server's certificate gives up
            with pytest.raises((anyio.BrokenResourceError, ssl.SSLError)):
                await anyio.connect_tcp(
                    "127.0.0.1",
                    port,
                    ssl_context=ssl.create_default_context(),
                    tls_hostname="localhost",
                )
            with anyio.fail_after(5):
                while server.stats.rejected < 3:
                    await anyio.sleep(0.01)
            await before.send("two")
            assert await before.recv_line() == "TLSv1.3 two"
        async with await tls_client(port, certs) as after:
            await after.send("three")
            assert await after.recv_line() == "TLSv1.3 three"


async def test_silent_client_is_closed_by_setup_timeout(certs: Certs) -> None:
    app = tls_info_app(setup_timeout=0.3)
    async with app.start(ssl=certs.server) as server:
        async with LineClient(await anyio.connect_tcp("127.0.0.1", server.port or 0)) as idle:
            with anyio.fail_after(5):
                assert await idle.recv_until_closed() == b""
        assert server.stats.rejected == 1


async def test_tls_on_a_unix_socket(certs: Certs, sock_dir: os.PathLike[str]) -> None:
    path = os.path.join(sock_dir, "tls.sock")
    async with tls_info_app().start(uds=path, ssl=certs.server):
        raw = await anyio.connect_unix(path)
        stream = await TLSStream.wrap(
            raw, hostname="localhost", ssl_context=certs.client, standard_compatible=False
        )
        async with LineClient(stream) as client:
            await client.send("unix")
            assert await client.recv_line() == "TLSv1.3 unix"


async def test_pre_connect_may_return_a_tls_stream(certs: Certs) -> None:
    """The SSLify example: the server has no ssl=, pre_connect wraps the stream itself."""
    app = tls_info_app()

    @app.pre_connect
    async def sslify(conn: Connection[str, str], stream: anyio.abc.ByteStream) -> TLSStream:
        return await TLSStream.wrap(
            stream, server_side=True, ssl_context=certs.server, standard_compatible=False
        )

    async with app.start() as server, await tls_client(server.port or 0, certs) as client:
        await client.send("wrapped")
        assert await client.recv_line() == "TLSv1.3 wrapped"


async def upgrade_client(plain: LineClient, certs: Certs) -> TLSStream:
    """The client's side of STARTTLS: its handshake over the plain connection."""
    assert plain.buffer == b""
    with anyio.fail_after(10):
        return await TLSStream.wrap(
            plain.stream, hostname="localhost", ssl_context=certs.client, standard_compatible=False
        )


def starttls_app(certs: Certs) -> App[str, str]:
    app = App()

    @app.on_connect
    async def greet(conn: Connection[str, str]) -> None:
        await conn.send("READY")

    @app.on_input
    async def answer(conn: Connection[str, str], line: str) -> None:
        if line == "STARTTLS":
            await conn.send("OK")
            await conn.start_tls(certs.server)
            return
        version = conn.stream.extra(TLSAttribute.tls_version, "plain")
        await conn.send(f"{version} {line}")

    return app


def starttls_event_app(certs: Certs) -> App[str, str]:
    """``def`` handlers (the connection waits for input without a task); an
    ``async def`` event handler upgrades it, and it goes on over TLS (with a
    task from then on: a TLS stream cannot wait without one)."""
    app: App[str, str] = App()

    @app.on_connect
    def greet(conn: Connection[str, str]) -> None:
        conn.put("READY")

    @app.on_input
    def answer(conn: Connection[str, str], line: str) -> None:
        if line == "STARTTLS":
            conn.put("OK")
            conn.emit("upgrade")
            return
        conn.put(f"{conn.stream.extra(TLSAttribute.tls_version, 'plain')} {line}")

    @app.on_event("upgrade")
    async def upgrade(conn: Connection[str, str]) -> None:
        await conn.start_tls(certs.server)

    return app


@pytest.mark.parametrize("make_app", [starttls_app, starttls_event_app])
async def test_starttls_upgrades_mid_stream(
    certs: Certs, make_app: Callable[[Certs], App[str, str]]
) -> None:
    async with make_app(certs).start() as server:
        plain = LineClient(await anyio.connect_tcp("127.0.0.1", server.port or 0))
        assert await plain.recv_line() == "READY"
        await plain.send("before")
        assert await plain.recv_line() == "plain before"
        await plain.send("STARTTLS")
        assert await plain.recv_line() == "OK"
        tls = await upgrade_client(plain, certs)
        async with LineClient(tls) as client:
            await client.send("after", "again")
            assert await client.recv_lines(2, timeout=3) == ["TLSv1.3 after", "TLSv1.3 again"]


async def test_output_queued_during_a_starttls_handshake_goes_out_encrypted(certs: Certs) -> None:
    """While the handler waits in start_tls, a broadcast must not write plain bytes
    into the handshake: it is sent, encrypted, once TLS is up."""
    async with starttls_app(certs).start() as server:
        plain = LineClient(await anyio.connect_tcp("127.0.0.1", server.port or 0))
        assert await plain.recv_line() == "READY"
        await plain.send("STARTTLS")
        assert await plain.recv_line() == "OK"  # the server now waits for our ClientHello
        assert server.broadcast("news") == 1
        tls = await upgrade_client(plain, certs)
        async with LineClient(tls) as client:
            assert await client.recv_line() == "news"
            await client.send("after")
            assert await client.recv_line() == "TLSv1.3 after"


async def test_tls_over_a_fast_stream_is_interrupted_through_it(certs: Certs) -> None:
    # The driver wakes a task waiting for TLS input through the socket stream under
    # the TLS layer (no cancel scope per receive); no byte is lost either way.
    from tcpkit._listeners import serve_listener
    from tcpkit._transport import ReceiveInterrupted, StreamTransport, Transport, as_transport

    listener = serve_listener(await anyio.create_tcp_listener(local_host="127.0.0.1")).listener
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    try:
        async with anyio.create_task_group() as tg:
            client_box: list[anyio.abc.ByteStream] = []

            async def connect() -> None:
                client_box.append(await tls_client(port, certs))

            tg.start_soon(connect)
            raw = await listener.accept()
            tls = await TLSStream.wrap(
                raw, server_side=True, ssl_context=certs.server, standard_compatible=False
            )
        client = client_box[0]
        transport = as_transport(tls)
        assert isinstance(raw, Transport) and isinstance(transport, StreamTransport)
        results: list[object] = []

        async def reader() -> None:
            try:
                results.append(await transport.receive())
            except ReceiveInterrupted:
                results.append("interrupted")

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(reader)
                await anyio.sleep(0.05)  # it waits in the socket stream's receive
                transport.interrupt_receive()
            assert results == ["interrupted"]
            await client.send("after")  # type: ignore[attr-defined]
            assert await transport.receive() == b"after\r\n"
            transport.interrupt_receive()  # nobody waits: the next receive raises at once
            with pytest.raises(ReceiveInterrupted):
                await transport.receive()
        await client.aclose()  # type: ignore[attr-defined]
        await tls.aclose()
    finally:
        await listener.aclose()
