"""A custom acceptor gets the same setup as default handling (SPEC.md §11).

The PROXY header is parsed (``remote_addr`` is the real client and the header
is not data), TLS is done (the acceptor reads plaintext), and
``setup_timeout`` bounds both; a client that fails its setup never reaches the
acceptor.
"""

from __future__ import annotations

import logging
from typing import Any

import anyio
import anyio.abc
import pytest
from netutil import Certs, proxy_v1, proxy_v2

from tcpkit import App

pytestmark = pytest.mark.anyio


def echo_acceptor(**options: Any) -> tuple[App[str, str], list[Any]]:
    """An acceptor that answers ``<remote_addr> <first bytes>`` and records who it served."""
    app: App[str, str] = App(**options)
    seen: list[Any] = []

    @app.acceptor
    async def accept(stream: anyio.abc.ByteStream, remote_addr: Any) -> None:
        seen.append(remote_addr)
        data = await stream.receive()
        await stream.send(f"{remote_addr[0]} {remote_addr[1]} ".encode() + data)

    return app, seen


async def read_all(stream: anyio.abc.ByteStream) -> bytes:
    data = b""
    with anyio.fail_after(10):
        while True:
            try:
                data += await stream.receive()
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                return data


async def test_the_acceptor_reads_plaintext_with_ssl(certs: Certs) -> None:
    app, seen = echo_acceptor()
    async with app.start(ssl=certs.server) as server:
        assert server.port is not None
        async with await anyio.connect_tcp(
            "127.0.0.1", server.port, ssl_context=certs.client, tls_standard_compatible=False
        ) as client:
            await client.send(b"hello over tls\n")
            reply = await read_all(client)
    assert reply.endswith(b" hello over tls\n")
    assert reply.startswith(b"127.0.0.1 ")
    assert len(seen) == 1


@pytest.mark.parametrize("version", [1, 2])
async def test_the_acceptor_gets_the_real_client_behind_a_proxy(version: int) -> None:
    app, seen = echo_acceptor(proxy_protocol=True)
    header = (
        proxy_v1("203.0.113.7", "10.0.0.1", 51000, 443)
        if version == 1
        else proxy_v2("203.0.113.7", "10.0.0.1", 51000, 443)
    )
    async with app.start() as server:
        assert server.port is not None
        async with await anyio.connect_tcp("127.0.0.1", server.port) as client:
            await client.send(header + b"data\n")
            assert await read_all(client) == b"203.0.113.7 51000 data\n"
    assert seen == [("203.0.113.7", 51000)]


async def test_a_bad_proxy_header_never_reaches_the_acceptor(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app, seen = echo_acceptor(proxy_protocol=True)
    caplog.set_level(logging.INFO, logger="tcpkit")
    async with app.start() as server:
        assert server.port is not None
        async with await anyio.connect_tcp("127.0.0.1", server.port) as client:
            await client.send(b"GET / HTTP/1.0\r\n\r\n")
            assert await read_all(client) == b""
        assert server.stats.rejected == 1
    assert seen == []
    assert "ProxyProtocolError" in caplog.text


async def test_setup_timeout_applies_before_the_acceptor(certs: Certs) -> None:
    app, seen = echo_acceptor(setup_timeout=0.2)
    async with app.start(ssl=certs.server) as server:
        assert server.port is not None
        async with await anyio.connect_tcp("127.0.0.1", server.port) as client:
            # A client that never starts its TLS handshake is closed at the timeout.
            assert await read_all(client) == b""
        assert server.stats.rejected == 1
    assert seen == []
