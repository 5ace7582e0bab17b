"""The fast socket streams (``tcpkit._asyncio_stream``, ``tcpkit._trio_stream``).

Each test runs on asyncio, uvloop and trio: ``serve_listener`` picks the
stream of the running backend. The peer is a plain anyio stream. The streams
are anyio ``SocketStream`` objects and ``tcpkit._transport.Transport`` ones.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.abc
import pytest
from anyio.abc import SocketAttribute

from tcpkit._asyncio_stream import STREAK, AsyncioSocketListener, AsyncioSocketStream
from tcpkit._listeners import serve_listener
from tcpkit._transport import ReceiveInterrupted, StreamTransport, Transport


def fast_listener(listener: anyio.abc.SocketListener) -> Any:
    """The backend's fast listener over ``listener`` (what a server accepts from)."""
    return serve_listener(listener).listener


pytestmark = pytest.mark.anyio


@asynccontextmanager
async def pair() -> AsyncIterator[tuple[anyio.abc.SocketStream, anyio.abc.SocketStream]]:
    """(server side: a fast stream, client side: an anyio stream), both closed at the end."""
    listener = fast_listener(await anyio.create_tcp_listener(local_host="127.0.0.1"))
    try:
        port = listener.extra(SocketAttribute.local_port)
        client = await anyio.connect_tcp("127.0.0.1", port)
        with anyio.fail_after(10):
            server = await listener.accept()
        try:
            yield server, client
        finally:
            await server.aclose()
            await client.aclose()
    finally:
        await listener.aclose()


async def close_all(
    streams: list[Any], socks: list[socket.socket], listener: anyio.abc.Listener[Any]
) -> None:
    """Close the server's ``streams``, the clients' ``socks``, then the ``listener``."""
    for stream in streams:
        await stream.aclose()
    for sock in socks:
        sock.close()
    await listener.aclose()


async def read_exactly(stream: anyio.abc.ByteStream, n: int) -> bytes:
    data = b""
    with anyio.fail_after(10):
        while len(data) < n:
            data += await stream.receive()
    return data


async def read_to_eof(stream: anyio.abc.ByteStream) -> bytes:
    chunks: list[bytes] = []
    with anyio.fail_after(20):
        while True:
            try:
                chunks.append(await stream.receive())
            except anyio.EndOfStream:
                return b"".join(chunks)


async def test_the_fast_stream_of_the_backend_is_used(anyio_backend: Any) -> None:
    name, _ = anyio_backend
    async with pair() as (server, _client):
        if name == "trio":
            from tcpkit._trio_stream import TrioSocketStream

            assert isinstance(server, TrioSocketStream)
        else:
            assert isinstance(server, AsyncioSocketStream)
        assert isinstance(server, anyio.abc.SocketStream)


async def test_echo_both_ways_and_attributes() -> None:
    async with pair() as (server, client):
        await client.send(b"hello")
        assert await read_exactly(server, 5) == b"hello"
        await server.send(b"world")
        assert await read_exactly(client, 5) == b"world"
        assert server.extra(SocketAttribute.remote_address) == client.extra(
            SocketAttribute.local_address
        )
        assert server.extra(SocketAttribute.local_address) == client.extra(
            SocketAttribute.remote_address
        )
        assert server.extra(SocketAttribute.remote_port) == client.extra(SocketAttribute.local_port)
        assert server.extra(SocketAttribute.local_port) == client.extra(SocketAttribute.remote_port)
        assert server.extra(SocketAttribute.family) == socket.AF_INET
        assert server.extra(SocketAttribute.raw_socket).fileno() >= 0


async def test_receive_respects_max_bytes() -> None:
    async with pair() as (server, client):
        await client.send(b"x" * 100)
        got = b""
        with anyio.fail_after(10):
            while len(got) < 100:
                chunk = await server.receive(7)
                assert 1 <= len(chunk) <= 7
                got += chunk
        assert got == b"x" * 100
        with pytest.raises(ValueError, match="max_bytes"):
            await server.receive(0)


async def test_a_cancelled_receive_loses_nothing() -> None:
    async with pair() as (server, client):
        with anyio.move_on_after(0.05) as scope:
            await server.receive()
        assert scope.cancelled_caught
        await client.send(b"kept")
        assert await read_exactly(server, 4) == b"kept"


async def test_half_close_delivers_input_then_eof_and_output_still_flows() -> None:
    async with pair() as (server, client):
        await client.send(b"last words")
        await client.send_eof()
        assert await read_to_eof(server) == b"last words"
        with pytest.raises(anyio.EndOfStream):
            await server.receive()
        await server.send(b"reply after EOF")
        await server.send_eof()
        assert await read_to_eof(client) == b"reply after EOF"


async def test_completed_sends_survive_an_immediate_close() -> None:
    """What ``send`` returned for is in the kernel: ``aclose`` right after loses nothing."""
    payload = bytes(range(256)) * 16384  # 4 MiB: far more than the socket buffers
    async with pair() as (server, client), anyio.create_task_group() as tg:
        received: list[bytes] = []

        async def reader() -> None:
            received.append(await read_to_eof(client))

        tg.start_soon(reader)
        await server.send(payload)
        await server.aclose()
    assert received == [payload]


async def test_aclose_wakes_a_waiting_receive() -> None:
    async with pair() as (server, _client), anyio.create_task_group() as tg:
        errors: list[BaseException] = []

        async def receiver() -> None:
            try:
                await server.receive()
            except (anyio.ClosedResourceError, anyio.EndOfStream) as exc:
                errors.append(exc)

        tg.start_soon(receiver)
        await anyio.wait_all_tasks_blocked()
        await server.aclose()
    assert len(errors) == 1 and isinstance(errors[0], anyio.ClosedResourceError)
    with pytest.raises(anyio.ClosedResourceError):
        await server.send(b"x")


async def test_a_closed_stream_refuses_to_receive_even_with_input_pending() -> None:
    async with pair() as (server, client):
        await client.send(b"pending")
        await anyio.wait_all_tasks_blocked()
        await server.aclose()
        with pytest.raises(anyio.ClosedResourceError):
            await server.receive()


async def test_two_receivers_at_once_is_an_error() -> None:
    async with pair() as (server, client), anyio.create_task_group() as tg:
        tg.start_soon(server.receive)
        await anyio.wait_all_tasks_blocked()
        with pytest.raises(anyio.BusyResourceError):
            await server.receive()
        await client.send(b"done")  # lets the first receiver finish


async def test_a_reset_breaks_the_stream() -> None:
    async with pair() as (server, client):
        raw: socket.socket = client.extra(SocketAttribute.raw_socket)
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        await client.aclose()  # an RST

        async def use_until_broken() -> None:
            while True:  # the reset shows on receive or on a later send
                try:
                    await server.receive()
                except anyio.EndOfStream:
                    pass
                await server.send(b"x" * 65536)

        with anyio.fail_after(10), pytest.raises(anyio.BrokenResourceError):
            await use_until_broken()


async def test_a_connection_reset_before_it_was_accepted_has_attributes() -> None:
    """A client that resets while its connection waits in the accept queue: the
    stream's addresses are ``None`` where the kernel no longer knows them (uvloop's
    own ``get_extra_info("peername")`` raises once such a transport has closed)."""
    listener = fast_listener(await anyio.create_tcp_listener(local_host="127.0.0.1"))
    try:
        port = listener.extra(SocketAttribute.local_port)
        with socket.create_connection(("127.0.0.1", port)) as client:
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        # (closed: an RST, while the connection waits in the accept queue)
        with anyio.fail_after(10):
            server = await listener.accept()
        try:

            async def use_until_broken() -> None:
                while True:  # the reset shows on receive or on a later send
                    try:
                        await server.receive()
                    except anyio.EndOfStream:
                        pass
                    await server.send(b"x" * 65536)

            with anyio.fail_after(10), pytest.raises(anyio.BrokenResourceError):
                await use_until_broken()
            peer = server.extra(SocketAttribute.remote_address, None)
            local = server.extra(SocketAttribute.local_address, None)
            assert peer is None or peer[0] == "127.0.0.1"
            assert local is None or local == ("127.0.0.1", port)
        finally:
            await server.aclose()
    finally:
        await listener.aclose()


async def test_a_busy_stream_still_lets_other_tasks_run() -> None:
    """Operations that never wait yield every STREAK calls: no starvation."""
    async with pair() as (server, _client), anyio.create_task_group() as tg:
        ran: list[int] = []

        async def other() -> None:
            ran.append(1)

        tg.start_soon(other)
        for _ in range(2 * STREAK + 2):
            await server.send(b".")  # the kernel takes these at once: no wait
        assert ran == [1]


async def closing_wakes(
    wait: Callable[[], Awaitable[object]], close: Callable[[], Awaitable[None]]
) -> int:
    """Start ``wait()`` in a task, ``close()`` once it blocks; return how many
    ``ClosedResourceError`` the waiter got (1: closing woke it)."""
    errors: list[BaseException] = []

    async def waiter() -> None:
        try:
            await wait()
        except anyio.ClosedResourceError as exc:
            errors.append(exc)

    async with anyio.create_task_group() as tg:
        tg.start_soon(waiter)
        await anyio.wait_all_tasks_blocked()
        await close()
    return len(errors)


async def test_closing_the_listener_wakes_accept() -> None:
    listener = fast_listener(await anyio.create_tcp_listener(local_host="127.0.0.1"))
    assert await closing_wakes(listener.accept, listener.aclose) == 1
    with pytest.raises(anyio.ClosedResourceError):
        await listener.accept()


async def test_a_cancelled_accept_leaves_the_listener_usable() -> None:
    listener = fast_listener(await anyio.create_tcp_listener(local_host="127.0.0.1"))
    try:
        with anyio.move_on_after(0.05):
            await listener.accept()
        port = listener.extra(SocketAttribute.local_port)
        client = await anyio.connect_tcp("127.0.0.1", port)
        with anyio.fail_after(10):
            server = await listener.accept()
        await client.send(b"ok")
        assert await read_exactly(server, 2) == b"ok"
        await server.aclose()
        await client.aclose()
    finally:
        await listener.aclose()


async def test_a_connect_flood_does_not_starve_other_tasks() -> None:
    listener = fast_listener(await anyio.create_tcp_listener(local_host="127.0.0.1"))
    port = listener.extra(SocketAttribute.local_port)
    clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(2 * STREAK + 2)]
    accepted: list[anyio.abc.SocketStream] = []
    try:
        async with anyio.create_task_group() as tg:
            ran: list[int] = []

            async def other() -> None:
                ran.append(1)

            tg.start_soon(other)
            with anyio.fail_after(10):
                for _ in clients:
                    accepted.append(await listener.accept())
            assert ran == [1]
    finally:
        await close_all(accepted, clients, listener)


async def test_other_listeners_are_left_alone(anyio_backend: Any) -> None:
    name, _ = anyio_backend
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    wrapped = fast_listener(listener)
    try:
        assert wrapped is not listener
        if name != "trio":
            assert isinstance(wrapped, AsyncioSocketListener)
        assert wrapped.extra(SocketAttribute.local_port) == listener.extra(
            SocketAttribute.local_port
        )
    finally:
        await wrapped.aclose()


async def test_write_takes_what_the_kernel_takes_and_drain_sends_the_rest() -> None:
    async with pair() as (server, client):
        assert isinstance(server, Transport)
        assert server.write(b"hello") is True
        assert server.buffered == 0
        assert await read_exactly(client, 5) == b"hello"
        big = b"x" * (16 * 1024 * 1024)  # more than the socket buffers hold
        assert server.write(big) is False
        assert 0 < server.buffered < len(big)
        received: list[bytes] = []

        async def read_all() -> None:
            received.append(await read_to_eof(client))

        async with anyio.create_task_group() as tg:
            tg.start_soon(read_all)
            await server.drain()  # the rest goes out
            assert server.buffered == 0
            await server.send(b"tail")
            await server.aclose()
        assert received == [big + b"tail"]
        with pytest.raises(anyio.BrokenResourceError):
            server.write(b"late")


async def test_a_write_while_a_drain_waits_goes_out_after_the_rest() -> None:
    """Bytes written while a drain waits for room are sent after what it sends,
    even once the kernel has room (failed on trio: they went out at once, in the
    middle of the drained bytes)."""
    async with pair() as (server, client):
        assert isinstance(server, Transport)
        big = b"x" * (16 * 1024 * 1024)  # more than the socket buffers hold
        assert server.write(big) is False
        async with anyio.create_task_group() as tg:
            tg.start_soon(server.drain)
            await anyio.wait_all_tasks_blocked()  # the drain waits for room
            first = await client.receive(1 << 20)  # room in the kernel now
            assert server.write(b"tail") is False  # (before the drain has run again)
            rest = await read_exactly(client, len(big) + 4 - len(first))
        assert first + rest == big + b"tail"
        assert server.buffered == 0


# -- the inline mode (Transport.set_data_callback) ---------------------------


@asynccontextmanager
async def inline_pair() -> AsyncIterator[tuple[Any, anyio.abc.SocketStream]]:
    """Like :func:`pair`, with the listener's reactor running on trio (as the server does)."""
    served = serve_listener(await anyio.create_tcp_listener(local_host="127.0.0.1"))
    listener: Any = served.listener
    async with anyio.create_task_group() as tg:
        if served.background is not None:  # trio's reactor
            tg.start_soon(served.background)
            await anyio.wait_all_tasks_blocked()
        try:
            port = listener.extra(SocketAttribute.local_port)
            client = await anyio.connect_tcp("127.0.0.1", port)
            with anyio.fail_after(10):
                server = await listener.accept()
            try:
                yield server, client
            finally:
                await server.aclose()
                await client.aclose()
        finally:
            await listener.aclose()
            tg.cancel_scope.cancel()


async def wait_for(condition: Any) -> None:
    with anyio.fail_after(10):
        while not condition():
            await anyio.sleep(0.001)


async def test_inline_callback_takes_bytes_while_a_task_waits_in_receive() -> None:
    async with inline_pair() as (server, client):
        got: list[bytes] = []
        consume = [True]

        def on_data(data: bytes) -> bool:
            if not consume[0]:
                return False
            got.append(data)
            return True

        assert server.set_data_callback(on_data) is True
        results: list[str] = []

        async def reader() -> None:
            try:
                await server.receive()
            except ReceiveInterrupted:
                results.append("interrupted")

        async with anyio.create_task_group() as tg:
            tg.start_soon(reader)
            await client.send(b"abc")
            await wait_for(lambda: got == [b"abc"])
            assert results == []  # the task still waits: the callback had it
            server.interrupt_receive()  # the callback needs its task
        assert results == ["interrupted"]
        consume[0] = False  # now it declines: the bytes go to receive
        await client.send(b"xyz")
        assert await read_exactly(server, 3) == b"xyz"
        server.set_data_callback(None)
        await client.send(b"plain")
        assert await read_exactly(server, 5) == b"plain"


async def test_an_interrupt_before_receive_makes_it_raise_at_once() -> None:
    async with inline_pair() as (server, client):
        server.interrupt_receive()
        with pytest.raises(ReceiveInterrupted):
            await server.receive()
        await client.send(b"next")  # nothing was lost, and the next receive waits as usual
        assert await read_exactly(server, 4) == b"next"


async def test_inline_mode_ends_with_eof_and_close_wakes_the_reader() -> None:
    async with inline_pair() as (server, client):
        server.set_data_callback(lambda data: False)
        await client.send(b"last")
        await client.send_eof()
        assert await read_to_eof(server) == b"last"
    async with inline_pair() as (server, client):
        server.set_data_callback(lambda data: True)
        assert await closing_wakes(server.receive, server.aclose) == 1


@pytest.mark.parametrize("anyio_backend", [("trio", {})], ids=["trio"])
async def test_trio_inline_mode_needs_its_reactor(anyio_backend: Any) -> None:
    # Without a running reactor the callback is not used: receive gets the bytes.
    async with pair() as (server, client):
        assert server.set_data_callback(lambda data: True) is False  # type: ignore[attr-defined]
        await client.send(b"direct")
        assert await read_exactly(server, 6) == b"direct"
    # When the reactor stops, a waiting receive goes back to trio's own waits.
    served = serve_listener(await anyio.create_tcp_listener(local_host="127.0.0.1"))
    listener: Any = served.listener
    assert served.background is not None
    try:
        async with anyio.create_task_group() as tg:
            reactor = anyio.CancelScope()

            async def run_reactor() -> None:
                assert served.background is not None
                with reactor:
                    await served.background()

            tg.start_soon(run_reactor)
            await anyio.wait_all_tasks_blocked()
            port = listener.extra(SocketAttribute.local_port)
            client = await anyio.connect_tcp("127.0.0.1", port)
            server: Any = await listener.accept()
            seen: list[bytes] = []
            server.set_data_callback(lambda data: seen.append(data) or True)
            results: list[bytes] = []

            async def reader() -> None:
                results.append(await server.receive())

            tg.start_soon(reader)
            await client.send(b"inline")
            await wait_for(lambda: seen == [b"inline"])
            reactor.cancel()
            await anyio.wait_all_tasks_blocked()
            await client.send(b"after")
            await wait_for(lambda: results == [b"after"])
            await server.aclose()
            await client.aclose()
    finally:
        await listener.aclose()


@pytest.mark.parametrize("anyio_backend", [("trio", {})], ids=["trio"])
async def test_trio_a_task_waits_through_the_reactor_while_it_serves_several_sockets(
    anyio_backend: Any,
) -> None:
    # Without a data callback (an async def on_input), a task's receive is woken by the
    # reactor while a wake-up serves several sockets. One that serves a socket alone costs
    # a task switch more than trio's own wait: that task's next LONE_WAITS receives wait in
    # trio's, then it tries the reactor again. The bytes are the same either way.
    from tcpkit._trio_stream import LONE_WAITS

    served = serve_listener(await anyio.create_tcp_listener(local_host="127.0.0.1"))
    listener: Any = served.listener
    assert served.background is not None
    async with anyio.create_task_group() as tg:
        tg.start_soon(served.background)
        await anyio.wait_all_tasks_blocked()
        port = listener.extra(SocketAttribute.local_port)
        clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(2)]
        servers: list[Any] = [await listener.accept() for _ in clients]

        async def round_trip(senders: list[int], payload: bytes) -> None:
            got: dict[int, bytes] = {}

            async def reader(i: int) -> None:
                got[i] = await read_exactly(servers[i], len(payload))

            async with anyio.create_task_group() as readers:
                for i in senders:
                    readers.start_soon(reader, i)
                await anyio.wait_all_tasks_blocked()  # every reader waits
                for i in senders:  # (no checkpoint in between: the reactor sees them at once)
                    clients[i].sendall(payload)
            assert got == dict.fromkeys(senders, payload)

        try:
            assert [s.waits_in_reactor for s in servers] == [True, True]
            await round_trip([0, 1], b"both")
            assert [s.waits_in_reactor for s in servers] == [True, True]
            await round_trip([0], b"alone")
            assert [s.waits_in_reactor for s in servers] == [False, True]
            for n in range(LONE_WAITS):
                await round_trip([0], b"%d" % n)  # in trio's wait
            assert [s.waits_in_reactor for s in servers] == [True, True]
            await round_trip([0, 1], b"again")
        finally:
            await close_all(servers, clients, listener)
            tg.cancel_scope.cancel()


class _Inner(Transport):
    """A transport that only records interrupts (what TLS runs over, in the test below)."""

    def __init__(self) -> None:
        self.pending = False

    async def receive(self, max_bytes: int = 65536) -> bytes:
        raise AssertionError("not used")

    def interrupt_receive(self) -> None:
        self.pending = True

    def clear_interrupt(self) -> None:
        self.pending = False

    def write(self, data: bytes) -> bool:
        return True

    @property
    def buffered(self) -> int:
        return 0

    async def drain(self) -> None:
        pass

    async def send_eof(self) -> None:
        pass

    async def aclose(self) -> None:
        pass

    @property
    def stream(self) -> anyio.abc.ByteStream:
        raise AssertionError("not used")


async def test_a_forwarded_interrupt_does_not_outlive_the_receive() -> None:
    # TLS may return bytes it already decrypted without asking the stream under it:
    # an interrupt forwarded meanwhile must not make a later receive (or TLS's own
    # reads while it sends) fail.
    send, receive = anyio.create_memory_object_stream[bytes](1)
    inner = _Inner()
    transport = StreamTransport(_Received(receive), inner)
    results: list[bytes] = []

    async def reader() -> None:
        results.append(await transport.receive())

    async with anyio.create_task_group() as tg:
        tg.start_soon(reader)
        await anyio.sleep(0.01)
        transport.interrupt_receive()  # forwarded: the inner transport has it
        assert inner.pending
        await send.send(b"decrypted")  # ... but the bytes come without it
    assert results == [b"decrypted"] and not inner.pending
    transport.interrupt_receive()  # nobody waits: not forwarded, the next receive raises
    assert not inner.pending
    with pytest.raises(ReceiveInterrupted):
        await transport.receive()
    send.close()
    receive.close()


class _Received(anyio.abc.ByteStream):
    """A byte stream that only receives, from a memory object stream (for the test above)."""

    def __init__(self, receive: anyio.abc.ObjectReceiveStream[bytes]) -> None:
        self._receive = receive

    async def receive(self, max_bytes: int = 65536) -> bytes:
        return await self._receive.receive()

    async def send(self, item: bytes) -> None:
        raise AssertionError("not used")

    async def send_eof(self) -> None:
        raise AssertionError("not used")

    async def aclose(self) -> None:
        await self._receive.aclose()
