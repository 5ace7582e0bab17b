"""``await server.shutdown()`` from inside a handler completes, and ``server.post``'s one rule.

POE servers often post ``shutdown`` to the server from ClientDisconnected, or
on a "quit" command in ClientInput. Awaiting ``conn.server.shutdown()`` there
must not wait for the calling connection itself: it returns once the other
connections have ended, the calling connection ends after its handler
returns, ``on_stopped`` runs last, and ``serve()`` returns.
"""

from __future__ import annotations

import functools
from typing import Any

import anyio
import pytest
from helpers import LineClient

from tcpkit import App, Connection, RegistrationError, Server

pytestmark = pytest.mark.anyio


def quitting_app(where: str) -> tuple[App[str, str], list[str]]:
    app: App[str, str] = App()
    log: list[str] = []

    @app.on_input
    async def handle(conn: Connection[str, str], line: str) -> None:
        if line == "quit" and where == "on_input":
            conn.put("bye")
            await conn.server.shutdown()
            log.append("shutdown returned")
            return
        if line == "quit":
            conn.shutdown()
            return
        await conn.send(line)

    @app.on_disconnect
    async def gone(conn: Connection[str, str]) -> None:
        log.append(f"disconnected {conn.id}")
        if where == "on_disconnect":
            await conn.server.shutdown()
            log.append("shutdown returned")

    @app.on_stopped
    def stopped(server: Server[str, str]) -> None:
        log.append("stopped")

    return app, log


@pytest.mark.parametrize("where", ["on_input", "on_disconnect"])
async def test_shutdown_awaited_in_a_handler_completes_and_serve_returns(where: str) -> None:
    app, log = quitting_app(where)
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            server: Server[str, str] = await tg.start(functools.partial(app.serve, port=0))
            assert server.port is not None
            async with await LineClient.connect(server.port) as client:
                await client.send("hi")
                assert await client.recv_line() == "hi"
                await client.send("quit")
                rest = await client.recv_until_closed()
            assert rest == (b"bye\r\n" if where == "on_input" else b"")
        # serve() returned: the task group could finish.
    assert log[-1] == "stopped"
    assert "shutdown returned" in log
    assert "disconnected 1" in log


async def test_shutdown_from_a_handler_waits_for_the_other_connections() -> None:
    app: App[str, str] = App()
    order: list[str] = []

    @app.on_input
    async def handle(conn: Connection[str, str], line: str) -> None:
        if line == "quit":
            await conn.server.shutdown()
            order.append(f"shutdown returned in #{conn.id}")
            return
        conn.put(line)

    @app.on_disconnect
    def gone(conn: Connection[str, str]) -> None:
        order.append(f"disconnected #{conn.id}")

    @app.on_stopped
    def stopped(server: Server[str, str]) -> None:
        order.append("stopped")

    with anyio.fail_after(10):
        async with app.start() as server:
            assert server.port is not None
            other = await LineClient.connect(server.port)
            quitter = await LineClient.connect(server.port)
            await other.send("one")
            assert await other.recv_line() == "one"
            await quitter.send("quit")
            # The listener is closed at once; the other client still talks...
            await other.send("two")
            assert await other.recv_line() == "two"
            await other.aclose()  # ...until it leaves: then the shutdown returns
            assert await quitter.recv_until_closed() == b""
            await quitter.aclose()
            await server.wait_stopped()
    assert order == ["disconnected #1", "shutdown returned in #2", "disconnected #2", "stopped"]


async def test_post_to_a_missing_connection_returns_false_and_an_unknown_event_raises() -> None:
    app: App[str, str] = App()
    got: list[Any] = []
    noted = anyio.Event()

    @app.on_event("note")
    def note(conn: Connection[str, str], text: str) -> None:
        got.append(text)
        noted.set()

    @app.on_connect
    def hello(conn: Connection[str, str]) -> None:
        conn.put("hello")

    async with app.start() as server:
        assert server.port is not None
        async with await LineClient.connect(server.port) as client:
            assert await client.recv_line() == "hello"
            (conn,) = server.connections
            assert server.post(conn.id, "note", "live") is True
            assert server.post(9999, "note", "nobody") is False
            with pytest.raises(RegistrationError, match="nope"):
                server.post(conn.id, "nope")
            with pytest.raises(RegistrationError, match="nope"):
                server.post(9999, "nope")  # the same rule for a missing connection
            with pytest.raises(RegistrationError, match="nope"):
                conn.emit("nope")
            with anyio.fail_after(5):
                await noted.wait()
    assert got == ["live"]
