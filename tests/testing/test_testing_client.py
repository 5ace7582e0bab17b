"""tcpkit.testing.TestClient and TestServer: an app's real pipeline over in-memory streams."""

from __future__ import annotations

import logging
from typing import Any

import anyio
import pytest

from tcpkit import App, Connection, FrameTooLarge, Json, Lines, Raw, Server, WriteBufferFull
from tcpkit.testing import TestClient, TestServer

pytestmark = pytest.mark.anyio


def echo_app(**options: Any) -> App[str, str]:
    app = App(**options)

    @app.on_input
    async def echo(conn: Connection[str, str], line: str) -> None:
        if line == "quit":
            await conn.send("bye")
            conn.shutdown()
            return
        await conn.send(line)

    return app


def chat_app() -> App[str, str]:
    app = App()

    @app.on_connect
    def joined(conn: Connection[str, str]) -> None:
        conn.server.broadcast(f"* {conn.remote_port} joined")

    @app.on_input
    def said(conn: Connection[str, str], line: str) -> None:
        conn.server.broadcast(f"<{conn.remote_port}> {line}", exclude=conn)

    return app


# -- the basics ------------------------------------------------------------------


async def test_echo() -> None:
    async with TestClient(echo_app()) as client:
        await client.send("hello")
        await client.send("wörld")
        assert await client.receive() == "hello"
        assert await client.receive() == "wörld"
        assert client.server.stats.messages_in == 2


async def test_the_client_speaks_the_apps_codecs() -> None:
    app = App(codec=Lines() | Json())

    @app.on_input
    async def double(conn: Connection[Any, Any], value: Any) -> None:
        await conn.send({"twice": value["n"] * 2})

    async with TestClient(app) as client:
        await client.send({"n": 21})
        assert await client.receive() == {"twice": 42}


async def test_input_and_output_codecs_apart() -> None:
    app = App(input_codec=Lines(), output_codec=Lines() | Json())

    @app.on_input
    async def length(conn: Connection[str, Any], line: str) -> None:
        await conn.send([line, len(line)])

    async with TestClient(app) as client:
        await client.send("four")
        assert await client.receive() == ["four", 4]


async def test_on_connect_banner_sees_the_client_address() -> None:
    app = App()

    @app.on_connect
    async def banner(conn: Connection[str, str]) -> None:
        await conn.send(f"welcome {conn.remote_ip}:{conn.remote_port}")

    async with TestClient(app, remote_addr=("203.0.113.9", 4711)) as client:
        assert await client.receive() == "welcome 203.0.113.9:4711"
        assert client.connection.remote_addr == ("203.0.113.9", 4711)


async def test_async_for_ends_when_the_server_closes() -> None:
    async with TestClient(echo_app()) as client:
        for line in ("a", "b", "quit", "never handled"):
            await client.send(line)
        assert [line async for line in client] == ["a", "b", "bye"]
        with pytest.raises(anyio.EndOfStream):
            await client.receive()


async def test_receive_timeout_and_receive_nowait() -> None:
    async with TestClient(echo_app()) as client:
        with pytest.raises(TimeoutError, match=r"no message from the server within 0\.05 s"):
            await client.receive(timeout=0.05)
        with pytest.raises(anyio.WouldBlock):
            client.receive_nowait()
        await client.send("x")
        assert await client.receive() == "x"
        await client.send("y")
        await anyio.wait_all_tasks_blocked()
        assert client.receive_nowait() == "y"


async def test_raw_bytes_both_ways() -> None:
    async with TestClient(echo_app()) as client:
        await client.send_bytes(b"par")
        await client.send_bytes(b"tial\r\nsecond\n")
        assert await client.receive() == "partial"
        assert await client.receive_bytes() == b"second\r\n"


async def test_undecoded_bytes_go_to_receive_bytes_first() -> None:
    app = App(input_codec=Lines(), output_codec=Raw())

    @app.on_input
    async def reply(conn: Connection[str, bytes], line: str) -> None:
        await conn.send(line.encode())

    async with TestClient(app) as client:
        await client.send("abc")
        assert await client.receive_bytes(2) == b"ab"
        assert await client.receive_bytes() == b"c"


async def test_state_and_connection_while_and_after_serving() -> None:
    app = App(state=dict)

    @app.on_input
    def remember(conn: Connection[str, str], line: str) -> None:
        conn.state["last"] = line
        conn.put("ok")

    async with TestClient(app) as client:
        conn = await client.wait_connected()
        assert client.connection is conn
        await client.send("kept")
        assert await client.receive() == "ok"
        assert conn.state == {"last": "kept"}
        assert client.server.connections == [conn]
    assert conn.closed
    assert client.connection.state == {"last": "kept"}


async def test_leaving_the_block_shuts_down_like_app_start() -> None:
    events: list[str] = []
    app = echo_app()
    app.add_on_disconnect(lambda conn: events.append(f"disconnect #{conn.id}"))
    app.add_on_stopped(lambda server: events.append("stopped"))
    async with TestClient(app) as client:
        c2 = await client.connect()
        await client.send("unread reply")  # nobody reads it: the exit drains it
        await c2.wait_connected()
        server = client.server
    assert sorted(events[:2]) == ["disconnect #1", "disconnect #2"]
    assert events[2:] == ["stopped"]
    assert server.connection_count == 0
    assert client.closed
    assert c2.closed


async def test_leaving_the_block_delivers_output_a_slow_client_never_read() -> None:
    app = App()

    @app.on_connect
    async def flood(conn: Connection[str, str]) -> None:
        for i in range(2000):
            conn.put(f"line {i} " + "x" * 100)  # ~220 KiB, more than the stream holds

    async with TestClient(app, buffer_size=4096) as client:
        assert await client.receive() == "line 0 " + "x" * 100
    assert client.test_server.server.stats.bytes_out > 200_000


# -- setup: pre_connect ------------------------------------------------------------


async def test_pre_connect_rejects() -> None:
    app = echo_app()

    @app.pre_connect
    def only_local(conn: Connection[str, str], stream: Any) -> bool:
        return conn.remote_ip == "127.0.0.1"

    async with TestClient(app, remote_addr=("198.51.100.1", 1234)) as client:
        with pytest.raises(anyio.EndOfStream):
            await client.receive()
        with pytest.raises(RuntimeError, match="rejected"):
            await client.wait_connected()
        with pytest.raises(RuntimeError, match="rejected"):
            _ = client.connection
        local = await client.connect()
        await local.send("let in")
        assert await local.receive() == "let in"
        assert client.server.stats.rejected == 1


async def test_pre_connect_can_read_the_stream_first() -> None:
    app = echo_app()

    @app.pre_connect
    async def password(conn: Connection[str, str], stream: Any) -> bool:
        return bool(await stream.receive(7) == b"sesame\n")

    async with TestClient(app) as client:
        with pytest.raises(TimeoutError):
            await client.wait_connected(timeout=0.05)  # the server waits for the password
        await client.send_bytes(b"sesame\n")
        await client.wait_connected()
        await client.send("in")
        assert await client.receive() == "in"


async def test_proxy_protocol_header_sent_as_raw_bytes() -> None:
    app = echo_app(proxy_protocol=True)
    async with TestClient(app) as client:
        await client.send_bytes(b"PROXY TCP4 198.51.100.22 10.0.0.1 35646 80\r\n")
        conn = await client.wait_connected()
        assert (conn.remote_ip, conn.remote_port) == ("198.51.100.22", 35646)
        await client.send("behind a proxy")
        assert await client.receive() == "behind a proxy"
        bad = await client.connect()
        await bad.send_bytes(b"GET / HTTP/1.0\r\n\r\n")
        with pytest.raises(RuntimeError, match="closed during its setup"):
            await bad.wait_connected()


# -- several clients ----------------------------------------------------------------


async def test_broadcast_to_several_clients() -> None:
    async with TestServer(chat_app()) as test_server:
        ann = await test_server.connect()
        assert await ann.receive() == "* 50000 joined"
        bob = await test_server.connect()
        assert await bob.receive() == "* 50001 joined"
        assert await ann.receive() == "* 50001 joined"
        cyd = await test_server.connect(remote_addr=("127.0.0.1", 7))
        for client in (ann, bob, cyd):
            assert await client.receive() == "* 7 joined"
        await bob.send("hi all")
        assert await ann.receive() == "<50001> hi all"
        assert await cyd.receive() == "<50001> hi all"
        with pytest.raises(anyio.WouldBlock):
            bob.receive_nowait()
        assert test_server.clients == [ann, bob, cyd]
        assert test_server.server.connection_count == 3


async def test_more_clients_from_a_client() -> None:
    async with TestClient(chat_app()) as first:
        assert await first.receive() == "* 50000 joined"
        async with await first.connect() as second:
            assert await second.receive() == "* 50001 joined"
            assert await first.receive() == "* 50001 joined"
        assert second.closed
        assert not first.closed


async def test_max_connections_keeps_a_client_in_the_backlog() -> None:
    app = App(max_connections=1)

    @app.on_connect
    async def welcome(conn: Connection[str, str]) -> None:
        await conn.send(f"welcome {conn.remote_port}")

    async with TestClient(app) as first:
        assert await first.receive() == "welcome 50000"
        second = await first.connect()
        await anyio.wait_all_tasks_blocked()
        with pytest.raises(anyio.WouldBlock):
            second.receive_nowait()
        assert first.server.connection_count == 1
        await first.aclose()
        assert await second.receive() == "welcome 50001"


async def test_a_client_waiting_in_the_backlog_is_closed_at_shutdown() -> None:
    async with TestClient(echo_app(max_connections=0)) as client:
        await client.send("unheard")
    assert client.server.stats.total == 0


# -- flow control -----------------------------------------------------------------


async def test_backpressure_holds_a_sender_until_the_client_reads() -> None:
    app = App(write_buffer=(8 * 1024, 4 * 1024, 1024 * 1024))
    progress: list[int] = []

    @app.on_input
    async def flood(conn: Connection[str, str], line: str) -> None:
        for i in range(500):
            await conn.send(f"{i:04d} " + "x" * 995)  # 1 KB lines, 500 KB in all
            progress.append(i)

    async with TestClient(app, buffer_size=16 * 1024) as client:
        await client.send("go")
        await anyio.wait_all_tasks_blocked()
        assert 0 < len(progress) < 100  # held by the full stream, then the high mark
        assert client.connection.pending_output > 0
        lines = [await client.receive() for _ in range(500)]
        assert [line[:4] for line in lines] == [f"{i:04d}" for i in range(500)]
        assert len(progress) == 500


async def test_a_client_that_never_reads_hits_the_hard_limit() -> None:
    seen: list[BaseException] = []
    app = App(write_buffer=(1024, 512, 32 * 1024))

    @app.on_input
    def flood(conn: Connection[str, str], line: str) -> None:
        for _ in range(100):
            conn.put("y" * 1000)

    @app.on_error
    def on_error(conn: Connection[str, str], exc: Exception) -> None:
        seen.append(exc)

    async with TestClient(app, buffer_size=1024) as client:
        await client.send("go")
        received = [line async for line in client]
    assert len(received) < 100
    assert [type(exc) for exc in seen] == [WriteBufferFull]


async def test_half_close_delivers_every_reply_then_ends() -> None:
    done: list[int] = []
    app = echo_app()
    app.add_on_disconnect(lambda conn: done.append(conn.id))
    async with TestClient(app) as client:
        for i in range(100):
            await client.send(f"line {i}")
        await client.send_eof()
        assert [line async for line in client] == [f"line {i}" for i in range(100)]
        with pytest.raises(anyio.ClosedResourceError):
            await client.send("too late")
    assert done == [1]


# -- app exceptions surface in the test ---------------------------------------------


def failing_app(**options: Any) -> App[str, str]:
    app = App(**options)

    @app.on_input
    async def handle(conn: Connection[str, str], line: str) -> None:
        if line == "boom":
            raise ZeroDivisionError("boom in a handler")
        await conn.send(line)

    return app


async def test_a_handler_exception_is_raised_at_the_next_receive() -> None:
    async with TestClient(failing_app()) as client:
        await client.send("fine")
        assert await client.receive() == "fine"
        await client.send("boom")
        with pytest.raises(ZeroDivisionError, match="boom in a handler"):
            await client.receive()
        with pytest.raises(anyio.EndOfStream):  # shutdown_on_error closed it
            await client.receive()


async def test_a_handler_exception_wakes_a_waiting_receive() -> None:
    async with TestClient(failing_app(shutdown_on_error=False)) as client:
        await client.send("boom")
        with pytest.raises(ZeroDivisionError):
            await client.receive(timeout=None)
        await client.send("still here")
        assert await client.receive() == "still here"


async def send_boom_and_leave(app: App[str, str]) -> None:
    async with TestClient(app) as client:
        await client.send("boom")
        # Leaving at once could drop the input unread: that is shutdown(grace=0).
        await anyio.wait_all_tasks_blocked()


async def test_a_handler_exception_not_received_is_raised_at_exit() -> None:
    with pytest.raises(ZeroDivisionError):
        await send_boom_and_leave(failing_app())


async def test_an_exception_in_the_block_is_not_hidden() -> None:
    async def fail_in_the_block() -> None:
        async with TestClient(failing_app()) as client:
            await client.send("boom")
            await anyio.wait_all_tasks_blocked()
            raise KeyError("the test's own failure")

    with pytest.raises(ZeroDivisionError) as info:
        await fail_in_the_block()
    assert isinstance(info.value.__context__, KeyError)


async def test_the_opt_out_only_logs(caplog: pytest.LogCaptureFixture) -> None:
    async with TestClient(failing_app(), raise_app_exceptions=False) as client:
        await client.send("boom")
        with pytest.raises(anyio.EndOfStream):
            await client.receive()
    errors = [r for r in caplog.records if r.name == "tcpkit.connection"]
    assert errors
    assert errors[0].levelno == logging.ERROR
    assert errors[0].exc_info is not None
    assert isinstance(errors[0].exc_info[1], ZeroDivisionError)


async def test_the_default_on_error_still_logs(caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(ZeroDivisionError):
        await send_boom_and_leave(failing_app())
    assert any("handler raised" in r.getMessage() for r in caplog.records)


async def test_errors_the_app_handles_are_not_raised() -> None:
    handled: list[Exception] = []
    app = failing_app()
    app.add_on_error(lambda conn, exc: handled.append(exc))
    async with TestClient(app) as client:
        await client.send("boom")
        with pytest.raises(anyio.EndOfStream):
            await client.receive()
    assert [type(exc) for exc in handled] == [ZeroDivisionError]


async def test_an_on_error_that_raises_is_raised() -> None:
    app = failing_app()

    @app.on_error
    def broken(conn: Connection[str, str], exc: Exception) -> None:
        raise RuntimeError("on_error is broken")

    async with TestClient(app) as client:
        await client.send("boom")
        with pytest.raises(RuntimeError, match="on_error is broken"):
            await client.receive()


async def test_peer_errors_are_not_raised() -> None:
    async with TestClient(echo_app(codec=Lines(max_length=10))) as client:
        await client.send("x" * 100)  # the client's fault: FrameTooLarge, logged
        with pytest.raises(anyio.EndOfStream):
            await client.receive()
        c2 = await client.connect()
        await c2.send_bytes(b"no newline")
        await c2.send_eof()  # IncompleteFrame: the peer's fault too
        with pytest.raises(anyio.EndOfStream):
            await c2.receive()


async def test_errors_in_pre_connect_on_disconnect_and_on_stopped_are_raised() -> None:
    app = echo_app()

    @app.pre_connect
    def check(conn: Connection[str, str], stream: Any) -> bool:
        if conn.remote_port == 666:
            raise LookupError("pre_connect bug")
        return True

    async with TestClient(app, remote_addr=("127.0.0.1", 666)) as client:
        with pytest.raises(LookupError, match="pre_connect bug"):
            await client.receive()

    app = echo_app()
    app.add_on_disconnect(lambda conn: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        async with TestClient(app) as client:
            await client.wait_connected()

    app = echo_app()

    @app.on_stopped
    def stopped(server: Server[str, str]) -> None:
        raise OSError("on_stopped bug")

    with pytest.raises(OSError, match="on_stopped bug"):
        async with TestClient(app):
            pass


async def test_an_on_started_exception_propagates_from_the_start() -> None:
    app = echo_app()

    @app.on_started
    def started(server: Server[str, str]) -> None:
        raise ValueError("cannot start")

    with pytest.raises(ValueError, match="cannot start"):
        async with TestClient(app):
            pytest.fail("the block must not run")


# -- a custom acceptor ----------------------------------------------------------------


async def test_a_custom_acceptor_gets_the_in_memory_stream() -> None:
    app = App()

    @app.acceptor
    async def shout(stream: Any, remote: Any) -> None:
        data = await stream.receive()
        if data.strip() == b"fail":
            raise ValueError("acceptor bug")
        await stream.send(f"{remote[0]} said {data.decode().strip().upper()}\r\n".encode())

    async with TestClient(app) as client:
        await client.send("hi")
        assert await client.receive() == "127.0.0.1 said HI"
        with pytest.raises(RuntimeError, match="acceptor"):
            _ = client.connection
        c2 = await client.connect()
        await c2.send("fail")
        with pytest.raises(ValueError, match="acceptor bug"):
            await c2.receive()


# -- misuse -------------------------------------------------------------------------


async def test_use_outside_the_block_is_a_clear_error() -> None:
    client = TestClient(echo_app())
    with pytest.raises(RuntimeError, match="async with"):
        await client.send("x")
    with pytest.raises(RuntimeError, match="not running"):
        _ = client.server
    test_server = TestServer(echo_app())
    with pytest.raises(RuntimeError, match="not running"):
        await test_server.connect()
    async with test_server:
        pass
    with pytest.raises(RuntimeError, match="not running"):
        await test_server.connect()
    with pytest.raises(RuntimeError, match="only once"):
        async with test_server:
            pass


async def test_the_app_is_frozen_and_can_be_served_again() -> None:
    app = echo_app()
    async with TestClient(app) as client:
        await client.send("one")
        assert await client.receive() == "one"
    assert app.frozen
    async with TestClient(app) as client:
        await client.send("two")
        assert await client.receive() == "two"


def test_pytest_does_not_collect_the_test_classes() -> None:
    assert TestClient.__test__ is False  # type: ignore[attr-defined]
    assert TestServer.__test__ is False  # type: ignore[attr-defined]


async def test_frame_too_large_from_the_server_is_raised_to_the_test() -> None:
    app = App(input_codec=Lines(), output_codec=Lines(max_length=1_000_000))

    @app.on_input
    async def big(conn: Connection[str, str], line: str) -> None:
        await conn.send("z" * 100)

    async with TestServer(app) as test_server:
        client = await test_server.connect()
        client._decoder = Lines(max_length=10).decoder()  # type: ignore[assignment]
        await client.send("go")
        with pytest.raises(FrameTooLarge):
            await client.receive()
