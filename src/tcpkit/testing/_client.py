"""In-memory test client and server, and a live server on loopback for tests.

:class:`TestClient` drives an :class:`~tcpkit.App` through its real pipeline
(``pre_connect``, codecs, handlers, write buffers, shutdown) over in-memory
byte streams: no socket, no port, the same on asyncio and trio. It is what
starlette's ``TestClient`` is to an ASGI app, built the way ``trio.testing``
builds its memory streams.

How it fits together:

* :func:`memory_stream_pair` makes two connected :class:`MemoryByteStream`
  endpoints. Each direction is a bounded byte pipe, so a client that does not
  read pushes back on the server exactly as a full socket buffer does.
* :class:`TestServer` runs the app's :class:`~tcpkit.Server` with no listener
  and hands it the server end of every pair it makes, counted and limited
  (``max_connections``) like an accepted socket.
* Handler exceptions reach ``on_error``; with ``raise_app_exceptions=True``
  (the default) the ones that would only have been logged are raised again in
  the test, at the next receive or when the block ends.
"""

from __future__ import annotations

import math
import socket
import ssl as _ssl
from collections import deque
from collections.abc import AsyncGenerator, Callable, Generator, Mapping
from contextlib import (
    AbstractAsyncContextManager,
    AsyncExitStack,
    asynccontextmanager,
    contextmanager,
)
from dataclasses import replace
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, TypeAlias, TypeVar

import anyio
import anyio.abc
import anyio.lowlevel
from anyio.abc import SocketAttribute
from typing_extensions import Self

from ..codecs.base import NEED_DATA, Codec, Decoder, Encoder, NeedData
from ..connection import Connection
from ..exceptions import FrameError, WriteBufferFull
from ..handlers import Handler, call, handler

if TYPE_CHECKING:
    from ..app import App
    from ..client import Channel, Reconnect
    from ..server import Server

__all__ = [
    "LiveServer",
    "MemoryByteStream",
    "TestClient",
    "TestServer",
    "client_codec",
    "live_server",
    "memory_stream_pair",
]

In = TypeVar("In")
Out = TypeVar("Out")
I = TypeVar("I")  # noqa: E741
O = TypeVar("O")  # noqa: E741

Address: TypeAlias = tuple[str, int] | str
"""A socket address as ``SocketAttribute`` reports it: ``(host, port)`` or a Unix path."""

DEFAULT_TIMEOUT = 5.0
"""Seconds a :class:`TestClient` receive waits by default before ``TimeoutError``."""

_SERVER_ADDRESS: tuple[str, int] = ("127.0.0.1", 12345)
_BUFFER_SIZE = 65536
_READ_SIZE = 65536

# Exceptions that tell about the peer or the transport, never about a bug in the
# app: a TestClient does not raise them again (the server logs them as usual).
_PEER_ERRORS = (
    FrameError,
    WriteBufferFull,
    anyio.BrokenResourceError,
    anyio.ClosedResourceError,
    anyio.EndOfStream,
    _ssl.SSLError,
)
# What the server itself logs as a peer problem when pre_connect fails.
_SETUP_PEER_ERRORS = (*_PEER_ERRORS, OSError)


# -- in-memory byte streams ---------------------------------------------------


class _Pipe:
    """One direction of an in-memory connection: a byte buffer bounded like a socket's.

    The writer waits while the buffer is full; the reader takes bytes only after
    its wait is over, so a cancelled ``receive`` never loses data.
    """

    __slots__ = ("_event", "buffer", "capacity", "read_closed", "write_closed")

    def __init__(self, capacity: int) -> None:
        self.buffer = bytearray()
        self.capacity = capacity
        self.write_closed = False  # the writer sent EOF or closed: EOF after the buffer
        self.read_closed = False  # the reader is gone: further writes fail
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
        if not self.buffer:
            if self.write_closed:
                raise anyio.EndOfStream
            raise anyio.WouldBlock
        data = bytes(self.buffer[:max_bytes])
        del self.buffer[:max_bytes]
        self.notify()
        return data

    def readable(self) -> bool:
        return bool(self.buffer) or self.write_closed or self.read_closed

    def close_write(self) -> None:
        self.write_closed = True
        self.notify()

    def close_read(self) -> None:
        self.read_closed = True
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

    async def receive(self, max_bytes: int = _READ_SIZE) -> bytes:
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

    def receive_nowait(self, max_bytes: int = _READ_SIZE) -> bytes:
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

    async def _wait_incoming(self) -> None:
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
    server_address: Address = _SERVER_ADDRESS,
    buffer_size: int = _BUFFER_SIZE,
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


# -- codecs --------------------------------------------------------------------


class _ClientCodec(Codec[O, I]):
    """The framing a client of an app speaks: it decodes what the app encodes, and back."""

    def __init__(self, decode: Codec[O, Any], encode: Codec[Any, I]) -> None:
        self._decode = decode
        self._encode = encode

    def decoder(self) -> Decoder[O]:
        return self._decode.decoder()

    def encoder(self) -> Encoder[I]:
        return self._encode.encoder()

    def __repr__(self) -> str:
        if self._decode is self._encode:
            return repr(self._decode)
        return f"client_codec(decode={self._decode!r}, encode={self._encode!r})"


def client_codec(app: App[In, Out]) -> Codec[Out, In]:
    """The codec a client of ``app`` speaks.

    Its decoder reads what the app's output codec writes, and its encoder
    writes what the app's input codec reads: pass it to :func:`tcpkit.connect`
    to talk to ``app`` with its own framing. For an app with one codec, it is
    that codec.
    """
    if app.input_codec is app.output_codec:
        return app.output_codec
    return _ClientCodec(app.output_codec, app.input_codec)


# -- the in-memory server --------------------------------------------------------


class TestServer(Generic[In, Out]):
    """Serve an app to in-memory clients (no listener, no port).

    ``async with TestServer(app) as test_server:`` starts the app's server as
    ``app.start()`` would, minus the listening sockets, and ``await
    test_server.connect()`` opens a :class:`TestClient` to it. Leaving the
    block shuts the server down as leaving ``app.start()`` does
    (``shutdown(grace=0)``: queued output is delivered, every
    ``on_disconnect`` and then ``on_stopped`` run); clients still open read
    and discard what is left so the shutdown never waits on them.

    ``async with TestClient(app)`` makes one of these for you; use
    :class:`TestServer` directly when a test wants several clients from the
    start (chat, broadcast).

    Args:
        app: the app to serve. It is frozen (no more handler registration).
        raise_app_exceptions: raise again, in the test, the exceptions the app
            would only have logged: an exception raised by a handler that reached
            the default ``on_error`` (not a codec or socket error caused by the
            peer), and an exception raised by ``pre_connect``, ``on_error``,
            ``on_disconnect``, ``on_stopped`` or a custom acceptor. The first one
            not yet raised is raised by the next receive of any client, or when
            the block ends.
        buffer_size: bytes each direction of a client connection holds before
            the writer waits (a socket buffer).

    Raises:
        ValueError: ``buffer_size`` is not positive.
    """

    __test__ = False  # not a pytest test class, whatever its name

    def __init__(
        self,
        app: App[In, Out],
        *,
        raise_app_exceptions: bool = True,
        buffer_size: int = _BUFFER_SIZE,
    ) -> None:
        if buffer_size < 1:
            raise ValueError("buffer_size must be at least 1")
        self.app = app
        self.raise_app_exceptions = raise_app_exceptions
        self.buffer_size = buffer_size
        self._server: Server[In, Out] | None = None
        self._stack: AsyncExitStack | None = None
        self._tg: anyio.abc.TaskGroup | None = None
        self._clients: list[TestClient[In, Out]] = []
        self._by_stream: dict[object, TestClient[In, Out]] = {}
        self._errors: deque[BaseException] = deque()
        self._state = "new"

    @property
    def server(self) -> Server[In, Out]:
        """The running :class:`~tcpkit.Server` (what handlers see as ``conn.server``).

        Raises:
            RuntimeError: the test server was not started with ``async with``.
        """
        if self._server is None:
            raise RuntimeError("the TestServer is not running: use `async with TestServer(app)`")
        return self._server

    @property
    def clients(self) -> list[TestClient[In, Out]]:
        """Every client opened so far, in order."""
        return list(self._clients)

    async def connect(self, *, remote_addr: Address | None = None) -> TestClient[In, Out]:
        """Open a new client connection to the server and return its :class:`TestClient`.

        Like a TCP connect, it returns once the server has the connection in its
        backlog: with ``max_connections`` reached, the connection waits for a
        free slot, and bytes sent meanwhile are buffered.

        Args:
            remote_addr: the client's address as the server sees it
                (``conn.remote_addr``); default ``("127.0.0.1", 50000 + n)``.

        Raises:
            RuntimeError: the test server is not running.
        """
        client = TestClient[In, Out]._attached(self)  # pyright: ignore[reportPrivateUsage]
        await self._attach(client, remote_addr)
        return client

    async def _attach(self, client: TestClient[In, Out], remote_addr: Address | None) -> None:
        """Connect ``client``: a new stream pair, the server end served as if accepted."""
        server = self._running_server()
        if remote_addr is None:
            used = {c._remote_addr for c in self._clients}  # pyright: ignore[reportPrivateUsage]
            port = 50000
            while ("127.0.0.1", port) in used:
                port += 1
            remote_addr = ("127.0.0.1", port)
        client_end, server_end = memory_stream_pair(
            client_address=remote_addr, server_address=_SERVER_ADDRESS, buffer_size=self.buffer_size
        )
        client._stream = client_end  # pyright: ignore[reportPrivateUsage]
        client._remote_addr = remote_addr  # pyright: ignore[reportPrivateUsage]
        self._clients.append(client)
        self._by_stream[server_end] = client
        server._serve_stream(server_end)  # pyright: ignore[reportPrivateUsage]
        await anyio.lowlevel.checkpoint()  # let the server take the connection in

    def _running_server(self) -> Server[In, Out]:
        if self._state != "running" or self._server is None:
            raise RuntimeError(
                "the TestServer is not running: use `async with TestServer(app)` "
                "(or `async with TestClient(app)`)"
            )
        return self._server

    async def __aenter__(self) -> Self:
        if self._state != "new":
            raise RuntimeError("a TestServer can be started only once")
        self._state = "starting"
        server = self._build_server()
        # The drain tasks of __aexit__ run in a task group around the server's.
        stack = AsyncExitStack()
        tg = await stack.enter_async_context(anyio.create_task_group())
        stack.callback(tg.cancel_scope.cancel)  # once the server stopped: stop draining
        try:
            await stack.enter_async_context(server._running(None))  # pyright: ignore[reportPrivateUsage]
        except BaseException:
            # Unwind with no exception, so that what the start raised (on_started's
            # error, a cancellation) comes out as itself, not in an exception group.
            await stack.aclose()
            self._state = "stopped"
            raise
        self._stack = stack
        self._server = server
        self._tg = tg
        self._state = "running"
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        stack, tg = self._stack, self._tg
        if stack is None or tg is None:
            return
        self._state = "stopping"
        self._stack = None
        try:
            for client in self._clients:
                if not client.closed:
                    tg.start_soon(client._drain)  # pyright: ignore[reportPrivateUsage]
            await stack.aclose()
        finally:
            self._state = "stopped"
            for client in self._clients:
                client._close_now()  # pyright: ignore[reportPrivateUsage]
        if exc is None or isinstance(exc, Exception):
            self._raise_app_error()

    # -- app errors ----------------------------------------------------------

    def _record(self, exc: BaseException) -> None:
        self._errors.append(exc)
        for client in self._clients:
            client._wake()  # pyright: ignore[reportPrivateUsage]

    def _raise_app_error(self) -> None:
        if self._errors:
            raise self._errors.popleft()

    # -- building the server ---------------------------------------------------

    def _build_server(self) -> Server[In, Out]:
        from ..server import Server

        base = self.app._make_server()  # pyright: ignore[reportPrivateUsage]
        handlers = base._handlers  # pyright: ignore[reportPrivateUsage]
        connection = handlers.connection
        if self.raise_app_exceptions:
            connection = replace(
                connection,
                on_error=handler(self._wrap_on_error(connection.on_error)),
                on_disconnect=self._wrap(connection.on_disconnect),
            )
            handlers = replace(
                handlers,
                acceptor=self._wrap(handlers.acceptor, ignore=_SETUP_PEER_ERRORS),
                on_stopped=self._wrap(handlers.on_stopped),
            )
        handlers = replace(
            handlers,
            connection=connection,
            pre_connect=handler(self._wrap_pre_connect(handlers.pre_connect)),
        )
        return Server(base.name, handlers)

    def _wrap(
        self, h: Handler | None, *, ignore: tuple[type[BaseException], ...] = ()
    ) -> Handler | None:
        """``h``, recording what it raises (then raising it on, for the server to log)."""
        if h is None:
            return None
        record = self._record

        async def wrapped(*args: Any) -> Any:
            try:
                return await call(h, *args)
            except Exception as exc:
                if not isinstance(exc, ignore):
                    record(exc)
                raise

        return handler(wrapped)

    def _wrap_on_error(self, h: Handler | None) -> Callable[..., Any]:
        record = self._record

        async def on_error(conn: Connection[Any, Any], exc: Exception) -> None:
            if h is not None:
                try:
                    await call(h, conn, exc)
                except Exception as inner:
                    record(inner)
                    raise
                return
            conn._log_error(exc)  # pyright: ignore[reportPrivateUsage]  # the default: log it
            # A fatal transport error is reported once the connection is closed;
            # a handler's exception while it is open.
            if not conn.closed and not isinstance(exc, _PEER_ERRORS):
                record(exc)

        return on_error

    def _wrap_pre_connect(self, h: Handler | None) -> Callable[..., Any]:
        """pre_connect as the app has it, also telling each TestClient its Connection."""
        by_stream = self._by_stream
        record = self._record if self.raise_app_exceptions else None

        async def pre_connect(conn: Connection[Any, Any], stream: anyio.abc.ByteStream) -> Any:
            # conn.stream is still the stream the server was handed: ours.
            client = by_stream.get(conn.stream)
            result: Any = True
            try:
                if h is not None:
                    result = await call(h, conn, stream)
            except Exception as exc:
                if record is not None and not isinstance(exc, _SETUP_PEER_ERRORS):
                    record(exc)
                if client is not None:
                    client._set_up(None)  # pyright: ignore[reportPrivateUsage]
                raise
            if client is not None:
                accepted = result is not None and result is not False
                client._set_up(conn if accepted else None)  # pyright: ignore[reportPrivateUsage]
            return result

        return pre_connect


# -- the client --------------------------------------------------------------------


class TestClient(Generic[In, Out]):
    """One client connection to an app, over in-memory streams.

    ``async with TestClient(app) as client:`` starts the app (as
    :class:`TestServer` does) and connects this client; leaving the block shuts
    the app down as leaving ``app.start()`` does. Messages are typed by the
    app: ``send`` takes what the app's handlers receive (encoded with the
    app's input codec) and ``receive`` returns what they send (decoded with
    its output codec)::

        async with TestClient(app) as client:
            await client.send("hello")
            assert await client.receive() == "hello"

    More clients of the same server: ``await client.connect()``.

    Args:
        app: the app to serve. It is frozen (no more handler registration).
        raise_app_exceptions: raise the app's unhandled exceptions in the test
            (see :class:`TestServer`); ``False`` only logs them, as in production.
        remote_addr: this client's address as the server sees it
            (``conn.remote_ip``, ``conn.remote_port``).
        buffer_size: bytes each direction holds before the writer waits.

    Raises:
        ValueError: ``buffer_size`` is not positive.
    """

    __test__ = False  # not a pytest test class, whatever its name

    def __init__(
        self,
        app: App[In, Out],
        *,
        raise_app_exceptions: bool = True,
        remote_addr: Address = ("127.0.0.1", 50000),
        buffer_size: int = _BUFFER_SIZE,
    ) -> None:
        self._owned: TestServer[In, Out] | None = TestServer(
            app, raise_app_exceptions=raise_app_exceptions, buffer_size=buffer_size
        )
        self._init(self._owned, remote_addr)

    @classmethod
    def _attached(cls, test_server: TestServer[In, Out]) -> Self:
        """A client of a running TestServer (from ``TestServer.connect``), not yet connected."""
        client = cls.__new__(cls)
        client._owned = None
        client._init(test_server, None)
        return client

    def _init(self, test_server: TestServer[In, Out], remote_addr: Address | None) -> None:
        app = test_server.app
        self._test_server = test_server
        self._remote_addr = remote_addr
        self._stream: MemoryByteStream | None = None
        self._encoder: Encoder[In] = app.input_codec.encoder()
        self._decoder: Decoder[Out] = app.output_codec.decoder()
        self._eof = False
        self._eof_messages: deque[Out] = deque()
        self._connection: Connection[In, Out] | None = None
        self._setup_done = False

    # -- state ------------------------------------------------------------------

    @property
    def test_server(self) -> TestServer[In, Out]:
        """The :class:`TestServer` this client is connected to."""
        return self._test_server

    @property
    def server(self) -> Server[In, Out]:
        """The app's running :class:`~tcpkit.Server`.

        Raises:
            RuntimeError: the client is not in its ``async with`` block.
        """
        return self._test_server.server

    @property
    def connection(self) -> Connection[In, Out]:
        """The server side of this client's connection (what handlers get as ``conn``).

        Available once ``pre_connect`` accepted the connection; after the
        connection ended it still tells its final state.

        Raises:
            RuntimeError: the connection is not set up yet (see
                :meth:`wait_connected`), was rejected, or the app uses a custom
                acceptor (which has no :class:`~tcpkit.Connection`).
        """
        if self._connection is None:
            if self._test_server.app._handlers.get("acceptor"):  # pyright: ignore[reportPrivateUsage]
                raise RuntimeError("the app uses a custom acceptor: there is no Connection")
            if self._setup_done:
                raise RuntimeError("the connection was rejected during its setup")
            raise RuntimeError(
                "the connection is not set up yet: `await client.wait_connected()` first"
            )
        return self._connection

    @property
    def closed(self) -> bool:
        """True once this client's stream was closed (:meth:`aclose` or the block's end)."""
        return self._stream is not None and self._stream.closed

    async def wait_connected(
        self,
        timeout: float | None = DEFAULT_TIMEOUT,  # noqa: ASYNC109 (tests must not hang)
    ) -> Connection[In, Out]:
        """Wait until the server has set this connection up; return its Connection.

        The setup (PROXY header, TLS, ``pre_connect``) may need bytes from the
        client: send them first.

        Raises:
            RuntimeError: the connection was rejected or closed during its
                setup, or the app uses a custom acceptor.
            TimeoutError: the setup did not finish within ``timeout`` seconds.
            Exception: an exception the app raised (``raise_app_exceptions``).
        """
        stream = self._open_stream()
        with _deadline(timeout, "the connection was not set up"):
            while True:
                self._test_server._raise_app_error()  # pyright: ignore[reportPrivateUsage]
                if self._setup_done or self._connection is not None:
                    break
                if self._test_server.app._handlers.get("acceptor"):  # pyright: ignore[reportPrivateUsage]
                    break  # .connection says why there is none
                if stream.closed or stream.eof_received:
                    raise RuntimeError("the connection was closed during its setup")
                await stream._wait_incoming()  # pyright: ignore[reportPrivateUsage]
        return self.connection

    # -- sending ----------------------------------------------------------------

    async def send(self, message: In) -> None:
        """Encode ``message`` with the app's input codec and send it.

        Waits while the server is not reading and the buffer is full.

        Raises:
            EncodeError: the codec cannot encode ``message``.
            anyio.BrokenResourceError: the server closed the connection.
            anyio.ClosedResourceError: this client was closed, or sent EOF.
            RuntimeError: the client is not in its ``async with`` block.
        """
        data = self._encoder.encode(message)
        await self._open_stream().send(data)

    async def send_bytes(self, data: bytes) -> None:
        """Send raw bytes, bypassing the codec (a partial frame, a PROXY header...).

        Raises:
            anyio.BrokenResourceError: the server closed the connection.
            anyio.ClosedResourceError: this client was closed, or sent EOF.
            RuntimeError: the client is not in its ``async with`` block.
        """
        await self._open_stream().send(data)

    async def send_eof(self) -> None:
        """Half-close: the server reads EOF; this client can still receive.

        Raises:
            anyio.ClosedResourceError: this client was closed.
            RuntimeError: the client is not in its ``async with`` block.
        """
        await self._open_stream().send_eof()

    # -- receiving --------------------------------------------------------------

    async def receive(
        self,
        timeout: float | None = DEFAULT_TIMEOUT,  # noqa: ASYNC109 (tests must not hang)
    ) -> Out:
        """Return the next message from the server, decoded with the app's output codec.

        Raises:
            anyio.EndOfStream: the server closed the connection and every message
                was received.
            TimeoutError: no message came within ``timeout`` seconds (``None``
                waits for ever).
            FrameError: the server's bytes do not decode (e.g. the stream ended
                in the middle of a frame).
            anyio.ClosedResourceError: this client was closed.
            RuntimeError: the client is not in its ``async with`` block.
            Exception: an exception the app raised (``raise_app_exceptions``),
                raised once, before any message.
        """
        stream = self._open_stream()
        with _deadline(timeout, "no message from the server"):
            while True:
                message = self._next_message(stream)
                if message is not NEED_DATA:
                    return message
                await stream.wait_readable()

    def receive_nowait(self) -> Out:
        """Return a message the server already sent, without waiting.

        Raises:
            anyio.WouldBlock: no complete message has arrived yet.
            anyio.EndOfStream: the server closed the connection and every message
                was received.
            FrameError: the server's bytes do not decode.
            anyio.ClosedResourceError: this client was closed.
            RuntimeError: the client is not in its ``async with`` block.
            Exception: an exception the app raised (``raise_app_exceptions``).
        """
        message = self._next_message(self._open_stream())
        if message is NEED_DATA:
            raise anyio.WouldBlock
        return message

    async def receive_bytes(
        self,
        max_bytes: int = _READ_SIZE,
        timeout: float | None = DEFAULT_TIMEOUT,  # noqa: ASYNC109 (tests must not hang)
    ) -> bytes:
        """Return up to ``max_bytes`` raw bytes from the server, bypassing the codec.

        Bytes the codec holds undecoded come first.

        Raises:
            anyio.EndOfStream: the server closed the connection and every byte was read.
            TimeoutError: nothing came within ``timeout`` seconds.
            RuntimeError: the client is not in its ``async with`` block.
            Exception: an exception the app raised (``raise_app_exceptions``).
        """
        stream = self._open_stream()
        pending = self._decoder.take_pending()
        if pending:
            self._decoder.push(pending[max_bytes:])
            return pending[:max_bytes]
        with _deadline(timeout, "no bytes from the server"):
            while True:
                self._test_server._raise_app_error()  # pyright: ignore[reportPrivateUsage]
                try:
                    return stream.receive_nowait(max_bytes)
                except anyio.WouldBlock:
                    await stream.wait_readable()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Out:
        try:
            return await self.receive()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None

    def _next_message(self, stream: MemoryByteStream) -> Out | NeedData:
        self._test_server._raise_app_error()  # pyright: ignore[reportPrivateUsage]
        decoder = self._decoder
        while True:
            message = decoder.next_message()
            if message is not NEED_DATA:
                return message
            if self._eof_messages:
                return self._eof_messages.popleft()
            if self._eof:
                raise anyio.EndOfStream
            try:
                data = stream.receive_nowait(_READ_SIZE)
            except anyio.WouldBlock:
                return NEED_DATA
            except anyio.EndOfStream:
                self._eof = True
                self._eof_messages.extend(decoder.eof())
                continue
            decoder.push(data)

    # -- more clients, closing ----------------------------------------------------

    async def connect(self, *, remote_addr: Address | None = None) -> TestClient[In, Out]:
        """Open another client connection to the same server (see :meth:`TestServer.connect`).

        Raises:
            RuntimeError: the server is not running.
        """
        return await self._test_server.connect(remote_addr=remote_addr)

    async def aclose(self) -> None:
        """Close this client's connection at once, both ways (as closing a socket does).

        The server reads EOF; what it sends afterwards is lost (it sees a reset).
        The server itself keeps running until the ``async with`` block ends.
        """
        if self._stream is not None:
            await self._stream.aclose()

    async def __aenter__(self) -> Self:
        owned = self._owned
        if owned is None:
            return self
        await owned.__aenter__()
        try:
            await owned._attach(self, self._remote_addr)  # pyright: ignore[reportPrivateUsage]
        except BaseException as exc:
            await owned.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._owned is not None:
            await self._owned.__aexit__(exc_type, exc, tb)
        else:
            await self.aclose()

    # -- internals --------------------------------------------------------------------

    def _open_stream(self) -> MemoryByteStream:
        if self._stream is None:
            raise RuntimeError("the TestClient is not connected: use `async with TestClient(app)`")
        return self._stream

    def _set_up(self, conn: Connection[Any, Any] | None) -> None:
        self._connection = conn
        self._setup_done = True
        self._wake()

    def _wake(self) -> None:
        if self._stream is not None:
            self._stream.wake()

    async def _drain(self) -> None:
        """At shutdown: read and drop what the server still sends, then close."""
        stream = self._stream
        if stream is None:
            return
        try:
            while True:
                await stream.receive(_READ_SIZE)
        except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
            pass
        stream.close()

    def _close_now(self) -> None:
        if self._stream is not None:
            self._stream.close()
        self._wake()

    def __repr__(self) -> str:
        where = self._stream and self._stream.extra(SocketAttribute.local_address, None)
        return f"<TestClient {where!r}{' closed' if self.closed else ''}>"


@contextmanager
def _deadline(timeout: float | None, what: str) -> Generator[None, None, None]:
    """Like ``anyio.fail_after``, with a TimeoutError that says what was awaited."""
    with anyio.move_on_after(math.inf if timeout is None else timeout) as scope:
        yield
    if scope.cancelled_caught:
        raise TimeoutError(f"{what} within {timeout} s")


# -- a live server on loopback ---------------------------------------------------------


class LiveServer(Generic[In, Out]):
    """An app served on a real loopback socket; made by :func:`live_server`.

    Attributes:
        app: the app.
        server: its running :class:`~tcpkit.Server`.
        host: the address it listens on.
        port: the port the OS picked (or the one asked for).
    """

    __test__ = False

    def __init__(self, app: App[In, Out], server: Server[In, Out], host: str, port: int) -> None:
        self.app = app
        self.server = server
        self.host = host
        self.port = port

    def connect(
        self,
        *,
        ssl: _ssl.SSLContext | bool | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
        reconnect: Reconnect | None = None,
        server_hostname: str | None = None,
    ) -> AbstractAsyncContextManager[Channel[Out, In]]:
        """:func:`tcpkit.connect` to this server, speaking the app's codecs.

        ``async with live.connect() as channel:`` gives a
        :class:`~tcpkit.Channel` over a real TCP connection, framed by
        :func:`client_codec` of the app (for another codec, call
        :func:`tcpkit.connect` with ``live.host`` and ``live.port``). The
        arguments are :func:`tcpkit.connect`'s.

        Raises:
            OSError: the connection failed.
            TimeoutError: connecting took longer than ``timeout``.
        """
        from ..client import connect

        return connect(
            self.host,
            self.port,
            codec=client_codec(self.app),
            ssl=ssl,
            timeout=timeout,
            reconnect=reconnect,
            server_hostname=server_hostname,
        )

    def __repr__(self) -> str:
        return f"<LiveServer {self.app.name!r} on {self.host}:{self.port}>"


@asynccontextmanager
async def live_server(
    app: App[In, Out],
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    ssl: _ssl.SSLContext | None = None,
) -> AsyncGenerator[LiveServer[In, Out], None]:
    """Serve ``app`` on ``host`` (loopback by default) and an OS-picked port.

    ``async with live_server(app) as live:`` is ``app.start(host, port)``,
    yielding a :class:`LiveServer` that knows its port and can
    :meth:`~LiveServer.connect` to it. Leaving the block shuts the server down
    as leaving ``app.start()`` does.

    Raises:
        ServerError: the address could not be bound.
    """
    async with app.start(host, port, ssl=ssl) as server:
        bound = server.port
        assert bound is not None
        yield LiveServer(app, server, host, bound)
