"""TCP options on accepted sockets: ``tcp_nodelay`` (on by default) and ``tcp_keepalive``.

Read back with ``getsockopt`` on the server's side of the connection
(``conn.stream.extra(SocketAttribute.raw_socket)``), on every backend.
"""

from __future__ import annotations

import socket
import sys
from typing import Any

import anyio
import pytest
from anyio.abc import SocketAttribute
from helpers import LineClient

from tcpkit import App, Connection
from tcpkit.runconfig import RunConfig, app_overrides

needs_linux = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="TCP_KEEPIDLE/KEEPINTVL/KEEPCNT are Linux's"
)


def sockopt_app(**options: Any) -> App[str, str]:
    """Answers with the server socket's NODELAY KEEPALIVE KEEPIDLE KEEPINTVL KEEPCNT."""
    app: App[str, str] = App(**options)

    @app.on_input
    def answer(conn: Connection[str, str], line: str) -> None:
        sock = conn.stream.extra(SocketAttribute.raw_socket)
        values = [
            sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY),
            sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
        ]
        if sys.platform.startswith("linux"):
            values += [
                sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
                sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL),
                sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT),
            ]
        conn.put(" ".join("1" if i < 2 and v else str(v) for i, v in enumerate(values)))

    return app


async def ask(app: App[str, str]) -> list[str]:
    async with (
        app.start() as server,
        LineClient(await anyio.connect_tcp("127.0.0.1", server.port or 0)) as client,
    ):
        await client.send("?")
        return (await client.recv_line()).split()


@pytest.mark.anyio
async def test_defaults_nodelay_on_keepalive_left_to_the_os() -> None:
    nodelay, keepalive = (await ask(sockopt_app()))[:2]
    assert nodelay == "1"
    assert keepalive == "0"


@pytest.mark.anyio
async def test_nodelay_can_be_turned_off() -> None:
    # (uvloop sets TCP_NODELAY on every TCP transport it makes: it is turned off again)
    assert (await ask(sockopt_app(tcp_nodelay=False)))[0] == "0"


@pytest.mark.anyio
async def test_nodelay_off_on_a_given_socket_made_with_ipproto_tcp() -> None:
    """asyncio and uvloop turn TCP_NODELAY on for such sockets (systemd's, --fd, --workers)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    app = sockopt_app(tcp_nodelay=False)
    async with (
        app.start(host=None, port=None, sockets=[sock]) as server,
        LineClient(await anyio.connect_tcp("127.0.0.1", server.port or 0)) as client,
    ):
        await client.send("?")
        assert (await client.recv_line()).split()[0] == "0"


@needs_linux
@pytest.mark.anyio
async def test_keepalive_sets_idle_interval_and_count() -> None:
    assert (await ask(sockopt_app(tcp_keepalive=30)))[1:] == ["1", "30", "10", "3"]
    assert (await ask(sockopt_app(tcp_keepalive=2)))[1:] == ["1", "2", "1", "3"]


def test_keepalive_is_validated() -> None:
    for bad in (0, -5, 32768):
        with pytest.raises(ValueError, match="tcp_keepalive"):
            App(tcp_keepalive=bad)
    for wrong in (1.5, "30", True):
        with pytest.raises(TypeError, match="tcp_keepalive"):
            App(tcp_keepalive=wrong)  # type: ignore[arg-type]


def test_flags_map_to_app_options() -> None:
    config = RunConfig(app="x:app", tcp_nodelay=False, tcp_keepalive=60)
    assert app_overrides(config) == {"tcp_nodelay": False, "tcp_keepalive": 60}
    assert app_overrides(RunConfig(app="x:app", tcp_keepalive=0)) == {"tcp_keepalive": None}
    assert app_overrides(RunConfig(app="x:app")) == {}
