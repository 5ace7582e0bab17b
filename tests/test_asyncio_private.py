"""The one private asyncio API tcpkit uses (``tcpkit._asyncio_private``), and its fallback.

Run on every Python the package claims (``make test`` runs this file on each):
the private ``_make_socket_transport`` must still exist and build a working
transport on asyncio's selector loop, and a server must work just as well
through the public ``connect_accepted_socket`` when it is absent.
"""

from __future__ import annotations

import asyncio
import socket

import anyio
import pytest

from tcpkit import App, Connection, _asyncio_private

pytestmark = pytest.mark.anyio


def echo_app() -> App[str, str]:
    app: App[str, str] = App()

    @app.on_input
    def echo(conn: Connection[str, str], line: str) -> None:
        conn.put(line)

    return app


async def round_trip(app: App[str, str]) -> bytes:
    async with app.start() as server:
        assert server.port is not None
        async with await anyio.connect_tcp("127.0.0.1", server.port) as client:
            await client.send(b"ping\r\n")
            with anyio.fail_after(5):
                return await client.receive()


@pytest.mark.parametrize("anyio_backend", [("asyncio", {})], ids=["asyncio"])
async def test_the_selector_loop_still_has_its_private_transport_maker(
    anyio_backend: object,
) -> None:
    loop = asyncio.get_running_loop()
    make = _asyncio_private.socket_transport_maker(loop)
    assert make is not None, "asyncio's selector loop lost _make_socket_transport"
    left, right = socket.socketpair()
    left.setblocking(False)
    received = asyncio.Event()

    class Protocol(asyncio.Protocol):
        def data_received(self, data: bytes) -> None:
            assert data == b"hello"
            received.set()

    transport = make(left, Protocol())
    try:
        right.sendall(b"hello")
        with anyio.fail_after(5):
            await received.wait()
    finally:
        transport.close()
        await asyncio.sleep(0)
        right.close()


@pytest.mark.parametrize("anyio_backend", [("asyncio", {"use_uvloop": True})], ids=["uvloop"])
async def test_other_loops_take_the_public_path(anyio_backend: object) -> None:
    assert _asyncio_private.socket_transport_maker(asyncio.get_running_loop()) is None


@pytest.mark.parametrize("anyio_backend", [("asyncio", {})], ids=["asyncio"])
async def test_a_server_works_through_the_public_fallback(
    anyio_backend: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert await round_trip(echo_app()) == b"ping\r\n"
    import tcpkit._asyncio_stream

    monkeypatch.setattr(tcpkit._asyncio_stream, "socket_transport_maker", lambda loop: None)
    assert await round_trip(echo_app()) == b"ping\r\n"


# -- running a data callback as the connection's task ---------------------------------

ASYNCIO_LOOPS = [("asyncio", {}), ("asyncio", {"use_uvloop": True})]


@pytest.mark.parametrize("anyio_backend", ASYNCIO_LOOPS, ids=["asyncio", "uvloop"])
async def test_a_loop_callback_runs_as_the_task_that_made_it(anyio_backend: object) -> None:
    assert _asyncio_private.can_run_as_task(), "asyncio lost _enter_task/_leave_task"
    me = asyncio.current_task()
    seen: list[object] = []
    run = _asyncio_private.as_task(lambda arg: seen.append((arg, asyncio.current_task())))
    assert run is not None
    done = asyncio.Event()
    asyncio.get_running_loop().call_soon(lambda: (run("x"), done.set()))
    await done.wait()
    assert seen == [("x", me)]
    assert asyncio.current_task() is me  # (and the task is itself again)


def async_echo_app(tasks: list[object]) -> App[str, str]:
    app: App[str, str] = App()

    @app.on_input
    async def echo(conn: Connection[str, str], line: str) -> None:
        tasks.append(asyncio.current_task())
        with anyio.fail_after(5):  # a cancel scope: it needs a task
            await anyio.sleep(0)
        await conn.send(line)

    return app


@pytest.mark.parametrize("anyio_backend", ASYNCIO_LOOPS, ids=["asyncio", "uvloop"])
async def test_without_the_private_functions_async_handlers_run_in_the_task(
    anyio_backend: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    tasks: list[object] = []
    assert await round_trip(async_echo_app(tasks)) == b"ping\r\n"
    monkeypatch.setattr(_asyncio_private, "_enter_task", None)
    assert not _asyncio_private.can_run_as_task()
    assert _asyncio_private.as_task(print) is None
    assert await round_trip(async_echo_app(tasks)) == b"ping\r\n"
    assert len(tasks) == 2 and None not in tasks
