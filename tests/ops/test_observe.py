"""The observers (tcpkit.observer, tcpkit.observe): what the core reports, over real sockets.

Each test runs on asyncio, uvloop and trio, with plain ``def`` handlers (the
inline fast path) and ``async def`` ones (the task path).
"""

from __future__ import annotations

import logging
from typing import Any

import anyio
import pytest
from helpers import LineClient

from tcpkit import App, Connection, Observer
from tcpkit.observe import (
    LATENCY_BUCKETS,
    AccessLog,
    ClosedConnectionInfo,
    Recorder,
    merge_snapshots,
)
from tcpkit.observer import Rejection

pytestmark = pytest.mark.anyio


class Seen(Observer):
    """An observer that keeps what it is told."""

    times_handlers = True

    def __init__(self) -> None:
        self.opened: list[int] = []
        self.errors: list[str] = []
        self.handled: list[float] = []
        self.closed: list[ClosedConnectionInfo] = []
        self.rejected: list[tuple[int, str, str | None]] = []
        self.done = anyio.Event()

    def connection_made(self, conn: Connection[Any, Any]) -> None:
        self.opened.append(conn.id)

    def connection_error(self, conn: Connection[Any, Any], exc: BaseException) -> None:
        self.errors.append(type(exc).__name__)

    def message_handled(self, seconds: float) -> None:
        self.handled.append(seconds)

    def connection_closed(self, conn: Connection[Any, Any]) -> None:
        self.closed.append(ClosedConnectionInfo.of(conn))
        self.done.set()

    def connection_rejected(self, rejection: Rejection) -> None:
        error = rejection.error
        self.rejected.append(
            (rejection.id, rejection.reason, type(error).__name__ if error else None)
        )
        self.done.set()


def echo_app(asynchronous: bool) -> App[str, str]:
    app: App[str, str] = App(name="obs")
    if asynchronous:

        @app.on_input
        async def echo(conn: Connection[str, str], line: str) -> None:
            if line == "boom":
                raise ValueError("boom")
            if line == "bye":
                conn.shutdown()
                return
            await conn.send(line.upper())

    else:

        @app.on_input
        def echo_sync(conn: Connection[str, str], line: str) -> None:
            if line == "boom":
                raise ValueError("boom")
            if line == "bye":
                conn.shutdown()
                return
            conn.put(line.upper())

    return app


@pytest.mark.parametrize("asynchronous", [False, True], ids=["def", "async"])
async def test_counts_of_one_connection_closed_by_the_client(asynchronous: bool) -> None:
    app = echo_app(asynchronous)
    seen = Seen()
    async with app.start(observers=[seen]) as server:
        async with await LineClient.connect(server.port or 0) as client:
            await client.send("abc", "de")
            assert await client.recv_lines(2) == ["ABC", "DE"]
            await client.send_eof()
            assert await client.recv_until_closed() == b""
        with anyio.fail_after(10):
            await seen.done.wait()
        stats = server.stats
    [info] = seen.closed
    assert seen.opened == [info.id]
    assert info.reason == "eof" and info.error is None
    assert (info.bytes_in, info.messages_in) == (len(b"abc\r\nde\r\n"), 2)
    assert (info.bytes_out, info.messages_out) == (len(b"ABC\r\nDE\r\n"), 2)
    # the server-wide counts are still exact
    assert (stats.bytes_in, stats.bytes_out, stats.messages_in, stats.messages_out) == (
        info.bytes_in,
        info.bytes_out,
        2,
        2,
    )
    assert info.server == "obs" and info.remote_ip == "127.0.0.1"
    assert info.peer == f"127.0.0.1:{info.remote_port}"
    assert info.duration >= 0
    assert len(seen.handled) == 2 and all(s >= 0 for s in seen.handled)


@pytest.mark.parametrize("asynchronous", [False, True], ids=["def", "async"])
async def test_reasons_shutdown_error_and_server_shutdown(asynchronous: bool) -> None:
    app = echo_app(asynchronous)
    seen = Seen()
    async with app.start(observers=[seen]) as server:
        port = server.port or 0
        async with await LineClient.connect(port) as client:
            await client.send("bye")
            assert await client.recv_until_closed() == b""
        async with await LineClient.connect(port) as client:
            await client.send("boom")
            assert await client.recv_until_closed() == b""
        with anyio.fail_after(10):
            while len(seen.closed) < 2:
                await anyio.sleep(0.01)
        held = await LineClient.connect(port)
        await held.send("x")
        assert await held.recv_line() == "X"
    await held.aclose()
    reasons = [(info.reason, info.error) for info in seen.closed]
    assert reasons == [("shutdown", None), ("error", "ValueError"), ("server-shutdown", None)]
    assert seen.errors == ["ValueError"]


async def test_a_reset_is_an_error_and_a_rejection_is_reported() -> None:
    app: App[str, str] = App(name="obs")
    seen = Seen()

    @app.pre_connect
    def only_once(conn: Connection[str, str], stream: Any) -> bool:
        return conn.id == 1

    @app.on_input
    def ignore(conn: Connection[str, str], line: str) -> None:
        pass

    async with app.start(observers=[seen]) as server:
        port = server.port or 0
        client = await LineClient.connect(port)
        await client.send("x")
        with anyio.fail_after(10):
            while not seen.opened:
                await anyio.sleep(0.01)
        # a reset: SO_LINGER 0 then close
        import socket
        import struct

        raw: socket.socket = client.stream.extra(anyio.abc.SocketAttribute.raw_socket)
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        await client.aclose()
        with anyio.fail_after(10):
            await seen.done.wait()
        seen.done = anyio.Event()
        second = await LineClient.connect(port)
        assert await second.recv_until_closed() == b""
        await second.aclose()
        with anyio.fail_after(10):
            await seen.done.wait()
    [info] = seen.closed
    assert info.reason in ("error", "eof")  # a reset can be read as EOF if it came in order
    if info.reason == "error":
        assert info.error in ("ConnectionResetError", "BrokenResourceError")
    assert seen.rejected == [(2, "rejected", None)]


async def test_access_log_line_and_extra(caplog: pytest.LogCaptureFixture) -> None:
    app = echo_app(False)
    recorder = Recorder()
    caplog.set_level(logging.DEBUG, logger="tcpkit.access")
    async with app.start(observers=[AccessLog(), recorder]) as server:
        async with await LineClient.connect(server.port or 0) as client:
            await client.send("hello")
            assert await client.recv_line() == "HELLO"
            await client.send_eof()
            await client.recv_until_closed()
        with anyio.fail_after(10):
            while not recorder.closed["eof"]:
                await anyio.sleep(0.01)
    records = [r for r in caplog.records if r.name == "tcpkit.access"]
    opened, closed = records
    assert opened.levelno == logging.DEBUG and opened.getMessage().endswith(": opened")
    message = closed.getMessage()
    fields: dict[str, Any] = closed.__dict__
    assert message.startswith(f"obs #{fields['conn_id']} 127.0.0.1:{fields['remote_port']}: ")
    assert "closed (eof)" in message and "in 7 B 1 msg, out 7 B 1 msg" in message
    assert fields["bytes_in"] == 7 and fields["messages_out"] == 1
    assert fields["reason"] == "eof" and fields["server"] == "obs"
    snap = recorder.snapshot()
    assert snap["closed"]["eof"] == 1
    assert sum(snap["latency"]["counts"]) == 1


def test_recorder_histogram_and_merge() -> None:
    a, b = Recorder(), Recorder()
    a.message_handled(0.00005)
    a.message_handled(0.003)
    b.message_handled(100.0)
    merged = merge_snapshots(
        [
            {"stats": {"current": 1, "total": 4}, **a.snapshot()},
            {"stats": {"current": 2, "total": 1}, **b.snapshot()},
        ]
    )
    counts = merged["latency"]["counts"]
    assert counts[0] == 1 and counts[LATENCY_BUCKETS.index(0.005)] == 1 and counts[-1] == 1
    assert merged["stats"] == {"current": 3, "total": 5}
    assert merged["latency"]["sum"] == pytest.approx(100.00305)


async def test_an_observer_that_does_not_time_handlers_is_not_given_times() -> None:
    app = echo_app(False)
    seen = Seen()
    seen.times_handlers = False
    async with app.start(observers=[seen]) as server:
        async with await LineClient.connect(server.port or 0) as client:
            await client.send("a", "b")
            assert await client.recv_lines(2) == ["A", "B"]
            await client.send_eof()
            await client.recv_until_closed()
        with anyio.fail_after(10):
            await seen.done.wait()
    assert seen.handled == [] and seen.closed[0].messages_in == 2
