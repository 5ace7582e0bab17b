"""``await server.shutdown()`` from inside a handler, and ``server.post``'s rule.

POE programs post ``shutdown`` to the server from ClientDisconnected, or on a
"quit" command. From any handler the shutdown must complete: the calling
connection ends once its handler returns, ``on_stopped`` runs last, and the
serving block (``app.start()``/``serve()``) exits.
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from pathclient import SocketClient
from pathharness import Harness
from pathmatrix import Path, matrix, per_backend

from tcpkit import Connection, RegistrationError, Server

pytestmark = pytest.mark.anyio


async def stopped_or_abort(h: Harness, server: Server[Any, Any]) -> None:
    """Wait (bounded) for on_stopped; on a timeout abort every connection, so the block exits."""
    try:
        await h.wait_until("on_stopped", lambda: "stopped" in h.rec.log)
    except TimeoutError:
        server.abort()
        raise


async def bounded_shutdown(h: Harness, conn: Connection[str, str]) -> None:
    """``await conn.server.shutdown()``, given up (and noted) after half the client timeout.

    So that a shutdown that never returns fails the check at once (the check
    waits a whole timeout for the note) instead of holding the handler and
    its connection until the block ends.
    """
    with anyio.move_on_after(h.timeout / 2) as scope:
        await conn.server.shutdown()
    h.rec.note("shutdown hung" if scope.cancelled_caught else "shutdown returned")


def returned(h: Harness) -> bool:
    return "shutdown returned" in h.rec.log or "shutdown hung" in h.rec.log


def record_stopped(h: Harness) -> Any:
    def on_stopped(server: Server[Any, Any]) -> None:
        h.rec.note("stopped")

    return on_stopped


def quit_app(h: Harness) -> Any:
    """An app whose "quit" command awaits ``conn.server.shutdown()``."""

    async def quit_command(conn: Connection[str, str], line: str) -> None:
        conn.put("bye")
        h.rec.note("shutdown called")
        await bounded_shutdown(h, conn)

    app = h.app(on_disconnect=h.handler(lambda conn: h.rec.note("disconnected")))
    app.add_on_stopped(record_stopped(h))
    app.add_on_input(h.async_handler(quit_command))
    return app


@matrix(lambda p: p.is_async)
async def test_server_shutdown_awaited_in_on_input_completes(path: Path, h: Harness) -> None:
    app = quit_app(h)
    async with h.serve(app) as served:
        client = await served.connect()
        await client.send_lines("quit")
        await h.wait_until("shutdown() in on_input", lambda: returned(h))
        assert "shutdown returned" in h.rec.log, h.rec
        lines, _ = await client.recv_lines_until_closed()
        await stopped_or_abort(h, served.server)
    assert lines == ["bye"]
    assert h.rec.log == ["shutdown called", "shutdown returned", "disconnected", "stopped"]
    assert h.rec.errors == []


@matrix(lambda p: p.is_async)
async def test_server_shutdown_awaited_in_on_disconnect_completes(path: Path, h: Harness) -> None:
    async def shut_down(conn: Connection[str, str]) -> None:
        h.rec.note("disconnected")
        await bounded_shutdown(h, conn)

    app = h.app(on_disconnect=h.async_handler(shut_down))
    app.add_on_stopped(record_stopped(h))
    app.add_on_input(h.handler(lambda conn, line: conn.put(f"re:{line}"), "echo"))
    async with h.serve(app) as served:
        client = await served.connect()
        await client.send_lines("hello")
        assert await client.recv_lines(1) == ["re:hello"]
        await client.aclose()
        await h.wait_until("shutdown() in on_disconnect", lambda: returned(h))
        assert "shutdown returned" in h.rec.log, h.rec
        await stopped_or_abort(h, served.server)
    assert h.rec.log == ["disconnected", "shutdown returned", "stopped"]
    assert h.rec.errors == []


@per_backend()
async def test_serve_returns_after_a_shutdown_awaited_in_on_input(path: Path, h: Harness) -> None:
    app = quit_app(h)
    serve_returned = anyio.Event()

    async def serve(*, task_status: Any) -> None:
        await app.serve("127.0.0.1", 0, drain_timeout=1, task_status=task_status)
        serve_returned.set()

    async with anyio.create_task_group() as tg:
        server: Server[str, str] = await tg.start(serve)
        client = await SocketClient.connect(server.addresses[0], timeout=h.timeout)  # type: ignore[arg-type]
        try:
            await client.send_lines("quit")
            await h.wait_until("shutdown() in on_input", lambda: returned(h))
            assert "shutdown returned" in h.rec.log, h.rec
            assert (await client.recv_lines_until_closed())[0] == ["bye"]
            with anyio.move_on_after(h.timeout):
                await serve_returned.wait()
            assert serve_returned.is_set(), f"serve() did not return (observed: {h.rec})"
        except BaseException:
            server.abort()
            tg.cancel_scope.cancel()
            raise
        finally:
            await client.aclose()
    assert h.rec.log == ["shutdown called", "shutdown returned", "disconnected", "stopped"]


@per_backend()
async def test_post_returns_false_for_a_missing_connection_and_refuses_an_unknown_event(
    path: Path, h: Harness
) -> None:
    """One rule for ``server.post``: a missing connection is ``False``, a missing handler raises.

    The handler is looked up first, as ``conn.emit`` does: an event nobody
    registered is a programming error (``RegistrationError``) whether or not
    the connection is still there; a known event for a connection that has
    gone is ``False`` (it happens in every server: clients leave).
    """
    app = h.app()
    app.add_on_event("known", h.handler(lambda conn: conn.put("known"), "known"))
    app.add_on_input(h.handler(lambda conn, line: conn.put(f"re:{line}"), "echo"))
    async with h.serve(app) as served:
        client = await served.connect()
        await client.send_lines("hello")
        assert await client.recv_lines(1) == ["re:hello"]
        server = served.server
        (conn,) = server.connections
        missing = conn.id + 1000
        assert server.post(conn.id, "known") is True
        assert await client.recv_lines(1) == ["known"]
        assert server.post(missing, "known") is False
        with pytest.raises(RegistrationError):
            server.post(conn.id, "unknown")
        with pytest.raises(RegistrationError):
            server.post(missing, "unknown")
