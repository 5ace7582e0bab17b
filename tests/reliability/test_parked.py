"""An idle connection holds no task (every backend), and gets one only while it needs one.

A connection whose ``on_input`` is a plain ``def``, over one of tcpkit's
socket streams, waits for input *parked*: its turns run in the transport's
data callback, and a task starts when something needs one (an ``async def``
handler, output the client does not read, an event, a pause, an end that
lingers) and ends when the connection waits for input again; an end that
needs no waiting runs without one. These tests count the server's tasks
while connections are idle, after each of those, and check the bytes.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

from tcpkit import App, Connection, Lines

pytestmark = pytest.mark.anyio

CONNS = 20


def task_count() -> int:
    """The tasks of the running event loop (trio: of the whole task tree)."""
    try:
        return len(asyncio.all_tasks())
    except RuntimeError:  # no asyncio loop: trio
        import trio

        def count(task: trio.lowlevel.Task) -> int:
            return 1 + sum(
                count(child) for nursery in task.child_nurseries for child in nursery.child_tasks
            )

        return count(trio.lowlevel.current_root_task())  # type: ignore[arg-type]


async def wait_for(what: str, check: Callable[[], bool], timeout: float = 5.0) -> None:
    with anyio.fail_after(timeout, shield=True):
        while not check():
            await anyio.sleep(0.01)


async def connect(port: int) -> anyio.abc.SocketStream:
    return await anyio.connect_tcp("127.0.0.1", port)


async def exchange(client: anyio.abc.SocketStream, line: bytes, reply: bytes) -> None:
    await client.send(line)
    got = b""
    with anyio.fail_after(5):
        while len(got) < len(reply):
            got += await client.receive()
    assert got == reply


async def read_to_end(client: anyio.abc.SocketStream) -> bytes:
    """What the client reads until the server's end of stream (or a reset)."""
    got = b""
    try:
        while True:
            got += await client.receive()
    except (anyio.EndOfStream, anyio.BrokenResourceError):
        return got


def echo_app(*, is_async: bool = False) -> App[str, str]:
    app: App[str, str] = App(codec=Lines(), busy_poll=0)
    if is_async:

        @app.on_input
        async def echo_async(conn: Connection[str, str], line: str) -> None:
            conn.put(line)
    else:

        @app.on_input
        def echo(conn: Connection[str, str], line: str) -> None:
            conn.put(line)

    return app


async def open_idle(port: int, n: int) -> list[anyio.abc.SocketStream]:
    clients = [await connect(port) for _ in range(n)]
    for i, client in enumerate(clients):
        await exchange(client, b"%d\n" % i, b"%d\r\n" % i)
    return clients


@pytest.mark.parametrize("style", ["def", "async def"])
async def test_idle_connections_hold_no_task_with_def_handlers(style: str) -> None:
    app = echo_app(is_async=style == "async def")
    async with app.start(host="127.0.0.1", port=0) as server:
        assert server.port is not None
        await anyio.sleep(0.05)
        before = task_count()
        clients = await open_idle(server.port, CONNS)
        await anyio.sleep(0.05)
        grown = task_count() - before
        if style == "def":
            assert grown < 3, f"{grown} tasks for {CONNS} idle connections"
        else:  # an async def on_input runs in the connection's task: one each
            assert grown >= CONNS
        for client in clients:  # they still work, and end
            await exchange(client, b"again\n", b"again\r\n")
            await client.aclose()
        await wait_for("every connection ended", lambda: server.connection_count == 0)


async def test_a_connection_gives_its_task_back_after_each_thing_that_needed_one() -> None:
    """An event, an async def handler that waits, a pause and a resume, output the
    client does not read yet: each starts a task, which ends once the
    connection waits for input again."""
    app = echo_app()
    seen: list[str] = []

    @app.on_event("note")
    def note(conn: Connection[str, str], text: str) -> None:
        seen.append(text)
        conn.put(f"noted {text}")

    @app.on_event("slow")
    async def slow(conn: Connection[str, str]) -> None:
        await anyio.sleep(0.01)
        conn.put("slept")

    async with app.start(host="127.0.0.1", port=0) as server:
        assert server.port is not None
        await anyio.sleep(0.05)
        before = task_count()
        (client,) = await open_idle(server.port, 1)
        (conn,) = server.connections

        assert server.post(conn.id, "note", "one")
        await exchange(client, b"", b"noted one\r\n")
        await wait_for("parked", lambda: task_count() <= before)

        assert conn.emit("slow")
        await exchange(client, b"", b"slept\r\n")
        await wait_for("parked", lambda: task_count() <= before)

        conn.pause_input()
        await client.send(b"held\n")
        await anyio.sleep(0.05)
        conn.resume_input()
        await exchange(client, b"", b"held\r\n")
        await wait_for("parked", lambda: task_count() <= before)

        big = "x" * 60_000
        for _ in range(40):  # more than the socket buffers take: the rest waits to drain
            conn.put(big)
        await anyio.sleep(0.05)
        got = 0
        with anyio.fail_after(10):
            while got < 40 * (len(big) + 2):
                got += len(await client.receive(1 << 20))
        await wait_for("parked", lambda: task_count() <= before)
        await exchange(client, b"last\n", b"last\r\n")
        assert seen == ["one"]
        await client.aclose()
        await wait_for("ended", lambda: server.connection_count == 0)


@pytest.mark.parametrize("how", ["client closes", "client resets", "shutdown", "close"])
async def test_a_parked_connection_ends(how: str) -> None:
    app = echo_app()
    ended: list[str | None] = []

    @app.on_disconnect
    def disconnect(conn: Connection[str, str]) -> None:
        ended.append(conn.close_reason)

    async with app.start(host="127.0.0.1", port=0) as server:
        assert server.port is not None
        await anyio.sleep(0.05)
        before = task_count()
        (client,) = await open_idle(server.port, 1)
        await wait_for("parked", lambda: task_count() <= before)
        (conn,) = server.connections
        if how == "client closes":
            await client.send_eof()
        elif how == "client resets":
            raw: socket.socket = client.extra(anyio.abc.SocketAttribute.raw_socket)
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            await client.aclose()
        elif how == "shutdown":
            conn.shutdown()
        else:
            conn.close()
        await wait_for("ended", lambda: server.connection_count == 0)
        if how != "client resets":
            with anyio.fail_after(5):
                assert await read_to_end(client) == b""
            await client.aclose()
    expected: dict[str, Any] = {
        "client closes": "eof",
        "shutdown": "shutdown",
        "close": "close",
    }
    assert len(ended) == 1
    if how in expected:
        assert ended == [expected[how]]


async def test_idle_timeout_closes_a_parked_connection() -> None:
    app: App[str, str] = App(codec=Lines(), busy_poll=0, idle_timeout=0.2)

    @app.on_input
    def echo(conn: Connection[str, str], line: str) -> None:
        conn.put(line)

    async with app.start(host="127.0.0.1", port=0) as server:
        assert server.port is not None
        (client,) = await open_idle(server.port, 1)
        await wait_for("closed by idle_timeout", lambda: server.connection_count == 0)
        assert server.stats.idle_timeouts == 1
        await client.aclose()


@pytest.mark.parametrize("setup", ["PROXY header", "pre_connect"])
async def test_connections_with_setup_steps_park_too(setup: str) -> None:
    """A task sets the connection up (a PROXY header, ``pre_connect``), then it
    waits for input without one, as any other."""
    proxy = setup == "PROXY header"
    app: App[str, str] = App(codec=Lines(), busy_poll=0, proxy_protocol=proxy)

    @app.on_input
    def whoami(conn: Connection[str, str], line: str) -> None:
        conn.put(f"{line} from {conn.remote_ip}")

    if not proxy:

        @app.pre_connect
        def admit(conn: Connection[str, str], stream: anyio.abc.ByteStream) -> bool:
            return True

    async with app.start(host="127.0.0.1", port=0) as server:
        assert server.port is not None
        await anyio.sleep(0.05)
        before = task_count()
        clients = [await connect(server.port) for _ in range(CONNS)]
        for i, client in enumerate(clients):
            header = b"PROXY TCP4 192.0.2.%d 127.0.0.1 4000 80\r\n" % (i + 1) if proxy else b""
            ip = f"192.0.2.{i + 1}" if proxy else "127.0.0.1"
            await exchange(client, header + b"hi\n", f"hi from {ip}\r\n".encode())
        await anyio.sleep(0.05)
        grown = task_count() - before
        assert grown < 3, f"{grown} tasks for {CONNS} idle connections"
        for client in clients:
            await client.aclose()
        await wait_for("every connection ended", lambda: server.connection_count == 0)


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_parked_handlers_may_use_anyio_under_a_plain_asyncio_run(loop: str) -> None:
    """Under ``asyncio.run`` (not ``anyio.run``), a parked connection's ``def``
    handler runs in a loop callback, outside any task: what it calls that
    needs anyio (a broadcast starts a helper task with a cancel scope) must
    still find the running event loop."""
    app: App[str, str] = App(codec=Lines(), busy_poll=0)

    @app.on_input
    def chat(conn: Connection[str, str], line: str) -> None:
        conn.server.broadcast(line, exclude=conn)

    async def main() -> list[bytes]:
        async with app.start(host="127.0.0.1", port=0) as server:
            assert server.port is not None
            listener = await asyncio.open_connection("127.0.0.1", server.port)
            talker = await asyncio.open_connection("127.0.0.1", server.port)
            while server.connection_count < 2:
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.05)  # both parked
            talker[1].write(b"hello\n")
            heard = await asyncio.wait_for(listener[0].readline(), 5)
            for _, writer in (listener, talker):
                writer.close()
            return [heard]

    if loop == "uvloop":
        uvloop = pytest.importorskip("uvloop")
        assert uvloop.run(main()) == [b"hello\r\n"]
    else:
        assert asyncio.run(main()) == [b"hello\r\n"]


async def test_output_queued_while_a_connection_drains_goes_out_without_more_input() -> None:
    """A broadcast that comes while a connection's big reply drains (its client
    does not read yet) goes out once the drain is done: the connection does not
    wait for input (parked) with it still queued."""
    app: App[str, str] = App(codec=Lines(max_length=1 << 20), busy_poll=0)
    chunk = "x" * 65_000

    @app.on_input
    def big(conn: Connection[str, str], line: str) -> None:
        for _ in range(256):  # 16 MB: more than the kernel's buffers take
            conn.put(chunk)

    async with app.start(host="127.0.0.1", port=0) as server:
        assert server.port is not None
        client = await connect(server.port)
        await client.send(b"big\n")
        await wait_for("connected", lambda: server.connection_count == 1)
        (conn,) = server.connections
        await wait_for("draining", lambda: conn.pending_output > 0)
        assert server.broadcast("news") == 1
        expected = 256 * (len(chunk) + 2) + len(b"news\r\n")
        got = bytearray()
        with anyio.fail_after(10):
            while len(got) < expected:
                got += await client.receive(1 << 20)
        assert got.endswith(b"x\r\nnews\r\n") and len(got) == expected
        await client.aclose()


@pytest.mark.parametrize("setup", [False, True])
async def test_a_connection_that_cannot_start_is_refused_and_the_server_goes_on(
    setup: bool,
) -> None:
    """Starting a connection runs in the accept loop (or its setup task): a
    failure there closes that connection only, and gives its slot back."""

    class Flaky(Connection[str, str]):
        def start(self, stream: anyio.abc.ByteStream) -> None:
            if self.id == 1:
                raise RuntimeError("cannot start")
            super().start(stream)

    app: App[str, str] = App(codec=Lines(), busy_poll=0, connection_class=Flaky)

    @app.on_input
    def echo(conn: Connection[str, str], line: str) -> None:
        conn.put(line)

    if setup:

        @app.pre_connect
        def admit(conn: Connection[str, str], stream: anyio.abc.ByteStream) -> bool:
            return True

    async with app.start(host="127.0.0.1", port=0) as server:
        assert server.port is not None
        first = await connect(server.port)
        with anyio.fail_after(5):
            assert await read_to_end(first) == b""
        await first.aclose()
        (second,) = await open_idle(server.port, 1)
        assert server.stats.rejected == 1
        await second.aclose()
        await wait_for("every connection ended", lambda: server.connection_count == 0)
        assert server.stats.current == 0


# -- the end without a task ---------------------------------------------------------------


def task_function() -> str:
    """The function the running task was started with ("" where no task runs: a callback)."""
    try:
        task = asyncio.current_task()
    except RuntimeError:  # no asyncio loop: trio
        import trio

        return trio.lowlevel.current_task().name
    return "" if task is None else str(task.get_coro().__qualname__)  # type: ignore[union-attr]


def ending_app(**options: Any) -> tuple[App[str, str], list[tuple[str | None, str]]]:
    """A line echo ("quit" also shuts down) recording each on_disconnect: (close reason, task)."""
    app: App[str, str] = App(codec=Lines(), busy_poll=0, **options)
    ended: list[tuple[str | None, str]] = []

    @app.on_input
    def echo(conn: Connection[str, str], line: str) -> None:
        conn.put(line)
        if line == "quit":
            conn.shutdown()

    @app.on_disconnect
    def disconnect(conn: Connection[str, str]) -> None:
        ended.append((conn.close_reason, task_function()))

    return app, ended


@pytest.mark.parametrize(
    ("sent", "reply", "why"),
    [
        (b"", b"", "eof"),  # the client just ends its stream
        (b"last\n", b"last\r\n", "eof"),  # a line and the end in one segment
        (b"a\nb\npartial", b"a\r\nb\r\n", "error"),  # a partial line at the end: an error
    ],
    ids=["eof", "line+eof", "partial+eof"],
)
async def test_a_parked_connection_ends_without_a_task_at_the_clients_end(
    sent: bytes, reply: bytes, why: str
) -> None:
    """The client ends its stream: the rest is handled (an error reported), the
    replies go out, the connection closes and on_disconnect runs, right in the
    transport's callback (no task: nothing in that end waits). The client reads
    everything, then EOF."""
    app, ended = ending_app()
    async with app.start(host="127.0.0.1", port=0) as server:
        assert server.port is not None
        (client,) = await open_idle(server.port, 1)
        await client.send(sent)
        await client.send_eof()
        with anyio.fail_after(5):
            assert await read_to_end(client) == reply
        await wait_for("ended", lambda: server.connection_count == 0)
        await client.aclose()
        assert server.stats.current == 0
    assert len(ended) == 1
    reason, task = ended[0]
    assert reason == why
    assert "Driver._task" not in task, task


async def test_many_parked_connections_end_without_a_task_and_free_their_slots() -> None:
    app, ended = ending_app(max_connections=5)
    async with app.start(host="127.0.0.1", port=0) as server:
        assert server.port is not None
        for rnd in range(4):  # more connections than slots, in rounds: each frees its slot
            clients = await open_idle(server.port, 5)
            for client in clients:
                await client.send_eof()
                with anyio.fail_after(5):
                    assert await read_to_end(client) == b""
                await client.aclose()
            await wait_for(f"round {rnd} ended", lambda: server.connection_count == 0)
    assert len(ended) == 20
    assert [t for r, t in ended if r != "eof" or "Driver._task" in t] == []


@pytest.mark.parametrize("linger", [0, 2.0])
async def test_a_handler_that_shuts_down_a_parked_connection(linger: float) -> None:
    """A "quit" line: the reply goes out, then the server closes. Without a linger
    (``linger=0``) nothing in that end waits: it needs no task; with one, the
    end waits for the client's end of stream (in a task)."""
    app, ended = ending_app(linger=linger)
    async with app.start(host="127.0.0.1", port=0) as server:
        assert server.port is not None
        (client,) = await open_idle(server.port, 1)
        await client.send(b"quit\n")
        got = b""
        with anyio.fail_after(5):
            while not got.endswith(b"\r\n"):
                got += await client.receive()
        assert got == b"quit\r\n"
        if linger:
            await client.send_eof()  # (the lingering server reads to the client's end)
        with anyio.fail_after(5):
            assert await read_to_end(client) == b""
        await wait_for("ended", lambda: server.connection_count == 0)
        await client.aclose()
    ((reason, task),) = ended
    assert reason == "shutdown"
    assert ("Driver._task" in task) == bool(linger), task


@pytest.mark.parametrize("kind", ["async def", "def returning a coroutine", "def raising"])
async def test_the_end_of_a_parked_connection_with_other_on_disconnect_handlers(
    kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    """on_disconnect as ``async def`` (the end then runs in a task), as a plain
    ``def`` returning a coroutine (awaited), or raising (logged; the server goes
    on): each runs once, and the connection's slot is given back."""
    app: App[str, str] = App(codec=Lines(), busy_poll=0)
    done: list[str] = []

    @app.on_input
    def echo(conn: Connection[str, str], line: str) -> None:
        conn.put(line)

    async def later(conn: Connection[str, str]) -> None:
        await anyio.sleep(0.01)
        # The connection ends once its on_disconnect has: it still counts here.
        done.append(f"#{conn.id} {conn.server.connection_count}")

    if kind == "async def":
        app.add_on_disconnect(later)
    elif kind == "def returning a coroutine":
        app.add_on_disconnect(lambda conn: later(conn))
    else:

        def raising(conn: Connection[str, str]) -> None:
            done.append(f"#{conn.id}")
            raise RuntimeError("on_disconnect failed")

        app.add_on_disconnect(raising)

    async with app.start(host="127.0.0.1", port=0) as server:
        assert server.port is not None
        for _ in range(3):
            (client,) = await open_idle(server.port, 1)
            await client.send_eof()
            with anyio.fail_after(5):
                assert await read_to_end(client) == b""
            await client.aclose()
        await wait_for("ended", lambda: server.connection_count == 0 and len(done) == 3)
        assert server.stats.current == 0
    assert sorted(d.split()[0] for d in done) == ["#1", "#2", "#3"]  # (async: any order)
    if kind != "def raising":
        assert all(int(d.split()[1]) >= 1 for d in done), done
    if kind == "def raising":
        assert caplog.text.count("on_disconnect raised") == 3


async def test_input_that_wakes_a_parked_connection_while_a_write_drains_waits_for_it() -> None:
    """Output queued from outside (a broadcast) drains in a helper while the
    client reads slowly; a line the client sends meanwhile is answered after
    all of it, never in the middle of a line (failed on trio: the reply went
    out through the wake callback while the drain waited)."""
    app = echo_app()
    line = "B" * 60_000
    count = 100
    async with app.start(host="127.0.0.1", port=0) as server:
        assert server.port is not None
        (client,) = await open_idle(server.port, 1)
        (conn,) = server.connections
        for _ in range(count):
            conn.put(line)  # from outside the connection's turns: a helper writes it
        await anyio.sleep(0.2)  # the socket buffers fill; the helper waits to drain
        got = await client.receive(1)
        await client.send(b"ping\n")
        total = count * (len(line) + 2) + len(b"ping\r\n")
        with anyio.fail_after(20):
            while len(got) < total:
                got += await client.receive(1 << 20)
        assert got == (line.encode() + b"\r\n") * count + b"ping\r\n"
        await client.aclose()
        await wait_for("ended", lambda: server.connection_count == 0)


@pytest.mark.skipif(not Path("/proc/self/fd").exists(), reason="needs /proc")
@pytest.mark.parametrize("style", ["def", "async def"])
async def test_a_connection_is_counted_until_its_socket_is_closed(style: str) -> None:
    """SPEC: ``connection_count`` counts sockets from accept to close (so
    ``max_connections`` bounds open sockets). Checked at the first moment the
    count drops, for an end run without a task (``def``: in the data
    callback, on asyncio the socket closes at the loop's next turn) and for
    a task's end."""
    app = echo_app(is_async=style == "async def")
    async with app.start(host="127.0.0.1", port=0) as server:
        assert server.port is not None
        for i in range(3):
            client = await connect(server.port)
            await exchange(client, b"%d\n" % i, b"%d\r\n" % i)
            open_now = len(os.listdir("/proc/self/fd"))
            await client.send_eof()  # the server reads EOF and ends (nothing to linger for)
            with anyio.fail_after(5):
                while server.connection_count:
                    await anyio.sleep(0)
            assert len(os.listdir("/proc/self/fd")) == open_now - 1, "the socket is still open"
            assert await read_to_end(client) == b""
            await client.aclose()
