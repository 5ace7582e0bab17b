"""PROXY protocol on a real server: the app sees the real client; a bad header closes one."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import anyio
import anyio.abc
import pytest
from anyio.abc import SocketAttribute
from anyio.streams.tls import TLSStream
from helpers import LineClient
from netutil import Certs, needs_ipv6, proxy_v1, proxy_v2, whoami_app

from tcpkit import ProxyProtocolError
from tcpkit.proxy import read_proxy_header

pytestmark = pytest.mark.anyio


async def connect(port: int, host: str = "127.0.0.1") -> LineClient:
    return LineClient(await anyio.connect_tcp(host, port))


async def test_v1_header_sets_remote_ip() -> None:
    app = whoami_app(proxy_protocol=True)
    async with app.start() as server, await connect(server.port or 0) as client:
        await client.send_raw(proxy_v1("203.0.113.7", "10.0.0.1", 51000, 443) + b"hello\r\n")
        assert await client.recv_line() == "203.0.113.7 51000 hello"
        await client.send("again")
        assert await client.recv_line() == "203.0.113.7 51000 again"
        (conn,) = server.connections
        assert conn.remote_addr == ("203.0.113.7", 51000)


async def test_v1_tcp6_header_in_small_pieces() -> None:
    app = whoami_app(proxy_protocol=True)
    data = proxy_v1("2001:db8::7", "2001:db8::1", 40000, 443) + b"hi\r\n"
    async with app.start() as server, await connect(server.port or 0) as client:
        for i in range(0, len(data), 5):
            await client.send_raw(data[i : i + 5])
        assert await client.recv_line() == "2001:db8::7 40000 hi"


async def test_v2_header_sets_remote_ip_and_bytes_after_it_are_kept() -> None:
    app = whoami_app(proxy_protocol=True)
    header = proxy_v2("198.51.100.20", "10.0.0.1", 61000, 25, tlvs=[(0x04, b"\0" * 8)])
    async with app.start() as server, await connect(server.port or 0) as client:
        await client.send_raw(header + b"one\r\ntwo\r\n")
        assert await client.recv_lines(2) == ["198.51.100.20 61000 one", "198.51.100.20 61000 two"]


@needs_ipv6
async def test_v2_ipv6_header_on_an_ipv6_listener() -> None:
    app = whoami_app(proxy_protocol=True)
    async with app.start("::1") as server, await connect(server.port or 0, "::1") as client:
        await client.send_raw(proxy_v2("2001:db8::5", "::1", 1234, 80) + b"x\r\n")
        assert await client.recv_line() == "2001:db8::5 1234 x"


async def test_local_and_unknown_keep_the_socket_address() -> None:
    app = whoami_app(proxy_protocol=True)
    async with app.start() as server:
        for header in (proxy_v2(local=True), b"PROXY UNKNOWN\r\n"):
            async with await connect(server.port or 0) as client:
                own = client.stream.extra(SocketAttribute.local_address)
                await client.send_raw(header + b"me\r\n")
                assert await client.recv_line() == f"{own[0]} {own[1]} me"


@pytest.mark.parametrize(
    "first",
    [
        b"hello\r\n",  # no header at all
        b"PROXY TCP4 1.2.3.999 10.0.0.1 1 2\r\nhello\r\n",  # bad address
        b"PROXY TCP4 1.2.3.4 10.0.0.1 1 2\nhello\r\n",  # LF only
        b"PROXY " + b"x" * 200,  # too long
        b"\r\n\r\n\x00\r\nQUIT\n\x21\x11\xff\xff",  # v2 length over the cap
    ],
    ids=["missing", "bad-address", "lf-only", "too-long", "v2-too-long"],
)
async def test_bad_header_closes_only_that_connection(
    first: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    app = whoami_app(proxy_protocol=True)
    async with app.start() as server, await connect(server.port or 0) as good:
        await good.send_raw(proxy_v1("192.0.2.1", "10.0.0.1", 1000, 80) + b"before\r\n")
        assert await good.recv_line() == "192.0.2.1 1000 before"
        with caplog.at_level(logging.INFO, logger="tcpkit.server"):
            async with await connect(server.port or 0) as bad:
                await bad.send_raw(first)
                assert await bad.recv_until_closed() == b""  # closed, nothing answered
        assert server.stats.rejected == 1
        assert any(
            ProxyProtocolError.__name__ in r.getMessage() and r.exc_info is None
            for r in caplog.records
        ), "the rejection is logged with its reason, on one line (the peer's fault)"
        await good.send("after")
        assert await good.recv_line() == "192.0.2.1 1000 after"
        assert len(server.connections) == 1


async def test_peer_closing_before_the_header_is_rejected() -> None:
    app = whoami_app(proxy_protocol=True)
    async with app.start() as server:
        async with await connect(server.port or 0) as bad:
            await bad.send_raw(b"PROXY TCP4 1.2")
            await bad.send_eof()
            assert await bad.recv_until_closed() == b""
        with anyio.fail_after(5):
            while server.stats.rejected < 1:
                await anyio.sleep(0.01)


async def test_incomplete_header_is_closed_by_setup_timeout() -> None:
    app = whoami_app(proxy_protocol=True, setup_timeout=0.3)
    async with app.start() as server, await connect(server.port or 0) as slow:
        await slow.send_raw(b"PROXY TCP4 ")
        with anyio.fail_after(5):
            assert await slow.recv_until_closed() == b""
        assert server.stats.rejected == 1


class _SendWithPrefix(anyio.abc.ByteStream):
    """Puts ``prefix`` in front of the first send: header and TLS ClientHello in one write."""

    def __init__(self, stream: anyio.abc.ByteStream, prefix: bytes) -> None:
        self.stream, self.prefix = stream, prefix

    async def send(self, item: bytes) -> None:
        item, self.prefix = self.prefix + item, b""
        await self.stream.send(item)

    async def receive(self, max_bytes: int = 65536) -> bytes:
        return await self.stream.receive(max_bytes)

    async def send_eof(self) -> None:
        await self.stream.send_eof()

    async def aclose(self) -> None:
        await self.stream.aclose()

    @property
    def extra_attributes(self) -> Mapping[Any, Callable[[], Any]]:
        return self.stream.extra_attributes


@pytest.mark.parametrize("same_write", [False, True], ids=["separate", "same-write"])
async def test_tls_after_proxy_header(certs: Certs, same_write: bool) -> None:
    app = whoami_app(proxy_protocol=True)
    header = proxy_v2("192.0.2.44", "10.0.0.1", 4444, 443)
    async with app.start(ssl=certs.server) as server:
        raw: anyio.abc.ByteStream = await anyio.connect_tcp("127.0.0.1", server.port or 0)
        if same_write:
            raw = _SendWithPrefix(raw, header)
        else:
            await raw.send(header)
        tls = await TLSStream.wrap(
            raw, hostname="localhost", ssl_context=certs.client, standard_compatible=False
        )
        async with LineClient(tls) as client:
            await client.send("secure")
            assert await client.recv_line() == "192.0.2.44 4444 secure"


async def test_read_proxy_header_replays_what_followed() -> None:
    async def handler(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            wrapped, source = await read_proxy_header(stream)
            assert source == ("192.0.2.9", 9)
            # the socket's attributes are still reachable through the wrapper
            assert wrapped.extra(SocketAttribute.local_address) == stream.extra(
                SocketAttribute.local_address
            )
            data = b""
            while len(data) < 11:
                data += await wrapped.receive(3)  # replayed in small pieces, then the socket
            await wrapped.send(data.upper())

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, handler)
        port = listener.extra(SocketAttribute.local_port)
        async with await anyio.connect_tcp("127.0.0.1", port) as client:
            await client.send(proxy_v1("192.0.2.9", "10.0.0.1", 9, 80) + b"hello")
            await client.send(b" world")
            with anyio.fail_after(5):
                got = b""
                while len(got) < 11:
                    got += await client.receive()
            assert got == b"HELLO WORLD"
        tg.cancel_scope.cancel()
