"""In-memory connections: byte streams that behave like TCP's, and a listener of them.

:func:`memory_stream_pair` makes two connected :class:`MemoryByteStream`
endpoints. Each direction is a bounded byte pipe, so a client that does not
read pushes back on the server exactly as a full socket buffer does.
:class:`MemoryListener` is an anyio listener that hands out the server ends
of the pairs its :meth:`~MemoryListener.connect` makes: a server serves it
like any listener, which is how :class:`~tcpkit.testing.TestServer` runs an
app with no socket.
"""

from __future__ import annotations

import errno
import socket
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any, TypeAlias

import anyio
import anyio.abc
import anyio.lowlevel
from anyio.abc import SocketAttribute

from .._listeners import AcceptingListener

__all__ = ["Address", "MemoryByteStream", "MemoryListener", "memory_stream_pair"]

Address: TypeAlias = tuple[str, int] | str
"""A socket address as ``SocketAttribute`` reports it: ``(host, port)`` or a Unix path."""

SERVER_ADDRESS: tuple[str, int] = ("127.0.0.1", 12345)
BUFFER_SIZE = 65536
READ_SIZE = 65536


class _Pipe:
    """One direction of an in-memory connection: a byte buffer bounded like a socket's.

    The writer waits while the buffer is full; the reader takes bytes only after
    its wait is over, so a cancelled ``receive`` never loses data.
    """

    __slots__ = ("_event", "buffer", "capacity", "read_closed", "reset", "write_closed")

    def __init__(self, capacity: int) -> None:
        self.buffer = bytearray()
        self.capacity = capacity
        self.write_closed = False  # the writer sent EOF or closed: EOF after the buffer
        self.read_closed = False  # the reader is gone: further writes fail
        self.reset = False  # the writer reset the connection: reads fail
        self._event: anyio.Event | None = None

    def notify(self) -> None:
        """Wake every task waiting on this pipe (they re-check their condition)."""
        event = self._event
        if event is not None:
            self._event = None
            event.set()

    async def wait(self) -> None:
        event = self._event
        if event is None:
            event = self._event = anyio.Event()
        await event.wait()

    async def write(self, data: bytes) -> None:
        await anyio.lowlevel.checkpoint()
        view = memoryview(data)
        while view:
            if self.read_closed:
                raise anyio.BrokenResourceError("the peer closed the connection")
            room = self.capacity - len(self.buffer)
            if room <= 0:
                await self.wait()
                continue
            self.buffer += view[:room]
            view = view[room:]
            self.notify()

    def read_nowait(self, max_bytes: int) -> bytes:
        if self.reset:
            reset = ConnectionResetError(errno.ECONNRESET, "connection reset by peer")
            raise anyio.BrokenResourceError("the peer reset the connection") from reset
        if not self.buffer:
            if self.write_closed:
                raise anyio.EndOfStream
            raise anyio.WouldBlock
        data = bytes(self.buffer[:max_bytes])
        del self.buffer[:max_bytes]
        self.notify()
        return data

    def readable(self) -> bool:
        return bool(self.buffer) or self.write_closed or self.read_closed or self.reset

    def close_write(self) -> None:
        self.write_closed = True
        self.notify()

    def close_read(self) -> None:
        self.read_closed = True
        self.buffer.clear()
        self.notify()

    def reset_by_writer(self) -> None:
        """The writer reset the connection: what is buffered is lost, reads fail."""
        self.reset = self.write_closed = True
        self.buffer.clear()
        self.notify()


class MemoryByteStream(anyio.abc.ByteStream):
    """One end of an in-memory TCP-like connection; made by :func:`memory_stream_pair`.

    It behaves as anyio's ``SocketStream`` does where tcpkit can tell:
    ``send`` waits while the peer's receive buffer is full (backpressure),
    ``send_eof`` half-closes, ``receive`` raises ``anyio.EndOfStream`` after the
    peer's EOF, and sending to a peer that closed raises
    ``anyio.BrokenResourceError``. ``extra(SocketAttribute.remote_address)``
    and friends report the addresses given to :func:`memory_stream_pair`.
    """

    def __init__(self, incoming: _Pipe, outgoing: _Pipe, local: Address, remote: Address) -> None:
        self._incoming = incoming
        self._outgoing = outgoing
        self._local = local
        self._remote = remote
        self._closed = False

    @property
    def closed(self) -> bool:
        """True once :meth:`aclose` has been called on this end."""
        return self._closed

    @property
    def eof_received(self) -> bool:
        """True once the peer sent EOF or closed (bytes may still be unread)."""
        return self._incoming.write_closed

    async def send(self, item: bytes) -> None:
        """Write ``item``, waiting while the peer's buffer is full.

        Raises:
            anyio.ClosedResourceError: this end was closed, or ``send_eof`` was called.
            anyio.BrokenResourceError: the peer closed its end.
        """
        if self._closed or self._outgoing.write_closed:
            raise anyio.ClosedResourceError
        await self._outgoing.write(item)

    async def send_eof(self) -> None:
        """Half-close: the peer reads EOF after the bytes already sent.

        Raises:
            anyio.ClosedResourceError: this end was closed.
        """
        if self._closed:
            raise anyio.ClosedResourceError
        self._outgoing.close_write()
        await anyio.lowlevel.checkpoint()

    async def receive(self, max_bytes: int = READ_SIZE) -> bytes:
        """Return up to ``max_bytes`` bytes, waiting for at least one.

        Raises:
            anyio.EndOfStream: the peer sent EOF (or closed) and every byte was read.
            anyio.ClosedResourceError: this end was closed.
        """
        await anyio.lowlevel.checkpoint()
        while True:
            try:
                return self.receive_nowait(max_bytes)
            except anyio.WouldBlock:
                await self._incoming.wait()

    def receive_nowait(self, max_bytes: int = READ_SIZE) -> bytes:
        """Return up to ``max_bytes`` bytes already received, without waiting.

        Raises:
            anyio.WouldBlock: no byte is waiting.
            anyio.EndOfStream: the peer sent EOF (or closed) and every byte was read.
            anyio.ClosedResourceError: this end was closed.
        """
        if self._closed:
            raise anyio.ClosedResourceError
        return self._incoming.read_nowait(max_bytes)

    async def wait_readable(self) -> None:
        """Wait until bytes or EOF can be read, or until :meth:`wake` is called."""
        if self._incoming.readable():
            await anyio.lowlevel.checkpoint()
        else:
            await self._incoming.wait()

    def wake(self) -> None:
        """Wake a task waiting in :meth:`wait_readable` (or ``receive``, which waits again)."""
        self._incoming.notify()

    async def wait_incoming(self) -> None:
        """Wait for the next change on the incoming side (data, EOF, close, :meth:`wake`)."""
        await self._incoming.wait()

    def close(self) -> None:
        """Close both directions at once; bytes not yet read are discarded.

        The peer reads EOF after what was already sent, and its next ``send``
        raises ``anyio.BrokenResourceError`` (as a TCP reset would). Safe to
        call more than once.
        """
        if self._closed:
            return
        self._closed = True
        self._outgoing.close_write()
        self._incoming.close_read()

    async def aclose(self) -> None:
        """Close as :meth:`close` does (it never blocks)."""
        self.close()

    def reset(self) -> None:
        """Close abortively, as a TCP reset (``SO_LINGER`` 0) does.

        Bytes not yet read on either side are discarded; the peer's next
        ``receive`` raises ``anyio.BrokenResourceError`` with a
        ``ConnectionResetError`` as its cause, as do its sends.
        """
        if self._closed:
            return
        self._closed = True
        self._outgoing.reset_by_writer()
        self._incoming.close_read()

    @property
    def extra_attributes(self) -> Mapping[Any, Callable[[], Any]]:
        local, remote = self._local, self._remote
        if isinstance(remote, str) or isinstance(local, str):
            family = socket.AF_UNIX
        else:
            family = socket.AF_INET6 if ":" in remote[0] else socket.AF_INET
        attributes: dict[Any, Callable[[], Any]] = {
            SocketAttribute.family: lambda: family,
            SocketAttribute.local_address: lambda: local,
            SocketAttribute.remote_address: lambda: remote,
        }
        if isinstance(local, tuple):
            attributes[SocketAttribute.local_port] = lambda: local[1]
        if isinstance(remote, tuple):
            attributes[SocketAttribute.remote_port] = lambda: remote[1]
        return attributes

    def __repr__(self) -> str:
        return f"<MemoryByteStream {self._local!r} -> {self._remote!r}>"


def memory_stream_pair(
    *,
    client_address: Address = ("127.0.0.1", 50000),
    server_address: Address = SERVER_ADDRESS,
    buffer_size: int = BUFFER_SIZE,
) -> tuple[MemoryByteStream, MemoryByteStream]:
    """Two connected in-memory byte streams: ``(client_end, server_end)``.

    Args:
        client_address: the client's address (the server end's ``remote_address``).
        server_address: the server's address (the client end's ``remote_address``).
        buffer_size: bytes each direction holds before ``send`` waits for the
            reader (a socket's buffer).

    Raises:
        ValueError: ``buffer_size`` is not positive.
    """
    if buffer_size < 1:
        raise ValueError("buffer_size must be at least 1")
    to_server, to_client = _Pipe(buffer_size), _Pipe(buffer_size)
    client = MemoryByteStream(to_client, to_server, client_address, server_address)
    server = MemoryByteStream(to_server, to_client, server_address, client_address)
    return client, server


class MemoryListener(AcceptingListener[MemoryByteStream]):
    """An anyio listener of in-memory connections (a server serves it like a socket's).

    Each :meth:`connect` makes a :func:`memory_stream_pair` and queues its
    server end for :meth:`accept`, as a kernel backlog does: a server that is
    at ``max_connections`` leaves it waiting there. Closing the listener
    closes the connections still waiting (as the kernel resets a closed
    listener's backlog).

    Args:
        address: the server's address, as its connections report it.
        buffer_size: bytes each direction of a connection holds before the
            writer waits (a socket buffer).

    Raises:
        ValueError: ``buffer_size`` is not positive.
    """

    def __init__(
        self, address: Address = SERVER_ADDRESS, *, buffer_size: int = BUFFER_SIZE
    ) -> None:
        if buffer_size < 1:
            raise ValueError("buffer_size must be at least 1")
        self.address = address
        self.buffer_size = buffer_size
        self._backlog: deque[MemoryByteStream] = deque()
        self._event: anyio.Event | None = None
        self._closed = False

    def connect(self, client_address: Address = ("127.0.0.1", 50000)) -> MemoryByteStream:
        """Connect a new client; return its end (the server end waits for :meth:`accept`).

        Raises:
            anyio.ClosedResourceError: the listener is closed (a refused connect).
        """
        if self._closed:
            raise anyio.ClosedResourceError
        client, server = memory_stream_pair(
            client_address=client_address,
            server_address=self.address,
            buffer_size=self.buffer_size,
        )
        self._backlog.append(server)
        self._notify()
        return client

    async def accept(self) -> MemoryByteStream:
        """Wait for the next connection and return its server end.

        Raises:
            anyio.ClosedResourceError: the listener is closed.
        """
        await anyio.lowlevel.checkpoint()
        while not self._backlog:
            if self._closed:
                raise anyio.ClosedResourceError
            event = self._event
            if event is None:
                event = self._event = anyio.Event()
            await event.wait()
        return self._backlog.popleft()

    async def aclose(self) -> None:
        """Close: waiting connections are closed, and :meth:`accept` raises from now on."""
        self._closed = True
        while self._backlog:
            self._backlog.popleft().close()
        self._notify()

    def _notify(self) -> None:
        event, self._event = self._event, None
        if event is not None:
            event.set()

    @property
    def extra_attributes(self) -> Mapping[Any, Callable[[], Any]]:
        address = self.address
        return {SocketAttribute.local_address: lambda: address}
