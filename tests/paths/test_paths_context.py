"""Context on every path: a connection's handlers share its context variables and its task.

Wherever a handler runs (the connection's task, or the transport's data
callback on the inline path), it sees the context variables the connection's
earlier handlers set, and none of another connection's. On asyncio, every
``async def`` handler runs as the connection's task (``asyncio.current_task()``),
so anyio cancel scopes and ``asyncio.timeout`` in a handler behave as in the
task; a ``def`` handler of a connection that waits for input without a task
runs as no task, as a Protocol callback does.
"""

from __future__ import annotations

import asyncio
import contextvars
import sys

import anyio
import pytest
from pathharness import Harness
from pathmatrix import Path, matrix

from tcpkit import Connection

pytestmark = pytest.mark.anyio

seen: contextvars.ContextVar[str] = contextvars.ContextVar("seen", default="unset")


@matrix()
async def test_handlers_see_the_context_variables_their_connection_set(
    path: Path, h: Harness
) -> None:
    disconnected: list[str] = []

    def connect(conn: Connection[str, str]) -> None:
        seen.set("connect")

    def handle(conn: Connection[str, str], line: str) -> None:
        conn.put(f"{line}:{seen.get()}")
        seen.set(line)

    def disconnect(conn: Connection[str, str]) -> None:
        disconnected.append(seen.get())
        h.rec.note()

    app = h.app(on_disconnect=h.handler(disconnect, "on_disconnect"))
    app.add_on_connect(h.handler(connect, "on_connect"))
    app.add_on_input(h.handler(handle))
    async with h.serve(app) as served:
        first = await served.connect()
        second = await served.connect()
        await first.send_lines("x1")
        assert await first.recv_lines(1) == ["x1:connect"]
        await second.send_lines("y1")  # another connection: its own variables
        assert await second.recv_lines(1) == ["y1:connect"]
        await first.send_lines("x2", "x3")  # one read, two messages
        assert await first.recv_lines(2) == ["x2:x1", "x3:x2"]
        await first.aclose()
        await second.aclose()
        await h.wait_until("both disconnected", lambda: len(disconnected) == 2)
    assert sorted(disconnected) == ["x3", "y1"]
    assert h.rec.errors == []


@matrix(lambda p: p.backend != "trio" and p.is_async)
async def test_async_handlers_run_as_the_connections_task_on_asyncio(
    path: Path, h: Harness
) -> None:
    """``async def`` handlers run as the connection's one task, inline or not."""
    tasks: dict[str, object] = {}

    async def connect(conn: Connection[str, str]) -> None:
        tasks["connect"] = asyncio.current_task()

    async def handle(conn: Connection[str, str], line: str) -> None:
        tasks[line] = asyncio.current_task()
        conn.put(line)

    app = h.app()
    app.add_on_connect(h.async_handler(connect, "on_connect"))
    app.add_on_input(h.async_handler(handle))
    async with h.serve(app) as served:
        client = await served.connect()
        await client.send_lines("a")
        assert await client.recv_lines(1) == ["a"]
        await client.send_lines("b")
        assert await client.recv_lines(1) == ["b"]
    assert tasks["connect"] is not None
    assert tasks["a"] is tasks["connect"] and tasks["b"] is tasks["connect"]


@matrix(lambda p: p.backend != "trio" and not p.is_async)
async def test_def_handlers_of_a_waiting_connection_run_as_no_task_on_asyncio(
    path: Path, h: Harness
) -> None:
    """A connection with ``def`` handlers waits for input without a task where the
    transport allows (a socket): its handlers run in the loop's callback then, as
    a hand-written Protocol's do; elsewhere (TLS, in-memory) in its task."""
    tasks: dict[str, object] = {}

    def handle(conn: Connection[str, str], line: str) -> None:
        tasks[line] = asyncio.current_task()
        conn.put(line)

    app = h.app()
    app.add_on_input(h.handler(handle))
    async with h.serve(app) as served:
        client = await served.connect()
        for line in ("a", "b"):
            await client.send_lines(line)
            assert await client.recv_lines(1) == [line]
    if path.parks:  # ("a" may have come before the connection parked: uvloop's accept)
        assert tasks["b"] is None
    else:
        assert tasks["a"] is not None and tasks["a"] is tasks["b"]


@matrix(lambda p: p.is_async)
async def test_cancel_scopes_in_a_handler_cancel_only_what_they_cover(
    path: Path, h: Harness
) -> None:
    async def handle(conn: Connection[str, str], line: str) -> None:
        if line == "move-on":
            with anyio.move_on_after(0):  # already expired: the sleep is cancelled
                await anyio.sleep(10)
                conn.put("not cancelled")
        elif line == "fail-after":
            with anyio.fail_after(5):
                await anyio.sleep(0)
        elif line == "timeout" and path.backend != "trio" and sys.version_info >= (3, 11):
            try:
                async with asyncio.timeout(0):
                    await asyncio.sleep(10)
            except TimeoutError:
                conn.put("timed out")
        await conn.send(f"done:{line}")

    app = h.app()
    app.add_on_input(h.async_handler(handle))
    async with h.serve(app) as served:
        client = await served.connect()
        for line in ("move-on", "fail-after", "timeout", "after"):
            await client.send_lines(line)
        expected = ["done:move-on", "done:fail-after"]
        if path.backend != "trio" and sys.version_info >= (3, 11):
            expected.append("timed out")
        expected += ["done:timeout", "done:after"]
        assert await client.recv_lines(len(expected)) == expected
    assert h.rec.errors == []
