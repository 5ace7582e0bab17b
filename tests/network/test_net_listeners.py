"""Listeners: IPv4, IPv6, several addresses on one port, host names, Unix sockets, given sockets."""

from __future__ import annotations

import errno
import os
import socket
import stat
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import pytest
from helpers import LineClient
from netutil import HAS_IPV6, needs_ipv6, whoami_app

from tcpkit import App, Connection, ServerError, _binding

pytestmark = pytest.mark.anyio


async def ask(host: str, port: int, line: str = "hi") -> str:
    async with LineClient(await anyio.connect_tcp(host, port)) as client:
        await client.send(line)
        return await client.recv_line()


async def ask_unix(path: str | Path, line: str = "hi") -> str:
    async with LineClient(await anyio.connect_unix(path)) as client:
        await client.send(line)
        return await client.recv_line()


@needs_ipv6
async def test_ipv6_loopback() -> None:
    async with whoami_app().start("::1") as server:
        assert server.addresses == [("::1", server.port)]
        answer = await ask("::1", server.port or 0)
        assert answer.startswith("::1 ")


@needs_ipv6
async def test_ipv4_and_ipv6_on_one_os_picked_port() -> None:
    async with whoami_app().start(["127.0.0.1", "::1"], 0) as server:
        port = server.port
        assert port
        assert server.addresses == [("127.0.0.1", port), ("::1", port)]
        assert (await ask("127.0.0.1", port)).startswith("127.0.0.1 ")
        assert (await ask("::1", port)).startswith("::1 ")


async def test_host_name_is_resolved_once() -> None:
    async with whoami_app().start("localhost", 0) as server:
        port = server.port or 0
        hosts = {address[0] for address in server.addresses if isinstance(address, tuple)}
        assert "127.0.0.1" in hosts
        assert hosts <= {"127.0.0.1", "::1"}
        assert (await ask("127.0.0.1", port)).startswith("127.0.0.1 ")


async def test_duplicate_addresses_are_bound_once() -> None:
    async with whoami_app().start(["127.0.0.1", "127.0.0.1", "[127.0.0.1]"], 0) as server:
        assert server.addresses == [("127.0.0.1", server.port)]


async def test_unresolvable_host_is_a_clear_error() -> None:
    with pytest.raises(ServerError, match="cannot resolve"):
        async with whoami_app().start("no-such-host.invalid", 0):
            pass


@pytest.mark.parametrize("port", [-1, 65536])
async def test_bad_port_is_a_clear_error(port: int) -> None:
    with pytest.raises(ServerError, match="not a valid port"):
        async with whoami_app().start("127.0.0.1", port):
            pass


async def test_port_in_use_fails_and_leaves_nothing_bound() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        hosts = ["::1", "127.0.0.1"] if HAS_IPV6 else ["127.0.0.1"]
        with pytest.raises(ServerError, match=rf"127\.0\.0\.1:{port}: address already in use"):
            async with whoami_app().start(hosts, port):
                pass
    if HAS_IPV6:  # the [::1] socket bound before the failure was closed again
        with socket.socket(socket.AF_INET6) as again:
            again.bind(("::1", port))


async def test_reuse_port_lets_two_servers_share_a_port() -> None:
    async with whoami_app().start("127.0.0.1", 0, reuse_port=True) as first:
        port = first.port or 0
        async with whoami_app().start("127.0.0.1", port, reuse_port=True) as second:
            assert second.port == port
            assert (await ask("127.0.0.1", port)).startswith("127.0.0.1 ")


async def test_given_sockets_are_served_alone() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    port = sock.getsockname()[1]
    async with whoami_app().start(sockets=[sock]) as server:
        assert server.addresses == [("127.0.0.1", port)]
        assert (await ask("127.0.0.1", port)).startswith("127.0.0.1 ")


# -- Unix sockets ------------------------------------------------------------


async def test_unix_socket(sock_dir: Path) -> None:
    path = str(sock_dir / "app.sock")
    async with whoami_app().start(uds=path) as server:
        assert server.addresses == [path]
        assert server.port is None
        assert await ask_unix(path) == "None None hi"


async def test_unix_socket_and_tcp_together(sock_dir: Path) -> None:
    path = str(sock_dir / "both.sock")
    # ("127.0.0.1", 0) would read as the defaults, i.e. "Unix socket only" (see app.py)
    async with whoami_app().start("localhost", 0, uds=path) as server:
        assert server.addresses[-1] == path
        assert (await ask("127.0.0.1", server.port or 0)).startswith("127.0.0.1 ")
        assert await ask_unix(path) == "None None hi"


async def test_unix_socket_mode(sock_dir: Path) -> None:
    path = sock_dir / "mode.sock"
    async with whoami_app().start(uds=str(path), uds_mode=0o600):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert await ask_unix(path) == "None None hi"


async def test_stale_unix_socket_file_is_replaced(sock_dir: Path) -> None:
    path = str(sock_dir / "stale.sock")
    dead = socket.socket(socket.AF_UNIX)
    dead.bind(path)  # a file left behind by a server that died
    dead.close()
    assert os.path.exists(path)
    async with whoami_app().start(uds=path):
        assert await ask_unix(path) == "None None hi"


async def test_unix_socket_in_use_is_not_stolen(sock_dir: Path) -> None:
    path = str(sock_dir / "live.sock")
    async with whoami_app().start(uds=path):
        before = os.stat(path).st_ino
        with pytest.raises(ServerError, match="already in use"):
            async with whoami_app().start(uds=path):
                pass
        assert os.stat(path).st_ino == before
        assert await ask_unix(path) == "None None hi"  # the first server still answers


async def test_a_regular_file_is_never_replaced(sock_dir: Path) -> None:
    path = sock_dir / "precious.txt"
    path.write_text("keep me")
    with pytest.raises(ServerError, match="not a socket"):
        async with whoami_app().start(uds=str(path)):
            pass
    assert path.read_text() == "keep me"


async def test_unix_socket_file_is_removed_at_shutdown(sock_dir: Path) -> None:
    path = sock_dir / "gone.sock"
    async with whoami_app().start(uds=str(path)):
        assert path.exists()
    assert not path.exists()


# -- the port-0 retry of _binding.bind_tcp ----------------------------------


def test_os_picked_port_taken_on_another_address_is_retried(monkeypatch: Any) -> None:
    """The first address gets port P from the OS, P is taken on the second: try again."""
    real = _binding._tcp_socket
    failures = {"left": 2}

    def flaky(family: socket.AddressFamily, sockaddr: tuple[Any, ...], **kw: Any) -> Any:
        if sockaddr[0] == "127.0.0.2" and failures["left"]:
            failures["left"] -= 1
            raise OSError(errno.EADDRINUSE, os.strerror(errno.EADDRINUSE))
        return real(family, sockaddr, **kw)

    monkeypatch.setattr(_binding, "_tcp_socket", flaky)
    targets = _binding.targets(
        socket.getaddrinfo("127.0.0.1", 0, type=socket.SOCK_STREAM)
        + socket.getaddrinfo("127.0.0.2", 0, type=socket.SOCK_STREAM)
    )
    socks = _binding.bind_tcp(targets, 0)
    try:
        assert failures["left"] == 0
        ports = {s.getsockname()[1] for s in socks}
        assert len(socks) == 2 and len(ports) == 1
    finally:
        for s in socks:
            s.close()


def test_all_interfaces_is_one_dual_stack_socket(monkeypatch: Any) -> None:
    """host=None: one [::] socket with IPV6_V6ONLY off.

    Checked without binding: these tests listen on loopback addresses only.
    """
    calls: list[tuple[Any, ...]] = []

    def record(family: socket.AddressFamily, sockaddr: tuple[Any, ...], **kw: Any) -> Any:
        calls.append((family, sockaddr, kw["v6only"]))
        return None  # a stand-in for the socket

    monkeypatch.setattr(_binding, "_tcp_socket", record)
    monkeypatch.setattr(socket, "has_dualstack_ipv6", lambda: True)
    _binding.bind_all_interfaces(5000)
    assert calls == [(socket.AF_INET6, ("::", 5000, 0, 0), False)]


def test_all_interfaces_without_ipv6_is_ipv4(monkeypatch: Any) -> None:
    calls: list[tuple[Any, ...]] = []

    def record(family: socket.AddressFamily, sockaddr: tuple[Any, ...], **kw: Any) -> Any:
        calls.append((family, sockaddr))
        if family == socket.AF_INET6:
            raise OSError(errno.EAFNOSUPPORT, "IPv6 is disabled")
        return None

    monkeypatch.setattr(_binding, "_tcp_socket", record)
    monkeypatch.setattr(socket, "has_dualstack_ipv6", lambda: True)
    _binding.bind_all_interfaces(5000)
    assert calls == [(socket.AF_INET6, ("::", 5000, 0, 0)), (socket.AF_INET, ("0.0.0.0", 5000))]


def test_explicit_port_in_use_is_not_retried(monkeypatch: Any) -> None:
    calls: list[int] = []
    real = _binding._tcp_socket

    def counting(family: socket.AddressFamily, sockaddr: tuple[Any, ...], **kw: Any) -> Any:
        calls.append(sockaddr[1])
        return real(family, sockaddr, **kw)

    monkeypatch.setattr(_binding, "_tcp_socket", counting)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        targets = _binding.targets(socket.getaddrinfo("127.0.0.1", 0, type=socket.SOCK_STREAM))
        with pytest.raises(_binding.BindError) as info:
            _binding.bind_tcp(targets, port)
    assert calls == [port]
    assert info.value.where == f"127.0.0.1:{port}"
    assert str(info.value) == f"cannot listen on 127.0.0.1:{port}: address already in use"


async def backlog_clients(port: int, n: int) -> list[LineClient]:
    """``n`` clients connected with blocking calls: all of them wait in the
    backlog before the server runs again, so it can accept them in one go."""
    socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(n)]
    clients: list[LineClient] = []
    for sock in socks:
        sock.setblocking(False)
        clients.append(LineClient(await anyio.abc.SocketStream.from_socket(sock)))
    return clients


async def test_connection_ids_follow_the_order_of_accept() -> None:
    """Clients that connect one after the other get ids 1, 2, 3... even when the
    server accepts them in one batch and the backend starts their tasks in any
    order (trio shuffles)."""
    app: App[str, str] = App()

    @app.on_connect
    def hello(conn: Connection[str, str]) -> None:
        conn.put(str(conn.id))

    async with app.start() as server:
        clients = await backlog_clients(server.port or 0, 30)
        try:
            assert [await client.recv_line() for client in clients] == [
                str(i) for i in range(1, 31)
            ]
        finally:
            for client in clients:
                await client.aclose()


async def test_clients_waiting_for_a_slot_are_served_in_order_or_closed_at_shutdown() -> None:
    """With max_connections, clients beyond it wait (in the kernel's backlog, or
    accepted in one batch where making a transport waits a loop turn, as on
    uvloop): they are served in order as slots free up, and closed unserved
    (never leaked) when the server stops."""
    app: App[str, str] = App(max_connections=1)

    @app.on_connect
    def hello(conn: Connection[str, str]) -> None:
        conn.put(f"hello {conn.id}")

    async with app.start() as server:
        clients = await backlog_clients(server.port or 0, 6)
        try:
            for expected in ("hello 1", "hello 2"):
                client = clients.pop(0)
                assert await client.recv_line() == expected
                await client.aclose()  # frees the slot for the next one
            assert await clients[0].recv_line() == "hello 3"
            await server.shutdown(grace=0)
            assert [await client.recv_until_closed() for client in clients[1:]] == [b""] * 3
        finally:
            for client in clients:
                await client.aclose()
