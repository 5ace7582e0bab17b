"""tcpkit.testing.memory_stream_pair: in-memory byte streams that behave like TCP."""

from __future__ import annotations

import socket

import anyio
import pytest
from anyio.abc import SocketAttribute

from tcpkit.testing import MemoryByteStream, memory_stream_pair

pytestmark = pytest.mark.anyio


async def test_bytes_flow_both_ways_and_addresses_are_reported() -> None:
    client, server = memory_stream_pair(
        client_address=("10.0.0.7", 4242), server_address=("10.0.0.1", 80)
    )
    await client.send(b"ping")
    assert await server.receive() == b"ping"
    await server.send(b"pong")
    assert await client.receive() == b"pong"
    assert server.extra(SocketAttribute.remote_address) == ("10.0.0.7", 4242)
    assert server.extra(SocketAttribute.remote_port) == 4242
    assert server.extra(SocketAttribute.local_address) == ("10.0.0.1", 80)
    assert client.extra(SocketAttribute.remote_address) == ("10.0.0.1", 80)
    assert client.extra(SocketAttribute.family) == socket.AF_INET


async def test_ipv6_and_unix_addresses() -> None:
    _, v6 = memory_stream_pair(client_address=("::1", 1), server_address=("::1", 2))
    assert v6.extra(SocketAttribute.family) == socket.AF_INET6
    _, unix = memory_stream_pair(client_address="", server_address="/tmp/app.sock")
    assert unix.extra(SocketAttribute.family) == socket.AF_UNIX
    assert unix.extra(SocketAttribute.local_address) == "/tmp/app.sock"
    assert unix.extra(SocketAttribute.remote_port, None) is None


async def test_receive_respects_max_bytes_and_keeps_the_rest() -> None:
    client, server = memory_stream_pair()
    await client.send(b"abcdef")
    assert await server.receive(4) == b"abcd"
    assert await server.receive(4) == b"ef"


async def test_send_eof_is_a_half_close() -> None:
    client, server = memory_stream_pair()
    await client.send(b"last words")
    await client.send_eof()
    assert await server.receive() == b"last words"
    with pytest.raises(anyio.EndOfStream):
        await server.receive()
    await server.send(b"still talking")  # the other direction stays open
    assert await client.receive() == b"still talking"
    with pytest.raises(anyio.ClosedResourceError):
        await client.send(b"after eof")


async def test_close_gives_eof_then_a_reset_to_the_peer() -> None:
    client, server = memory_stream_pair()
    await client.send(b"bye")
    await client.aclose()
    await client.aclose()  # twice is fine
    assert client.closed
    assert await server.receive() == b"bye"
    with pytest.raises(anyio.EndOfStream):
        await server.receive()
    with pytest.raises(anyio.BrokenResourceError):
        await server.send(b"nobody listens")
    with pytest.raises(anyio.ClosedResourceError):
        await client.receive()
    with pytest.raises(anyio.ClosedResourceError):
        await client.send(b"x")


async def test_a_full_buffer_pushes_back_on_the_writer() -> None:
    client, server = memory_stream_pair(buffer_size=10)
    sent = anyio.Event()

    async def write() -> None:
        await server.send(b"x" * 25)
        sent.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(write)
        await anyio.wait_all_tasks_blocked()
        assert not sent.is_set()  # 10 bytes buffered, 15 waiting
        received = b""
        while len(received) < 25:
            received += await client.receive()
        await sent.wait()
    assert received == b"x" * 25


async def test_a_writer_blocked_on_a_full_buffer_is_reset_when_the_reader_closes() -> None:
    client, server = memory_stream_pair(buffer_size=4)
    error: list[BaseException] = []

    async def write() -> None:
        try:
            await server.send(b"more than four bytes")
        except anyio.BrokenResourceError as exc:
            error.append(exc)

    async with anyio.create_task_group() as tg:
        tg.start_soon(write)
        await anyio.wait_all_tasks_blocked()
        assert not error
        await client.aclose()
    assert len(error) == 1


async def test_a_cancelled_receive_loses_nothing() -> None:
    client, server = memory_stream_pair()
    with anyio.move_on_after(0.01):
        await server.receive()
    await client.send(b"kept")
    with anyio.CancelScope() as scope:
        scope.cancel()
        with pytest.raises(anyio.get_cancelled_exc_class()):
            await server.receive()
    assert await server.receive() == b"kept"


async def test_receive_nowait_and_wait_readable() -> None:
    client, server = memory_stream_pair()
    with pytest.raises(anyio.WouldBlock):
        server.receive_nowait()
    await client.send(b"now")
    await server.wait_readable()
    assert server.receive_nowait() == b"now"
    async with anyio.create_task_group() as tg:
        tg.start_soon(server.wait_readable)
        await anyio.wait_all_tasks_blocked()
        server.wake()  # wakes the waiter though nothing arrived


def test_buffer_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="buffer_size"):
        memory_stream_pair(buffer_size=0)
    assert isinstance(memory_stream_pair()[0], MemoryByteStream)
