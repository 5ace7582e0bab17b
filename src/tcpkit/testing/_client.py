"""In-memory test client and server, and a live server on loopback for tests.

:class:`TestClient` drives an :class:`~tcpkit.App` through its real pipeline
(``pre_connect``, codecs, handlers, write buffers, shutdown) over in-memory
byte streams: no socket, no port, the same on asyncio and trio. It is what
starlette's ``TestClient`` is to an ASGI app, built the way ``trio.testing``
builds its memory streams.

How it fits together, through public seams only:

* :class:`TestServer` runs the app with ``app.start(listeners=[...])`` on a
  :class:`~tcpkit.testing.MemoryListener` (no socket): each client's
  connection waits in that listener's backlog, counted and limited
  (``max_connections``) like an accepted socket, until the server accepts it.
* It watches the server as an :class:`~tcpkit.Observer`: that is how a
  client learns its :class:`~tcpkit.Connection`, and how the exceptions the
  app would only have logged are raised again in the test
  (``raise_app_exceptions=True``, the default), at the next receive or when
  the block ends.
"""

from __future__ import annotations

import math
import ssl as _ssl
from collections import deque
from collections.abc import AsyncGenerator, Generator
from contextlib import (
    AbstractAsyncContextManager,
    AsyncExitStack,
    asynccontextmanager,
    contextmanager,
)
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import anyio
import anyio.abc
import anyio.lowlevel
from anyio.abc import SocketAttribute
from typing_extensions import Self

from ..codecs.base import NEED_DATA, Codec, Decoder, Encoder, NeedData
from ..connection import Connection
from ..exceptions import FrameError, WriteBufferFull
from ..observer import Observer, Rejection
from ._memory import BUFFER_SIZE, READ_SIZE, Address, MemoryByteStream, MemoryListener

if TYPE_CHECKING:
    from ..app import App
    from ..client import Channel, Reconnect
    from ..server import Server

__all__ = [
    "LiveServer",
    "TestClient",
    "TestServer",
    "client_codec",
    "live_server",
]

In = TypeVar("In")
Out = TypeVar("Out")
I = TypeVar("I")  # noqa: E741
O = TypeVar("O")  # noqa: E741

DEFAULT_TIMEOUT = 5.0
"""Seconds a :class:`TestClient` receive waits by default before ``TimeoutError``."""

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
# What the server itself logs as a peer problem when a setup or an acceptor fails.
_SETUP_PEER_ERRORS = (*_PEER_ERRORS, OSError)


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
        same: Codec[Any, Any] = app.output_codec
        return same
    return _ClientCodec(app.output_codec, app.input_codec)


# -- what a test server and its clients share ------------------------------------


class _Link:
    """One client's connection, as its :class:`TestServer` and its :class:`TestClient` see it."""

    def __init__(self, hub: _Hub[Any, Any], stream: MemoryByteStream, remote_addr: Address) -> None:
        self.hub = hub
        self.stream = stream
        self.remote_addr = remote_addr
        self.connection: Connection[Any, Any] | None = None
        self.setup_done = False
        self.client: TestClient[Any, Any] | None = None

    def set_up(self, conn: Connection[Any, Any] | None) -> None:
        self.connection = conn
        self.setup_done = True
        self.stream.wake()

    async def drain(self) -> None:
        """At shutdown: read and drop what the server still sends, then close."""
        try:
            while True:
                await self.stream.receive(READ_SIZE)
        except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
            pass
        self.stream.close()

    def close_now(self) -> None:
        self.stream.close()
        self.stream.wake()


class _Hub(Observer, Generic[In, Out]):
    """A :class:`TestServer`'s state, shared with its clients; it observes the server too."""

    def __init__(self, app: App[In, Out], raise_app_exceptions: bool, buffer_size: int) -> None:
        self.app = app
        self.raise_app_exceptions = raise_app_exceptions
        self.listener = MemoryListener(buffer_size=buffer_size)
        self.links: list[_Link] = []
        self.errors: deque[BaseException] = deque()
        self.state = "new"
        self.server: Server[In, Out] | None = None

    # -- the server, observed -----------------------------------------------------

    def _link_of(self, stream: anyio.abc.ByteStream) -> _Link | None:
        """The link of a server end (``stream`` or a stream wrapping it): by its peer address."""
        peer = stream.extra(SocketAttribute.remote_address, None)
        for link in self.links:
            if link.remote_addr == peer and not link.setup_done:
                return link
        return None

    def connection_made(self, conn: Connection[Any, Any]) -> None:
        link = self._link_of(conn.stream)
        if link is not None:
            link.set_up(conn)

    def connection_rejected(self, rejection: Rejection) -> None:
        if rejection.error is not None:  # a failed setup: the client sees its connection closed
            return
        for link in self.links:  # refused by pre_connect
            if link.remote_addr == rejection.remote_addr and not link.setup_done:
                link.set_up(None)
                return

    def unhandled_error(
        self, exc: BaseException, where: str, conn: Connection[Any, Any] | None
    ) -> None:
        ignored = _SETUP_PEER_ERRORS if where in ("pre_connect", "acceptor") else _PEER_ERRORS
        if self.raise_app_exceptions and not isinstance(exc, ignored):
            self.errors.append(exc)
            for link in self.links:
                link.stream.wake()

    def raise_app_error(self) -> None:
        """Raise the first recorded app exception not raised yet, if any."""
        if self.errors:
            raise self.errors.popleft()

    # -- clients ------------------------------------------------------------------

    def open(self, remote_addr: Address | None) -> _Link:
        """Connect a new client: its stream pair, the server end in the listener's backlog.

        Raises:
            RuntimeError: the test server is not running.
        """
        if self.state != "running":
            raise RuntimeError(
                "the TestServer is not running: use `async with TestServer(app)` "
                "(or `async with TestClient(app)`)"
            )
        if remote_addr is None:
            used = {link.remote_addr for link in self.links}
            port = 50000
            while ("127.0.0.1", port) in used:
                port += 1
            remote_addr = ("127.0.0.1", port)
        link = _Link(self, self.listener.connect(remote_addr), remote_addr)
        self.links.append(link)
        return link


# -- the in-memory server --------------------------------------------------------


class TestServer(Generic[In, Out]):
    """Serve an app to in-memory clients (no socket, no port).

    ``async with TestServer(app) as test_server:`` starts the app's server as
    ``app.start()`` would, on a :class:`~tcpkit.testing.MemoryListener`
    instead of sockets, and ``await test_server.connect()`` opens a
    :class:`TestClient` to it. Leaving the block shuts the server down as
    leaving ``app.start()`` does (``shutdown(grace=0)``: queued output is
    delivered, every ``on_disconnect`` and then ``on_stopped`` run); clients
    still open read and discard what is left so the shutdown never waits on
    them.

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
        buffer_size: int = BUFFER_SIZE,
    ) -> None:
        if buffer_size < 1:
            raise ValueError("buffer_size must be at least 1")
        self.app = app
        self.raise_app_exceptions = raise_app_exceptions
        self.buffer_size = buffer_size
        self._hub = _Hub(app, raise_app_exceptions, buffer_size)
        self._stack: AsyncExitStack | None = None
        self._tg: anyio.abc.TaskGroup | None = None

    @property
    def server(self) -> Server[In, Out]:
        """The running :class:`~tcpkit.Server` (what handlers see as ``conn.server``).

        Raises:
            RuntimeError: the test server was not started with ``async with``.
        """
        if self._hub.server is None:
            raise RuntimeError("the TestServer is not running: use `async with TestServer(app)`")
        return self._hub.server

    @property
    def listener(self) -> MemoryListener:
        """The in-memory listener the server accepts from."""
        return self._hub.listener

    @property
    def clients(self) -> list[TestClient[In, Out]]:
        """Every client opened so far, in order."""
        return [link.client for link in self._hub.links if link.client is not None]

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
        link = self._hub.open(remote_addr)
        client: TestClient[In, Out] = _AttachedClient(self, link)
        link.client = client
        await anyio.lowlevel.checkpoint()  # let the server take the connection in
        return client

    async def __aenter__(self) -> Self:
        hub = self._hub
        if hub.state != "new":
            raise RuntimeError("a TestServer can be started only once")
        hub.state = "starting"
        # The drain tasks of __aexit__ run in a task group around the server's.
        stack = AsyncExitStack()
        tg = await stack.enter_async_context(anyio.create_task_group())
        stack.callback(tg.cancel_scope.cancel)  # once the server stopped: stop draining
        try:
            hub.server = await stack.enter_async_context(
                self.app.start(listeners=[hub.listener], observers=[hub])
            )
        except BaseException:
            # Unwind with no exception, so that what the start raised (on_started's
            # error, a cancellation) comes out as itself, not in an exception group.
            await stack.aclose()
            hub.state = "stopped"
            raise
        self._stack = stack
        self._tg = tg
        hub.state = "running"
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        stack, tg, hub = self._stack, self._tg, self._hub
        if stack is None or tg is None:
            return
        hub.state = "stopping"
        self._stack = None
        try:
            for link in hub.links:
                if not link.stream.closed:
                    tg.start_soon(link.drain)
            await stack.aclose()
        finally:
            hub.state = "stopped"
            for link in hub.links:
                link.close_now()
        if exc is None or isinstance(exc, Exception):
            hub.raise_app_error()


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
        buffer_size: int = BUFFER_SIZE,
    ) -> None:
        owned = TestServer(app, raise_app_exceptions=raise_app_exceptions, buffer_size=buffer_size)
        self._init(owned, None, remote_addr)
        self._owned: TestServer[In, Out] | None = owned

    def _init(
        self, test_server: TestServer[In, Out], link: _Link | None, remote_addr: Address
    ) -> None:
        app = test_server.app
        self._owned = None
        self._test_server = test_server
        self._link = link
        self._remote_addr = remote_addr
        self._encoder: Encoder[In] = app.input_codec.encoder()
        self._decoder: Decoder[Out] = app.output_codec.decoder()
        self._eof = False
        self._eof_messages: deque[Out] = deque()

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
        link = self._link
        conn = link.connection if link is not None else None
        if conn is None:
            if self._test_server.app.handlers.acceptor is not None:
                raise RuntimeError("the app uses a custom acceptor: there is no Connection")
            if link is not None and link.setup_done:
                raise RuntimeError("the connection was rejected during its setup")
            raise RuntimeError(
                "the connection is not set up yet: `await client.wait_connected()` first"
            )
        return conn

    @property
    def closed(self) -> bool:
        """True once this client's stream was closed (:meth:`aclose` or the block's end)."""
        return self._link is not None and self._link.stream.closed

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
        link = self._open_link()
        stream = link.stream
        with _deadline(timeout, "the connection was not set up"):
            while True:
                link.hub.raise_app_error()
                if link.setup_done:
                    break
                if self._test_server.app.handlers.acceptor is not None:
                    break  # .connection says why there is none
                if stream.closed or stream.eof_received:
                    raise RuntimeError("the connection was closed during its setup")
                await stream.wait_incoming()
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
        await self._open_link().stream.send(data)

    async def send_bytes(self, data: bytes) -> None:
        """Send raw bytes, bypassing the codec (a partial frame, a PROXY header...).

        Raises:
            anyio.BrokenResourceError: the server closed the connection.
            anyio.ClosedResourceError: this client was closed, or sent EOF.
            RuntimeError: the client is not in its ``async with`` block.
        """
        await self._open_link().stream.send(data)

    async def send_eof(self) -> None:
        """Half-close: the server reads EOF; this client can still receive.

        Raises:
            anyio.ClosedResourceError: this client was closed.
            RuntimeError: the client is not in its ``async with`` block.
        """
        await self._open_link().stream.send_eof()

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
        stream = self._open_link().stream
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
        message = self._next_message(self._open_link().stream)
        if message is NEED_DATA:
            raise anyio.WouldBlock
        return message

    async def receive_bytes(
        self,
        max_bytes: int = READ_SIZE,
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
        stream = self._open_link().stream
        pending = self._decoder.take_pending()
        if pending:
            self._decoder.push(pending[max_bytes:])
            return pending[:max_bytes]
        with _deadline(timeout, "no bytes from the server"):
            while True:
                self._open_link().hub.raise_app_error()
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
        self._open_link().hub.raise_app_error()
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
                data = stream.receive_nowait(READ_SIZE)
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
        if self._link is not None:
            await self._link.stream.aclose()

    async def reset(self) -> None:
        """Close this client's connection abortively, as a TCP reset (``SO_LINGER`` 0) does.

        The server's next read fails with ``ConnectionResetError`` (what its
        ``on_error`` gets); bytes in flight either way are lost.
        """
        if self._link is not None:
            self._link.stream.reset()

    async def __aenter__(self) -> Self:
        owned = self._owned
        if owned is None:
            return self
        await owned.__aenter__()
        try:
            other = await owned.connect(remote_addr=self._remote_addr)
        except BaseException as exc:
            await owned.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        link = self._link = other._link
        assert link is not None
        link.client = self
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

    def _open_link(self) -> _Link:
        if self._link is None:
            raise RuntimeError("the TestClient is not connected: use `async with TestClient(app)`")
        return self._link

    def __repr__(self) -> str:
        link = self._link
        where = link.stream.extra(SocketAttribute.local_address, None) if link else None
        return f"<TestClient {where!r}{' closed' if self.closed else ''}>"


class _AttachedClient(TestClient[In, Out]):
    """A client that :meth:`TestServer.connect` opened (its server is not its own)."""

    __test__ = False

    def __init__(self, test_server: TestServer[In, Out], link: _Link) -> None:
        self._init(test_server, link, link.remote_addr)


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
