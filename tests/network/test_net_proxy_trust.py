"""PROXY trust over real sockets: the allowlist, ``conn.proxy``, the checksum, the acceptor."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import pytest
from helpers import LineClient
from netutil import needs_ipv6, proxy_v1, proxy_v2

from tcpkit import App, Connection, UntrustedProxyPeer
from tcpkit._limits import BurstLog
from tcpkit._transport import StreamTransport, Transport
from tcpkit.observe import AccessLog, Recorder
from tcpkit.observer import Observer, Rejection
from tcpkit.proxy import ProxyAttribute, ProxyHeader

pytestmark = pytest.mark.anyio


class Rejections(Observer):
    def __init__(self) -> None:
        self.seen: list[Rejection] = []

    def connection_rejected(self, rejection: Rejection) -> None:
        self.seen.append(rejection)


def header_app(**options: Any) -> tuple[App[str, str], list[ProxyHeader | None]]:
    """Greets with ``hi``; answers each line with what ``conn.proxy`` says."""
    app: App[str, str] = App(**options)
    headers: list[ProxyHeader | None] = []

    @app.on_connect
    def greet(conn: Connection[str, str]) -> None:
        headers.append(conn.proxy)
        conn.put("hi")

    @app.on_input
    def answer(conn: Connection[str, str], line: str) -> None:
        proxy = conn.proxy
        if proxy is None:
            conn.put(f"none {conn.remote_ip} {line}")
            return
        ssl = proxy.ssl
        conn.put(
            f"v{proxy.version} {proxy.command} {proxy.source} {proxy.destination} "
            f"alpn={proxy.alpn!r} authority={proxy.authority} id={proxy.unique_id!r} "
            f"cn={ssl.cn if ssl else None} {conn.remote_ip}:{conn.remote_port} {line}"
        )

    return app, headers


async def connect(port: int, host: str = "127.0.0.1") -> LineClient:
    return LineClient(await anyio.connect_tcp(host, port))


async def wait_rejected(server: Any, count: int) -> None:
    with anyio.fail_after(10):
        while server.stats.rejected < count:
            await anyio.sleep(0.01)


async def test_a_trusted_peer_is_served_and_conn_proxy_has_the_v2_tlvs() -> None:
    app, headers = header_app(proxy_protocol=["10.0.0.0/8", "127.0.0.1"])
    ssl_value = b"\x03\x00\x00\x00\x00" + b"\x22\x00\x05alice"
    tlvs = [(0x01, b"h2"), (0x02, b"example.com"), (0x05, b"req-42"), (0x20, ssl_value)]
    header = proxy_v2("203.0.113.7", "10.0.0.1", 51000, 443, tlvs=tlvs, crc=True)
    async with app.start() as server, await connect(server.port or 0) as client:
        await client.send_raw(header)
        assert await client.recv_line() == "hi"
        await client.send("hello")
        assert await client.recv_line() == (
            "v2 PROXY ('203.0.113.7', 51000) ('10.0.0.1', 443) alpn=b'h2' "
            "authority=example.com id=b'req-42' cn=alice 203.0.113.7:51000 hello"
        )
        (conn,) = server.connections
        assert conn.stream.extra(ProxyAttribute.header) == headers[0]
        # the header came alone: the connection still runs on tcpkit's own transport
        assert isinstance(conn._driver.transport, Transport)  # pyright: ignore[reportPrivateUsage]
        assert not isinstance(conn._driver.transport, StreamTransport)  # pyright: ignore[reportPrivateUsage]
    assert server.stats.rejected == 0


async def test_a_v1_header_and_data_in_one_write() -> None:
    app, _ = header_app(proxy_protocol=["127.0.0.0/8"])
    async with app.start() as server, await connect(server.port or 0) as client:
        await client.send_raw(proxy_v1("192.0.2.5", "10.0.0.1", 4000, 25) + b"one\r\n")
        assert await client.recv_lines(2) == [
            "hi",
            "v1 PROXY ('192.0.2.5', 4000) ('10.0.0.1', 25) alpn=None authority=None id=None "
            "cn=None 192.0.2.5:4000 one",
        ]


async def test_conn_proxy_is_none_without_proxy_protocol() -> None:
    app, headers = header_app()
    async with app.start() as server, await connect(server.port or 0) as client:
        assert await client.recv_line() == "hi"
        await client.send("x")
        assert await client.recv_line() == "none 127.0.0.1 x"
    assert headers == [None]


async def test_a_local_header_is_kept_and_the_socket_address_used() -> None:
    app, headers = header_app(proxy_protocol=True)
    async with app.start() as server, await connect(server.port or 0) as client:
        await client.send_raw(proxy_v2(local=True))
        assert await client.recv_line() == "hi"
    assert headers[0] is not None and headers[0].command == "LOCAL"


async def test_an_untrusted_peer_is_closed_unread_counted_and_reported(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app, headers = header_app(proxy_protocol=["10.0.0.0/8"], setup_timeout=None)
    watcher = Rejections()
    async with app.start(observers=[watcher]) as server:
        with caplog.at_level(logging.DEBUG, logger="tcpkit.server"):
            async with await connect(server.port or 0) as client:
                # it sends nothing: with no setup_timeout, only the allowlist can close it
                assert await client.recv_until_closed() == b""
            await wait_rejected(server, 1)
        assert headers == []  # never connected
        (rejection,) = watcher.seen
        assert rejection.reason == "untrusted-proxy"
        assert isinstance(rejection.error, UntrustedProxyPeer)
        assert rejection.error.peer == rejection.remote_addr
        assert rejection.remote_addr[0] == "127.0.0.1"
        assert any(
            r.levelno == logging.WARNING and "127.0.0.1" in r.getMessage() for r in caplog.records
        )
        # a spoofed header changes nothing: still closed, no byte of it read
        async with await connect(server.port or 0) as spoofer:
            await spoofer.send_raw(proxy_v1("198.51.100.1", "10.0.0.1", 1, 2) + b"x\r\n")
            assert await spoofer.recv_until_closed() == b""
        await wait_rejected(server, 2)
        assert headers == []


async def test_a_burst_of_untrusted_peers_is_logged_once(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(BurstLog, "WINDOW", 3600.0)  # (a slow machine cannot end the burst)
    app, _ = header_app(proxy_protocol=["192.0.2.0/24"])
    async with app.start() as server:
        with caplog.at_level(logging.INFO, logger="tcpkit.server"):
            for _ in range(20):
                async with await connect(server.port or 0) as client:
                    await client.send_raw(proxy_v1("198.51.100.1", "10.0.0.1", 1, 2))
                    assert await client.recv_until_closed() == b""
            await wait_rejected(server, 20)
    refusals = [r for r in caplog.records if "not a trusted PROXY peer" in r.getMessage()]
    assert len(refusals) == 1, [r.getMessage() for r in refusals]
    assert server.stats.rejected == 20


async def test_refusals_reach_the_metrics_and_the_access_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app, _ = header_app(proxy_protocol=["10.0.0.0/8"])
    recorder = Recorder()
    async with app.start(observers=[recorder, AccessLog()]) as server:
        with caplog.at_level(logging.INFO, logger="tcpkit.access"):
            async with await connect(server.port or 0) as client:
                assert await client.recv_until_closed() == b""
            await wait_rejected(server, 1)
    assert recorder.rejected["untrusted-proxy"] == 1
    assert recorder.rejected["setup-failed"] == 0
    (line,) = [r.getMessage() for r in caplog.records if r.name == "tcpkit.access"]
    assert line.endswith(": rejected (untrusted-proxy)")


async def test_a_wrong_checksum_closes_only_that_connection(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app, _ = header_app(proxy_protocol=["127.0.0.1"])
    watcher = Rejections()
    async with (
        app.start(observers=[watcher]) as server,
        await connect(server.port or 0) as good,
    ):
        await good.send_raw(proxy_v2("192.0.2.1", "10.0.0.1", 7, 8, crc=True))
        assert await good.recv_line() == "hi"
        with caplog.at_level(logging.INFO, logger="tcpkit.server"):
            async with await connect(server.port or 0) as bad:
                await bad.send_raw(proxy_v2("192.0.2.1", "10.0.0.1", 7, 8, crc=0xDEADBEEF))
                assert await bad.recv_until_closed() == b""
            await wait_rejected(server, 1)
        await good.send("still")
        assert (await good.recv_line()).endswith("192.0.2.1:7 still")
    assert [r.reason for r in watcher.seen] == ["setup-failed"]
    assert any("checksum mismatch" in r.getMessage() for r in caplog.records)


@needs_ipv6
async def test_an_ipv6_allowlist() -> None:
    app, _ = header_app(proxy_protocol=["::1"])
    async with app.start("::1") as server, await connect(server.port or 0, "::1") as client:
        await client.send_raw(proxy_v2("2001:db8::9", "::1", 99, 7000) + b"six\r\n")
        assert (await client.recv_lines(2))[1].endswith("2001:db8::9:99 six")
    app, _ = header_app(proxy_protocol=["127.0.0.1"])
    async with app.start("::1") as server:
        async with await connect(server.port or 0, "::1") as client:
            assert await client.recv_until_closed() == b""
        await wait_rejected(server, 1)


async def test_unix_socket_peers_need_the_unix_entry(sock_dir: Path) -> None:
    path = str(sock_dir / "s")
    for allow, served in ((["127.0.0.1"], False), (["127.0.0.1", "unix"], True)):
        app, _ = header_app(proxy_protocol=allow)
        async with app.start(host=None, port=None, uds=path) as server:
            async with LineClient(await anyio.connect_unix(path)) as client:
                await client.send_raw(proxy_v1("192.0.2.5", "10.0.0.1", 4000, 25) + b"u\r\n")
                if served:
                    assert (await client.recv_lines(2))[1].endswith("192.0.2.5:4000 u")
                else:
                    assert await client.recv_until_closed() == b""
            if not served:
                await wait_rejected(server, 1)


async def test_an_acceptor_gets_the_header_as_a_typed_attribute() -> None:
    app: App[str, str] = App(proxy_protocol=["127.0.0.1"])
    seen: list[Any] = []

    @app.acceptor
    async def accept(stream: anyio.abc.ByteStream, remote_addr: Any) -> None:
        header = stream.extra(ProxyAttribute.header)
        seen.append((remote_addr, header))
        data = await stream.receive()
        await stream.send(f"{header.authority} {remote_addr[0]} ".encode() + data)

    header = proxy_v2("192.0.2.77", "10.0.0.1", 5555, 443, tlvs=[(0x02, b"api.test")], crc=True)
    async with app.start() as server, await connect(server.port or 0) as client:
        await client.send_raw(header + b"payload")
        assert await client.recv_until_closed() == b"api.test 192.0.2.77 payload"
    ((remote_addr, parsed),) = seen
    assert remote_addr == ("192.0.2.77", 5555)  # still (ip, port): the signature is unchanged
    assert parsed.source == remote_addr and parsed.unique_id is None


async def test_an_acceptor_never_sees_an_untrusted_peer() -> None:
    app: App[str, str] = App(proxy_protocol=["10.0.0.0/8"])
    seen: list[Any] = []

    @app.acceptor
    async def accept(stream: anyio.abc.ByteStream, remote_addr: Any) -> None:
        seen.append(remote_addr)

    async with app.start() as server:
        async with await connect(server.port or 0) as client:
            await client.send_raw(proxy_v1("192.0.2.5", "10.0.0.1", 4000, 25))
            assert await client.recv_until_closed() == b""
        await wait_rejected(server, 1)
    assert seen == []
