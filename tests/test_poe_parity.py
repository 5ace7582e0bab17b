"""One test per row of POE::Component::Server::TCP's manual: parameters, events, HEAP.

Each test is named after the POE name it proves (``test_poe_<name>_...``); the
"Coming from POE" docs page links here. Every test runs over real loopback
sockets on asyncio, uvloop and trio.
"""

from __future__ import annotations

import logging
import socket
from typing import Any

import anyio
import anyio.abc
import pytest
from helpers import LineClient

from tcpkit import (
    App,
    Connection,
    ConnectionClosed,
    Lines,
    Raw,
    RegistrationError,
    Server,
    ServerError,
    WriteBufferFull,
)

pytestmark = pytest.mark.anyio


async def wait_for(predicate: Any, timeout: float = 5) -> None:
    """Poll a condition on the server side (bounded); no sleeps as synchronisation."""
    with anyio.fail_after(timeout):
        while not predicate():
            await anyio.sleep(0.005)


def banner_app(**options: Any) -> App[str, str]:
    app = App(**options)

    @app.on_connect
    def hello(conn: Connection[str, str]) -> None:
        conn.put(f"hello {conn.id}")

    @app.on_input
    def echo(conn: Connection[str, str], line: str) -> None:
        conn.put(line)

    return app


# -- Server session configuration ------------------------------------------------


async def test_poe_acceptor_replaces_default_handling() -> None:
    app: App[str, str] = App()
    seen: list[Any] = []

    @app.acceptor
    async def accept(stream: anyio.abc.ByteStream, remote_addr: Any) -> None:
        seen.append(remote_addr[0])
        await stream.send(b"custom acceptor\n")

    async with app.start() as server, await LineClient.connect(server.port or 0) as client:
        assert await client.recv_line() == "custom acceptor"
        assert await client.recv_until_closed() == b""
    assert seen == ["127.0.0.1"]


async def test_poe_acceptor_is_counted_against_concurrency_until_it_returns() -> None:
    app: App[str, str] = App(max_connections=1)
    release = anyio.Event()

    @app.acceptor
    async def accept(stream: anyio.abc.ByteStream, remote_addr: Any) -> None:
        await stream.send(b"in\n")
        await release.wait()

    async with app.start() as server:
        first = await LineClient.connect(server.port or 0)
        assert await first.recv_line() == "in"
        second = await LineClient.connect(server.port or 0)  # waits in the backlog
        with anyio.move_on_after(0.2):
            await second.recv_line()
            pytest.fail("the second client was accepted past max_connections")
        assert server.connection_count == 1
        release.set()
        assert await second.recv_line() == "in"
        await first.aclose()
        await second.aclose()


def test_poe_acceptor_and_clientinput_are_mutually_exclusive() -> None:
    app = banner_app()
    with pytest.raises(RegistrationError, match="mutually exclusive"):
        app.add_acceptor(lambda stream, addr: None)


async def test_poe_address_binds_the_given_interface() -> None:
    app = banner_app()
    async with app.start(host="127.0.0.1", port=0) as server:
        assert server.addresses == [("127.0.0.1", server.port)]
        async with await LineClient.connect(server.port or 0) as client:
            assert await client.recv_line() == "hello 1"


async def test_poe_alias_names_the_server_in_logs(caplog: pytest.LogCaptureFixture) -> None:
    app = banner_app(name="chargen_server")
    caplog.set_level(logging.DEBUG, logger="tcpkit")  # "listening on" is DEBUG under start()
    async with app.start() as server:
        assert server.name == "chargen_server"
    assert any("chargen_server" in record.getMessage() for record in caplog.records)


async def test_poe_concurrency_limits_open_connections_and_serves_backlog_in_order() -> None:
    app = banner_app(max_connections=2)
    async with app.start() as server:
        port = server.port or 0
        first = await LineClient.connect(port)
        second = await LineClient.connect(port)
        assert await first.recv_line() == "hello 1"
        assert await second.recv_line() == "hello 2"
        waiting = [await LineClient.connect(port) for _ in range(3)]
        with anyio.move_on_after(0.2):
            await waiting[0].recv_line()
            pytest.fail("accepted past the limit")
        assert server.connection_count == 2
        assert server.max_connections == 2
        await first.aclose()
        assert await waiting[0].recv_line() == "hello 3"
        await second.aclose()
        assert await waiting[1].recv_line() == "hello 4"
        await waiting[0].aclose()
        assert await waiting[2].recv_line() == "hello 5"
        for client in waiting[1:]:
            await client.aclose()


async def test_poe_concurrency_zero_stops_accepting() -> None:
    app = banner_app(max_connections=0)
    async with app.start() as server:
        client = await LineClient.connect(server.port or 0)  # the kernel completes it
        with anyio.move_on_after(0.2):
            await client.recv_line()
            pytest.fail("accepted with max_connections=0")
        assert server.stats.total == 0
        server.set_max_connections(None)  # POE: set_concurrency => -1
        assert await client.recv_line() == "hello 1"
        await client.aclose()


async def test_poe_set_concurrency_at_run_time() -> None:
    app = banner_app()
    async with app.start() as server:
        port = server.port or 0
        first = await LineClient.connect(port)
        assert await first.recv_line() == "hello 1"
        server.set_max_connections(0)  # a waiting accept must not take a slot
        blocked = await LineClient.connect(port)
        with anyio.move_on_after(0.2):
            await blocked.recv_line()
            pytest.fail("accepted after set_max_connections(0)")
        server.set_max_connections(2)
        assert await blocked.recv_line() == "hello 2"
        with pytest.raises(ValueError):
            server.set_max_connections(-1)
        await first.aclose()
        await blocked.aclose()


async def test_poe_error_callback_on_bind_failure() -> None:
    app = banner_app()
    errors: list[BaseException] = []

    @app.on_listen_error
    def on_listen_error(server: Server[str, str], exc: BaseException) -> None:
        errors.append(exc)

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ServerError, match="address already in use"):
            async with app.start(port=port):
                pass
    assert len(errors) == 1
    assert isinstance(errors[0], ServerError)


async def test_poe_hostname_is_resolved_once() -> None:
    app = banner_app()
    async with app.start(host="localhost", port=0) as server:
        assert server.addresses
        host, port = server.addresses[0]  # type: ignore[misc]
        assert port == server.port
        async with await LineClient.connect(server.port or 0, host=str(host)) as client:
            assert (await client.recv_line()).startswith("hello")


async def test_poe_domain_ipv6() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 support")
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback (::1) on this machine")
    app = banner_app()
    async with app.start(host="::1") as server:
        async with await LineClient.connect(server.port or 0, host="::1") as client:
            assert await client.recv_line() == "hello 1"
        assert server.addresses == [("::1", server.port)]


async def test_poe_port_zero_lets_the_os_pick() -> None:
    app = banner_app()
    async with app.start(port=0) as server:
        assert isinstance(server.port, int)
        assert server.port > 0


async def test_poe_started_receives_listener_args() -> None:
    app = banner_app(listener_args=("alpha", 2))
    got: list[Any] = []
    app.add_on_started(lambda server, *args: got.append((server.port, args)))
    async with app.start() as server:
        assert got == [(server.port, ("alpha", 2))]


async def test_poe_stopped_runs_once_after_every_connection_ended() -> None:
    app = banner_app()
    order: list[str] = []
    app.add_on_disconnect(lambda conn: order.append("disconnect"))
    app.add_on_stopped(lambda server: order.append(f"stopped {server.connection_count}"))
    async with app.start() as server:
        client = await LineClient.connect(server.port or 0)
        assert await client.recv_line() == "hello 1"
    await client.aclose()
    assert order == ["disconnect", "stopped 0"]


async def test_poe_inline_states_custom_events_via_emit_and_post() -> None:
    app: App[str, str] = App()

    @app.on_input
    def handle(conn: Connection[str, str], line: str) -> None:
        conn.emit("shout", line, "!")

    @app.on_event("shout")
    async def shout(conn: Connection[str, str], text: str, mark: str) -> None:
        await conn.send(text.upper() + mark)

    @app.on_event("note")
    def note(conn: Connection[str, str], text: str) -> None:
        conn.put(f"note: {text}")

    async with app.start() as server, await LineClient.connect(server.port or 0) as client:
        await client.send("hi")
        assert await client.recv_line() == "HI!"
        await wait_for(lambda: server.connections)
        conn = server.connections[0]
        assert server.post(conn.id, "note", "from the server")
        assert await client.recv_line() == "note: from the server"
        assert not server.post(9999, "note", "nobody")
        with pytest.raises(RegistrationError, match="no handler"):
            conn.emit("unknown")


class Greeter:
    """POE ObjectStates: an object's methods become handlers."""

    def __init__(self, greeting: str) -> None:
        self.greeting = greeting
        self.disconnects = 0

    def on_connect(self, conn: Connection[str, str]) -> None:
        conn.put(self.greeting)

    def on_input(self, conn: Connection[str, str], line: str) -> None:
        if line == "ping":
            conn.emit("pong", 1)
        else:
            conn.put(line[::-1])

    async def pong(self, conn: Connection[str, str], n: int) -> None:
        await conn.send(f"pong {n}")

    def on_disconnect(self, conn: Connection[str, str]) -> None:
        self.disconnects += 1


async def test_poe_object_states_include_an_object() -> None:
    greeter = Greeter("welcome")
    app: App[str, str] = App()
    app.include(greeter, events=["pong"])
    async with app.start() as server:
        async with await LineClient.connect(server.port or 0) as client:
            assert await client.recv_line() == "welcome"
            await client.send("abc", "ping")
            assert await client.recv_lines(2) == ["cba", "pong 1"]
        await wait_for(lambda: greeter.disconnects == 1)


class PackageHandlers:
    """POE PackageStates: a class's functions, called with the class as self."""

    prefix = "pkg"

    def on_input(cls, conn: Connection[str, str], line: str) -> None:
        conn.put(f"{cls.prefix}:{line}")

    @staticmethod
    def on_connect(conn: Connection[str, str]) -> None:
        conn.put("package ready")

    @classmethod
    def tick(cls, conn: Connection[str, str]) -> None:
        conn.put(f"{cls.prefix} tick")


async def test_poe_package_states_include_a_class() -> None:
    app: App[str, str] = App()
    app.include(PackageHandlers, events={"tick": "tick"})
    async with app.start() as server, await LineClient.connect(server.port or 0) as client:
        assert await client.recv_line() == "package ready"
        await client.send("x")
        assert await client.recv_line() == "pkg:x"
        await wait_for(lambda: server.connections)
        server.post(server.connections[0].id, "tick")
        assert await client.recv_line() == "pkg tick"


def test_poe_include_without_handlers_is_an_error() -> None:
    app: App[str, str] = App()
    with pytest.raises(RegistrationError, match="no handler methods"):
        app.include(object())


# -- Connection session configuration ------------------------------------------


async def test_poe_client_args_reach_client_connected() -> None:
    app: App[str, str] = App(client_args=("a", 1))

    @app.on_connect
    def connected(conn: Connection[str, str], first: str, second: int) -> None:
        conn.put(f"{first}{second} {conn.args}")

    async with app.start() as server, await LineClient.connect(server.port or 0) as client:
        assert await client.recv_line() == "a1 ('a', 1)"


async def test_poe_client_connected_called_once_per_connection() -> None:
    app = banner_app()
    calls: list[int] = []
    app.add_on_disconnect(lambda conn: calls.append(conn.id))
    async with app.start() as server:
        for expected in (1, 2, 3):
            async with await LineClient.connect(server.port or 0) as client:
                assert await client.recv_line() == f"hello {expected}"
        await wait_for(lambda: len(calls) == 3)


async def test_poe_client_disconnected_on_both_sides_closing() -> None:
    app = banner_app()
    gone: list[int] = []
    app.add_on_disconnect(lambda conn: gone.append(conn.id))
    async with app.start() as server:
        async with await LineClient.connect(server.port or 0) as client:
            assert await client.recv_line() == "hello 1"
        await wait_for(lambda: gone == [1])
        client = await LineClient.connect(server.port or 0)
        assert await client.recv_line() == "hello 2"
        await wait_for(lambda: server.connections)
        server.connections[0].shutdown()
        assert await client.recv_until_closed() == b""
        await wait_for(lambda: gone == [1, 2])
        await client.aclose()


async def test_poe_client_input_gets_every_message_in_order() -> None:
    app: App[str, str] = App()
    got: list[str] = []

    @app.on_input
    async def client_input(conn: Connection[str, str], line: str) -> None:
        got.append(line)
        await conn.send(f"{len(got)}:{line}")

    async with app.start() as server, await LineClient.connect(server.port or 0) as client:
        await client.send_raw(b"a\r\nb\nc")  # one read, mixed endings, a partial line
        assert await client.recv_lines(2) == ["1:a", "2:b"]
        await client.send_raw(b"d\n")
        assert await client.recv_line() == "3:cd"
    assert got == ["a", "b", "cd"]


async def test_poe_client_error_sees_codec_and_handler_errors() -> None:
    app: App[str, str] = App(codec=Lines(max_length=10))
    errors: list[str] = []

    @app.on_input
    def handle(conn: Connection[str, str], line: str) -> None:
        raise KeyError(line)

    @app.on_error
    def on_error(conn: Connection[str, str], exc: Exception) -> None:
        errors.append(type(exc).__name__)
        conn.put(f"error {type(exc).__name__}")

    async with app.start() as server:
        async with await LineClient.connect(server.port or 0) as client:
            await client.send("k")
            assert await client.recv_line() == "error KeyError"
            assert await client.recv_until_closed() == b""
        async with await LineClient.connect(server.port or 0) as client:
            await client.send("x" * 50)
            assert await client.recv_line() == "error FrameTooLarge"
    assert errors == ["KeyError", "FrameTooLarge"]


async def read_exactly(client: LineClient, size: int) -> bytes:
    with anyio.fail_after(5):
        while len(client.buffer) < size:
            client.buffer += await client.stream.receive()
    data, client.buffer = client.buffer[:size], client.buffer[size:]
    return data


async def test_poe_client_filter_accepts_instance_class_and_class_with_args() -> None:
    for spec in (Lines(newline="\n"), (Lines, {"newline": "\n"})):
        app = banner_app(codec=spec)
        async with app.start() as server, await LineClient.connect(server.port or 0) as client:
            await client.send("x", newline="\n")
            assert await read_exactly(client, 10) == b"hello 1\nx\n"
    app_raw: App[bytes, bytes] = App(codec=Raw)
    app_raw.add_on_input(lambda conn, data: conn.put(data.upper()))
    async with app_raw.start() as server, await LineClient.connect(server.port or 0) as client:
        await client.send_raw(b"abc")
        assert await read_exactly(client, 3) == b"ABC"


async def test_poe_client_input_and_output_filters_differ() -> None:
    app: App[str, bytes] = App(input_codec=Lines(), output_codec=Raw())

    @app.on_input
    def handle(conn: Connection[str, bytes], line: str) -> None:
        conn.put(f"<{line}>".encode())

    async with app.start() as server, await LineClient.connect(server.port or 0) as client:
        await client.send("a", "b")
        with anyio.fail_after(5):
            while len(client.buffer) < 6:
                client.buffer += await client.stream.receive()
        assert client.buffer == b"<a><b>"


async def test_poe_client_flushed_streams_output() -> None:
    app: App[str, str] = App()
    flushes: list[int] = []

    @app.on_connect
    def start(conn: Connection[str, str]) -> None:
        conn.state = 0
        conn.put("line 0")

    @app.on_flushed
    def more(conn: Connection[str, str]) -> None:
        flushes.append(conn.pending_output)
        conn.state += 1
        if conn.state < 5:
            conn.put(f"line {conn.state}")
        else:
            conn.shutdown()

    async with app.start() as server, await LineClient.connect(server.port or 0) as client:
        data = await client.recv_until_closed()
    assert data == b"".join(f"line {i}\r\n".encode() for i in range(5))
    assert flushes == [0] * 5


async def test_poe_client_shutdown_on_error_false_keeps_the_connection() -> None:
    app: App[str, str] = App(shutdown_on_error=False)

    @app.on_input
    def handle(conn: Connection[str, str], line: str) -> None:
        if line == "bad":
            raise ValueError("bad input")
        conn.put(f"{line} (errors so far: {conn.got_an_error})")

    app.add_on_error(lambda conn, exc: conn.put(f"error: {exc}"))
    async with app.start() as server, await LineClient.connect(server.port or 0) as client:
        await client.send("a", "bad", "b")
        assert await client.recv_lines(3) == [
            "a (errors so far: False)",
            "error: bad input",
            "b (errors so far: True)",
        ]


async def test_poe_client_shutdown_on_error_is_writable_per_connection() -> None:
    app: App[str, str] = App()

    @app.on_connect
    def setup(conn: Connection[str, str]) -> None:
        assert conn.shutdown_on_error is True
        conn.shutdown_on_error = False

    @app.on_input
    def handle(conn: Connection[str, str], line: str) -> None:
        if line == "bad":
            raise ValueError
        conn.put(line)

    app.add_on_error(lambda conn, exc: None)
    async with app.start() as server, await LineClient.connect(server.port or 0) as client:
        await client.send("bad", "still open")
        assert await client.recv_line() == "still open"


class CountingConnection(Connection[str, str]):
    """POE SessionType: a Connection subclass used for every connection."""

    def greet(self) -> str:
        return f"custom session #{self.id}"


async def test_poe_session_type_is_connection_class() -> None:
    app: App[str, str] = App(connection_class=CountingConnection)

    @app.on_connect
    def hello(conn: Connection[str, str]) -> None:
        assert isinstance(conn, CountingConnection)
        conn.put(conn.greet())

    async with app.start() as server, await LineClient.connect(server.port or 0) as client:
        assert await client.recv_line() == "custom session #1"


async def test_poe_session_params_heap_is_typed_state() -> None:
    class Heap:
        def __init__(self) -> None:
            self.lines = 0

    app: App[str, str] = App(state=Heap)

    @app.on_input
    def count(conn: Connection[str, str], line: str) -> None:
        conn.state.lines += 1
        conn.put(str(conn.state.lines))

    async with app.start() as server:
        for _ in range(2):  # each connection has its own state
            async with await LineClient.connect(server.port or 0) as client:
                await client.send("a", "b")
                assert await client.recv_lines(2) == ["1", "2"]


async def test_poe_client_pre_connect_reject_accept_and_wrap() -> None:
    app = banner_app()
    wrapped: list[int] = []

    class Tagged(anyio.abc.ByteStream):
        def __init__(self, inner: anyio.abc.ByteStream) -> None:
            self.inner = inner

        async def receive(self, max_bytes: int = 65536) -> bytes:
            return await self.inner.receive(max_bytes)

        async def send(self, item: bytes) -> None:
            await self.inner.send(b"[" + item + b"]")

        async def send_eof(self) -> None:
            await self.inner.send_eof()

        async def aclose(self) -> None:
            await self.inner.aclose()

        @property
        def extra_attributes(self) -> Any:
            return self.inner.extra_attributes

    @app.pre_connect
    async def gate(conn: Connection[str, str], stream: anyio.abc.ByteStream) -> Any:
        with pytest.raises(ConnectionClosed):
            conn.put("too early")
        if conn.id == 1:
            return None
        if conn.id == 2:
            return False
        if conn.id == 3:
            return True
        wrapped.append(conn.id)
        return Tagged(stream)

    async with app.start() as server:
        for _ in range(2):
            async with await LineClient.connect(server.port or 0) as client:
                assert await client.recv_until_closed() == b""
        async with await LineClient.connect(server.port or 0) as client:
            assert await client.recv_line() == "hello 3"
        async with await LineClient.connect(server.port or 0) as client:
            assert await client.recv_line() == "[hello 4"
    assert wrapped == [4]
    assert server.stats.rejected == 2


# -- Events ----------------------------------------------------------------------


async def test_poe_event_shutdown_server_stops_accepting_and_lets_clients_finish() -> None:
    app = banner_app()
    async with app.start() as server:
        port = server.port or 0
        client = await LineClient.connect(port)
        assert await client.recv_line() == "hello 1"
        async with anyio.create_task_group() as tg:
            tg.start_soon(server.shutdown)
            await wait_for(lambda: server.closing)
            with pytest.raises(OSError):
                await anyio.connect_tcp("127.0.0.1", port)
            await client.send("still served")
            assert await client.recv_line() == "still served"
            await client.aclose()
        assert server.connection_count == 0


async def test_poe_event_shutdown_grace_closes_the_rest_after_flushing() -> None:
    app: App[str, str] = App()

    @app.on_input
    def handle(conn: Connection[str, str], line: str) -> None:
        conn.put("x" * 100_000)

    async with app.start() as server:
        client = await LineClient.connect(server.port or 0)
        await client.send("go")
        await wait_for(lambda: server.stats.messages_in == 1)
        with anyio.fail_after(5):
            await server.shutdown(grace=0.05)
        data = await client.recv_until_closed()
        assert data == b"x" * 100_000 + b"\r\n"
        await client.aclose()


async def test_poe_event_per_connection_shutdown_flushes_then_closes() -> None:
    app: App[str, str] = App()

    @app.on_input
    def handle(conn: Connection[str, str], line: str) -> None:
        if line == "quit":
            conn.put("B'bye!")
            conn.shutdown()
            return
        conn.put(line)

    async with app.start() as server, await LineClient.connect(server.port or 0) as client:
        await client.send("a", "quit", "ignored")
        assert await client.recv_until_closed() == b"a\r\nB'bye!\r\n"


async def test_poe_event_disconnected_is_automatic_for_acceptors() -> None:
    app: App[str, str] = App(max_connections=1)

    @app.acceptor
    async def accept(stream: anyio.abc.ByteStream, remote_addr: Any) -> None:
        await stream.send(b"one at a time\n")

    async with app.start() as server:
        for _ in range(3):  # without an automatic "disconnected", the 2nd would hang
            async with await LineClient.connect(server.port or 0) as client:
                assert await client.recv_line() == "one at a time"


# -- HEAP members ----------------------------------------------------------------


async def test_poe_heap_master_alias_concurrency_connections_listener() -> None:
    app = banner_app(name="master", max_connections=5)
    async with app.start() as server:
        assert server.name == "master"  # alias
        assert server.max_connections == 5  # concurrency
        assert server.addresses  # listener
        async with await LineClient.connect(server.port or 0) as client:
            assert await client.recv_line() == "hello 1"
            assert server.connection_count == 1  # connections
            assert [c.id for c in server.connections] == [1]


async def test_poe_heap_client_remote_ip_port_addr() -> None:
    app: App[str, str] = App()
    app.add_on_connect(
        lambda conn: conn.put(f"{conn.remote_ip} {conn.remote_port} {conn.remote_addr}")
    )
    async with app.start() as server, await LineClient.connect(server.port or 0) as client:
        line = await client.recv_line()
        local = client.stream.extra(anyio.abc.SocketAttribute.local_address)
        assert line == f"{local[0]} {local[1]} {local!r}"


async def test_poe_heap_shutdown_flag_and_got_an_error() -> None:
    app: App[str, str] = App()
    flags: list[tuple[bool, bool]] = []

    @app.on_input
    def handle(conn: Connection[str, str], line: str) -> None:
        flags.append((conn.shutting_down, conn.got_an_error))
        raise RuntimeError("x")

    @app.on_disconnect
    def gone(conn: Connection[str, str]) -> None:
        flags.append((conn.shutting_down, conn.got_an_error))
        with pytest.raises(ConnectionClosed):
            conn.put("after the end")

    app.add_on_error(lambda conn, exc: None)
    async with app.start() as server, await LineClient.connect(server.port or 0) as client:
        await client.send("a")
        await client.recv_until_closed()
        await wait_for(lambda: len(flags) == 2)
    assert flags == [(False, False), (True, True)]


# -- Connection API beyond POE's wheel -------------------------------------------


async def test_broadcast_reaches_every_live_connection() -> None:
    app: App[str, str] = App()

    @app.on_input
    def say(conn: Connection[str, str], line: str) -> None:
        conn.server.broadcast(f"{conn.id}: {line}", exclude=conn)

    async with app.start() as server:
        clients = [await LineClient.connect(server.port or 0) for _ in range(3)]
        await wait_for(lambda: len(server.connections) == 3)
        await clients[0].send("hi all")
        assert await clients[1].recv_line() == "1: hi all"
        assert await clients[2].recv_line() == "1: hi all"
        assert server.broadcast("from server") == 3
        for client in clients:
            assert await client.recv_line() == "from server"
            await client.aclose()


async def test_set_codec_mid_stream_keeps_pending_bytes() -> None:
    app: App[Any, Any] = App()

    @app.on_input
    def handle(conn: Connection[Any, Any], message: Any) -> None:
        if message == "RAW":
            conn.put("switching")
            conn.set_codec(Raw())
        else:
            conn.put(message)

    async with app.start() as server, await LineClient.connect(server.port or 0) as client:
        await client.send_raw(b"RAW\r\nafter the switch")  # one read, two codecs
        with anyio.fail_after(5):
            while not client.buffer.endswith(b"after the switch"):
                client.buffer += await client.stream.receive()
        assert client.buffer == b"switching\r\nafter the switch"


async def test_set_input_codec_only() -> None:
    app: App[Any, Any] = App()

    @app.on_input
    def handle(conn: Connection[Any, Any], message: Any) -> None:
        if message == "BIN":
            conn.set_input_codec(Lines(encoding=None))
        conn.put(repr(message))

    async with app.start() as server, await LineClient.connect(server.port or 0) as client:
        await client.send("BIN", "x")
        assert await client.recv_lines(2) == ["'BIN'", "b'x'"]


async def test_pause_and_resume_input() -> None:
    app: App[str, str] = App()

    @app.on_input
    def handle(conn: Connection[str, str], line: str) -> None:
        conn.put(line)
        if line == "pause":
            conn.pause_input()

    async with app.start() as server, await LineClient.connect(server.port or 0) as client:
        await client.send("a", "pause", "b")
        assert await client.recv_lines(2) == ["a", "pause"]
        with anyio.move_on_after(0.2):
            await client.recv_line()
            pytest.fail("input was delivered while paused")
        server.connections[0].resume_input()
        assert await client.recv_line() == "b"


async def test_send_waits_above_the_high_mark() -> None:
    app: App[bytes, bytes] = App(codec=Raw(), write_buffer=(64 * 1024, 16 * 1024, 64 * 2**20))
    progress: list[int] = []
    done = anyio.Event()

    @app.on_connect
    async def stream_out(conn: Connection[bytes, bytes]) -> None:
        chunk = b"z" * 32 * 1024
        for _ in range(400):  # 12.5 MiB: far more than the socket buffers hold
            await conn.send(chunk)
            progress.append(conn.pending_output)
        done.set()

    async with app.start() as server:
        client = await anyio.connect_tcp("127.0.0.1", server.port or 0)
        try:
            seen = -1
            with anyio.fail_after(10):  # until the sender stalls (socket buffers full)
                while len(progress) != seen:
                    seen = len(progress)
                    await anyio.sleep(0.1)
            assert len(progress) < 400  # the client is not reading: the sender waits
            assert max(progress) <= 64 * 1024 + 32 * 1024
            received = 0
            with anyio.fail_after(20):
                while received < 400 * 32 * 1024:
                    received += len(await client.receive())
            await done.wait()
        finally:
            await client.aclose()


async def test_slow_reader_fed_by_put_is_closed_at_the_hard_limit() -> None:
    limit = 1024 * 1024
    app: App[str, str] = App(write_buffer=(256 * 1024, 64 * 1024, limit))
    peak: list[int] = []
    errors: list[BaseException] = []

    @app.on_input
    def handle(conn: Connection[str, str], line: str) -> None:
        if line != "flood":
            conn.put(line)
            return
        conn.emit("more")

    @app.on_event("more")
    async def more(conn: Connection[str, str]) -> None:
        for _ in range(100_000):  # far more than the limit, from a plain loop of put()
            peak.append(conn.pending_output)
            conn.put("y" * 1000)
            if len(peak) % 50 == 0:
                await anyio.sleep(0)  # let the flusher run, as a real app would

    app.add_on_error(lambda conn, exc: errors.append(exc))
    async with app.start() as server:
        slow = await LineClient.connect(server.port or 0)
        await slow.send("flood")  # ...and never read
        async with await LineClient.connect(server.port or 0) as other:
            await wait_for(lambda: bool(errors), timeout=20)
            await other.send("still served")
            assert await other.recv_line() == "still served"
        await slow.aclose()
    assert isinstance(errors[0], WriteBufferFull)
    assert max(peak) <= limit
    assert len(peak) < 100_000


async def test_stats_count_traffic() -> None:
    app = banner_app()
    async with app.start() as server:
        async with await LineClient.connect(server.port or 0) as client:
            assert await client.recv_line() == "hello 1"
            await client.send("a", "b")
            assert await client.recv_lines(2) == ["a", "b"]
        await wait_for(lambda: server.stats.current == 0)
        stats = server.stats.as_dict()
    assert stats["total"] == 1
    assert stats["messages_in"] == 2
    assert stats["messages_out"] == 3
    assert stats["bytes_in"] == 6
    assert stats["bytes_out"] == len(b"hello 1\r\na\r\nb\r\n")


async def test_half_close_still_gets_queued_output() -> None:
    app: App[str, str] = App()

    @app.on_input
    async def slow_echo(conn: Connection[str, str], line: str) -> None:
        await anyio.sleep(0.01)
        await conn.send(line)

    async with app.start() as server, await LineClient.connect(server.port or 0) as client:
        await client.send(*[f"m{i}" for i in range(20)])
        await client.send_eof()
        data = await client.recv_until_closed()
    assert data == b"".join(f"m{i}\r\n".encode() for i in range(20))


async def test_incomplete_line_at_eof_is_an_error_not_dropped() -> None:
    app = banner_app()
    errors: list[BaseException] = []
    app.add_on_error(lambda conn, exc: errors.append(exc))
    async with app.start() as server, await LineClient.connect(server.port or 0) as client:
        await client.send_raw(b"complete\npartial")
        await client.send_eof()
        assert await client.recv_until_closed() == b"hello 1\r\ncomplete\r\n"
    assert [type(e).__name__ for e in errors] == ["IncompleteFrame"]
