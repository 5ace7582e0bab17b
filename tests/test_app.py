"""The App over real loopback sockets: handlers, ordering, containment (every backend)."""

from __future__ import annotations

import logging
from typing import Any

import anyio
import pytest
from helpers import LineClient

from tcpkit import App, Connection, FrameTooLarge, Lines, RegistrationError

pytestmark = pytest.mark.anyio


def echo_app(**options: Any) -> App[str, str]:
    app = App(**options)

    @app.on_input
    async def echo(conn: Connection[str, str], line: str) -> None:
        await conn.send(line)

    return app


async def test_echo_round_trip_crlf_out() -> None:
    app = echo_app()
    async with app.start() as server, await LineClient.connect(server.port or 0) as client:
        await client.send_raw(b"one\ntwo\r\nthree\n")
        with anyio.fail_after(5):
            while client.buffer.count(b"\n") < 3:
                client.buffer += await client.stream.receive()
        assert client.buffer == b"one\r\ntwo\r\nthree\r\n"


async def test_rot13_example_banner_and_lines() -> None:
    from examples.rot13 import app

    async with app.start() as server, await LineClient.connect(server.port or 0) as client:
        assert await client.recv_line() == "Smile from the server!"
        await client.send("Hello, world", "abc XYZ")
        assert await client.recv_lines(2) == ["Uryyb, jbeyq", "nop KLM"]


async def test_sync_and_async_handlers_both_work() -> None:
    app = App()
    seen: list[str] = []

    @app.on_connect
    async def hello(conn: Connection[str, str]) -> None:
        await conn.send("hello")

    @app.on_input
    def shout(conn: Connection[str, str], line: str) -> None:
        seen.append(line)
        conn.put(line.upper())

    @app.on_disconnect
    async def gone(conn: Connection[str, str]) -> None:
        seen.append("gone")

    async with app.start() as server:
        async with await LineClient.connect(server.port or 0) as client:
            assert await client.recv_line() == "hello"
            await client.send("a", "b")
            assert await client.recv_lines(2) == ["A", "B"]
        with anyio.fail_after(5):
            while "gone" not in seen:
                await anyio.sleep(0.01)
    assert seen == ["a", "b", "gone"]


async def test_200_concurrent_clients_get_their_own_answers_in_order() -> None:
    app = App()

    @app.on_input
    def answer(conn: Connection[str, str], line: str) -> None:
        conn.put(f"{conn.id}:{line}")

    results: dict[int, list[str]] = {}

    async def client_task(n: int, port: int) -> None:
        async with await LineClient.connect(port) as client:
            lines = [f"c{n}-m{i}" for i in range(20)]
            await client.send(*lines[:10])
            await client.send(*lines[10:])
            got = await client.recv_lines(20, timeout=30)
            ids = {g.split(":", 1)[0] for g in got}
            assert len(ids) == 1
            results[n] = [g.split(":", 1)[1] for g in got]

    async with app.start() as server, anyio.create_task_group() as tg:
        for n in range(200):
            tg.start_soon(client_task, n, server.port)
    assert len(results) == 200
    for n, got in results.items():
        assert got == [f"c{n}-m{i}" for i in range(20)]


async def test_oversized_line_closes_only_its_connection(caplog: pytest.LogCaptureFixture) -> None:
    app = echo_app(codec=Lines(max_length=100))
    errors: list[BaseException] = []

    @app.on_error
    def on_error(conn: Connection[str, str], exc: Exception) -> None:
        errors.append(exc)

    async with (
        app.start() as server,
        await LineClient.connect(server.port or 0) as good,
        await LineClient.connect(server.port or 0) as bad,
    ):
        await good.send("before")
        assert await good.recv_line() == "before"
        await bad.send("ok")
        assert await bad.recv_line() == "ok"
        await bad.send_raw(b"x" * 5000)
        assert await bad.recv_until_closed() == b""
        await good.send("after")
        assert await good.recv_line() == "after"
    assert len(errors) == 1
    assert isinstance(errors[0], FrameTooLarge)


async def test_handler_exception_is_contained(caplog: pytest.LogCaptureFixture) -> None:
    app = App()

    @app.on_input
    def handle(conn: Connection[str, str], line: str) -> None:
        if line == "boom":
            raise RuntimeError("handler bug")
        conn.put(line)

    caplog.set_level(logging.ERROR, logger="tcpkit.connection")
    async with app.start() as server:
        clients = [await LineClient.connect(server.port or 0) for _ in range(3)]
        try:
            await clients[0].send("hi", "boom", "never")
            assert await clients[0].recv_line() == "hi"
            assert await clients[0].recv_until_closed() == b""
            for client in clients[1:]:
                await client.send("still here")
                assert await client.recv_line() == "still here"
            async with await LineClient.connect(server.port or 0) as late:
                await late.send("new")
                assert await late.recv_line() == "new"
        finally:
            for client in clients:
                await client.aclose()
    assert any("handler bug" in str(r.exc_info[1]) for r in caplog.records if r.exc_info)
    assert server.stats.errors == 1


async def test_on_disconnect_runs_exactly_once_per_connection() -> None:
    app = App()
    disconnected: list[int] = []

    @app.on_input
    def handle(conn: Connection[str, str], line: str) -> None:
        if line == "quit":
            conn.shutdown()
        elif line == "boom":
            raise ValueError("x")
        elif line == "close":
            conn.close()

    @app.on_disconnect
    def gone(conn: Connection[str, str]) -> None:
        disconnected.append(conn.id)

    async with app.start() as server:
        port = server.port or 0
        for command in ("quit", "boom", "close"):
            async with await LineClient.connect(port) as client:
                await client.send(command)
                await client.recv_until_closed()
        async with await LineClient.connect(port) as client:  # the client leaves
            await client.send("hello")
        idle = await LineClient.connect(port)  # the server shuts down under it
        with anyio.fail_after(5):
            while server.connection_count:
                if len(disconnected) == 4 and server.connection_count == 1:
                    break
                await anyio.sleep(0.01)
    await idle.aclose()
    assert sorted(disconnected) == sorted(set(disconnected))
    assert len(disconnected) == 5


async def test_pre_connect_reject_and_accept() -> None:
    app = echo_app()
    connected: list[int] = []

    @app.pre_connect
    def gate(conn: Connection[str, str], stream: object) -> bool:
        assert conn.remote_ip == "127.0.0.1"
        return conn.id % 2 == 0

    @app.on_connect
    def hello(conn: Connection[str, str]) -> None:
        connected.append(conn.id)

    async with app.start() as server:
        async with await LineClient.connect(server.port or 0) as first:  # id 1: rejected
            assert await first.recv_until_closed() == b""
        async with await LineClient.connect(server.port or 0) as second:  # id 2: accepted
            await second.send("yes")
            assert await second.recv_line() == "yes"
    assert connected == [2]
    assert server.stats.rejected == 1


async def test_started_and_stopped_handlers_with_args() -> None:
    app = App(listener_args=("L", 1), client_args=("C", 2))
    events: list[Any] = []

    @app.on_started
    def started(server: Any, *args: Any) -> None:
        events.append(("started", server.port is not None, args))

    @app.on_connect
    def connected(conn: Connection[str, str], *args: Any) -> None:
        events.append(("connect", args, conn.args))
        conn.put("hi")

    @app.on_stopped
    async def stopped(server: Any) -> None:
        events.append(("stopped", server.connection_count))

    async with app.start() as server, await LineClient.connect(server.port or 0) as client:
        assert await client.recv_line() == "hi"
    assert events == [
        ("started", True, ("L", 1)),
        ("connect", ("C", 2), ("C", 2)),
        ("stopped", 0),
    ]


async def test_registration_is_frozen_once_serving() -> None:
    app = echo_app()
    async with app.start():
        with pytest.raises(RegistrationError, match="already serving"):
            app.add_on_connect(lambda conn: None)


def test_acceptor_and_on_input_are_exclusive() -> None:
    app = echo_app()
    with pytest.raises(RegistrationError, match="mutually exclusive"):

        @app.acceptor
        def accept(stream: object, addr: object) -> None:
            pass


def test_decorators_return_the_function_unchanged() -> None:
    app: App[str, str] = App()

    def f(conn: Connection[str, str], line: str) -> None:
        pass

    assert app.on_input(f) is f
    for name in ("on_connect", "on_disconnect", "on_error", "on_flushed", "pre_connect"):
        g = lambda *a: None  # noqa: E731
        assert getattr(app, name)(g) is g
    h = lambda *a: None  # noqa: E731
    assert app.on_event("tick")(h) is h
    with pytest.raises(RegistrationError, match="already registered"):
        app.add_on_input(f)


async def test_server_addresses_and_port() -> None:
    app = echo_app()
    async with app.start(port=0) as server:
        assert server.port is not None and server.port > 0
        assert server.addresses == [("127.0.0.1", server.port)]
        assert server.name == "tcpkit"


async def test_exception_in_start_block_propagates_unwrapped() -> None:
    app = echo_app()
    with pytest.raises(KeyError, match="from the body"):
        async with app.start():
            raise KeyError("from the body")


async def test_uds_alone_unless_a_tcp_address_is_given_too(tmp_path: Any) -> None:
    app = echo_app()
    path = str(tmp_path / "s.sock")
    async with app.start(uds=path) as server:
        assert server.addresses == [path]
    async with app.start("127.0.0.1", 0, uds=path) as server:
        assert server.addresses == [("127.0.0.1", server.port), path]


@pytest.mark.parametrize(
    "other", ["pre_connect", "on_connect", "on_input", "on_disconnect", "on_error", "on_flushed"]
)
def test_an_acceptor_refuses_every_handler_it_would_leave_uncalled(other: str) -> None:
    def acceptor(stream: object, addr: object) -> None:
        pass

    def other_handler(*args: object) -> None:
        pass

    first: App[str, str] = App()
    first.add_acceptor(acceptor)
    with pytest.raises(RegistrationError, match=f"acceptor and {other} are mutually exclusive"):
        getattr(first, f"add_{other}")(other_handler)
    second: App[str, str] = App()
    getattr(second, f"add_{other}")(other_handler)
    with pytest.raises(RegistrationError, match=f"acceptor and {other} are mutually exclusive"):
        second.add_acceptor(acceptor)


def test_an_acceptor_refuses_custom_events_either_way() -> None:
    first: App[str, str] = App()
    first.add_acceptor(lambda stream, addr: None)
    with pytest.raises(RegistrationError, match="mutually exclusive"):
        first.add_on_event("tick", lambda conn: None)
    second: App[str, str] = App()
    second.add_on_event("tick", lambda conn: None)
    with pytest.raises(RegistrationError, match=r"acceptor and on_event\('tick'\)"):
        second.add_acceptor(lambda stream, addr: None)
