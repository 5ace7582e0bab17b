"""A connection that has ended is freed at once (every backend).

Found by the chaos soak: on asyncio, a timer that a connection's task armed
and cancelled (its end's 5 s bound on ``on_error`` and ``on_disconnect``)
stays in the loop's queue until its deadline whenever another timer is due
first (as on any busy server), and a cancelled asyncio timer keeps the
``contextvars`` context it was armed in. That context held the connection
(``current_connection``): every connection that ended in an error, or had an
``on_disconnect``, outlived its end by 5 s, with its buffers and the
traceback of its error (25 MB of RSS at a few hundred connections a second).
"""

from __future__ import annotations

import gc
import socket
import struct
import weakref
from typing import Any

import anyio
import pytest

from tcpkit import App, Connection, Lines, Server

pytestmark = pytest.mark.anyio

ENDS = ["reset while the server writes", "close with on_disconnect", "close"]


def client(port: int, end: str) -> None:
    """One client: a line and its echo, then ``end``."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"hi\n")
        assert sock.recv(16) == b"hi\r\n"
        if end == "reset while the server writes":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.settimeout(0.2)
            try:
                while True:  # until every buffer is full: the server is blocked writing
                    sock.sendall(b"x" * 1000 + b"\n")
            except TimeoutError:
                pass
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def alive(server: Server[str, str]) -> list[Connection[Any, Any]]:
    """The connections of ``server`` that are still in memory (after a collection)."""
    gc.collect()
    conns: list[Connection[Any, Any]] = [o for o in gc.get_objects() if isinstance(o, Connection)]
    return [conn for conn in conns if conn.server is server]


@pytest.mark.parametrize("end", ENDS)
async def test_a_connection_is_freed_once_it_has_ended(end: str) -> None:
    app: App[str, str] = App(codec=Lines())
    errors: list[str] = []

    @app.on_input
    def echo(conn: Connection[str, str], line: str) -> None:
        conn.put(line)

    @app.on_error
    def on_error(conn: Connection[str, str], exc: Exception) -> None:
        errors.append(type(exc).__name__)

    if end == "close with on_disconnect":
        app.add_on_disconnect(lambda conn: None)
    async with app.start() as server, anyio.create_task_group() as tg:
        # Another timer, due before any the connection's end arms (its deadlines are
        # at least 5 s away): as on any server with other connections or time limits.
        tg.start_soon(anyio.sleep, 4.5)
        await anyio.to_thread.run_sync(client, server.port or 0, end)
        with anyio.fail_after(10):
            while server.connection_count:
                await anyio.sleep(0.01)
        assert alive(server) == []
        assert server.stats.total == 1
        if end == "reset while the server writes":
            assert errors != []  # (the reset was seen: the connection ended in an error)
        tg.cancel_scope.cancel()


def lines_client(port: int, close_first: bool) -> None:
    """A line and its echo; then the client closes (or sends ``bye``, and the server does)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"hi\n")
        assert sock.recv(16) == b"hi\r\n"
        if not close_first:
            sock.sendall(b"bye\n")
            assert sock.recv(16) == b""  # the server closed


@pytest.mark.parametrize("kind", ["def", "async def"])
@pytest.mark.parametrize("close_first", [True, False], ids=["client-closes", "server-closes"])
async def test_an_ended_connection_is_freed_without_the_cycle_collector(
    kind: str, close_first: bool
) -> None:
    # A connection, its session and its driver refer to each other while it runs;
    # once it has ended nothing is left in a cycle, so reference counting frees it
    # (a server that the cycle collector had to clean up after paid for it: about
    # 40 objects per connection, and collections that traverse them).
    app: App[str, str] = App(codec=Lines())
    refs: list[weakref.ref[Connection[str, str]]] = []
    app.add_on_connect(lambda conn: refs.append(weakref.ref(conn)))

    def answer(conn: Connection[str, str], line: str) -> None:
        if line == "bye":
            conn.shutdown()
        else:
            conn.put(line)

    if kind == "def":
        app.add_on_input(answer)
    else:

        async def answer_async(conn: Connection[str, str], line: str) -> None:
            answer(conn, line)

        app.add_on_input(answer_async)
    async with app.start() as server:
        gc.collect()
        gc.disable()
        try:
            await anyio.to_thread.run_sync(lines_client, server.port or 0, close_first)
            with anyio.fail_after(10):
                while server.connection_count:
                    await anyio.sleep(0.01)
            await anyio.sleep(0.01)  # (the connection's task has returned)
            assert len(refs) == 1
            assert refs[0]() is None
        finally:
            gc.enable()
