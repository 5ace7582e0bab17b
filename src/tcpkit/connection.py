"""One client connection: its decoder, encoder, write buffer and handler turns.

POE splits this between a client session and its ReadWrite wheel; here it is
one object, ``conn``, handed to every per-connection handler.

How the I/O runs (the hot path):

* One task per connection reads. Every message that one read delivered is
  decoded and handled, one at a time and in order, before the task reads
  again; a codec switch applies to the very next message.
* ``put``/``send`` only encode and append to an output list. At the end of the
  turn the list is joined and handed to the stream in one write: the output
  of every handler run for one read becomes one write (on trio, without an
  ``await`` when the kernel takes it all).
* Plain ``def`` handlers are called directly, ``async def`` handlers are
  awaited in the same task: no task or queue hop per message. An ``async
  def`` handler that finishes without waiting adds to the turn's one write;
  one that waits (for a lock, a timer, a database...) first lets what it
  queued so far go out, in a helper task (``_drive``), as does output
  queued from outside while it waits.
* With a plain ``def`` on_input, a turn runs while the task waits for input,
  in the stream's protocol callback on asyncio and uvloop, in the listener's
  reactor on trio (``tcpkit._socket.InlineStream``): no task switch per read
  at all. The task takes over whatever needs an ``await`` (an error to
  report, a pause, output the kernel could not take yet).
* Custom events (``emit``/``post``) and ``on_flushed`` run in a helper task
  started on demand in the server's task pool, taking turns with input so
  that the handlers of one connection never overlap.
"""

from __future__ import annotations

import inspect
import logging
import math
import ssl
import time
import types
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Generator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar, cast

import anyio
import anyio.abc
from anyio.abc import SocketAttribute

from ._socket import InlineStream
from .codecs.base import NEED_DATA, Codec, CodecSpec, Decoder, Encoder, resolve_codec
from .exceptions import (
    ConnectionClosed,
    FrameError,
    RegistrationError,
    WriteBufferFull,
)
from .handlers import Handler, call
from .stats import ServerStats

if TYPE_CHECKING:
    from ._tasks import TaskPool
    from .observe import ClosedConnectionInfo, ConnectionObserver
    from .server import Server

__all__ = ["Connection", "ConnectionConfig", "WriteBuffer"]

_Fault = Literal["frame", "handler", "codec"]
"""Where an error an inline turn leaves to the reader task came from."""

In = TypeVar("In")
Out = TypeVar("Out")
I2 = TypeVar("I2")
O2 = TypeVar("O2")

logger = logging.getLogger("tcpkit.connection")

_SOCKET_ERRORS = (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError)
_MAX_FRAME_ERRORS_PER_READ = 64  # a decoder that keeps failing cannot hold a turn forever


@dataclass(frozen=True)
class WriteBuffer:
    """Write-buffer marks, in bytes (``App(write_buffer=(high, low, limit))``).

    ``await conn.send()`` waits while the pending output is above ``high``,
    until it drops to ``low``. ``limit`` is the hard limit: past it the
    connection is closed with :class:`~tcpkit.WriteBufferFull`.
    """

    high: int = 1024 * 1024
    low: int = 256 * 1024
    limit: int = 64 * 1024 * 1024

    def __post_init__(self) -> None:
        if not 0 <= self.low <= self.high <= self.limit:
            raise ValueError(f"write_buffer must satisfy 0 <= low <= high <= limit, got {self!r}")


@dataclass(frozen=True)
class ConnectionConfig:
    """Everything a connection needs from its app, frozen when serving starts."""

    name: str = "tcpkit"
    input_codec: Codec[Any, Any] | None = None
    output_codec: Codec[Any, Any] | None = None
    on_connect: Handler | None = None
    on_input: Handler | None = None
    on_disconnect: Handler | None = None
    on_error: Handler | None = None
    on_flushed: Handler | None = None
    events: Mapping[str, Handler] = field(default_factory=dict[str, Handler])
    client_args: tuple[Any, ...] = ()
    shutdown_on_error: bool = True
    idle_timeout: float | None = None
    write_buffer: WriteBuffer = WriteBuffer()
    state: Callable[[], Any] | None = None
    read_size: int = 65536
    linger: float = 2.0
    """After a graceful close, how long at most to read and drop client input so
    that the client gets our last bytes instead of a reset."""
    linger_quiet: float = 0.1
    """Lingering stops earlier once the client has sent nothing for this long."""
    observer: ConnectionObserver | None = None
    """Told when a connection opens, fails, handles a message, closes (see tcpkit.observe)."""


class Connection(Generic[In, Out]):
    """A client connection (POE's client session, its HEAP and its wheel).

    Handlers receive it as their first argument. Its public attributes are the
    POE HEAP members: ``remote_ip``, ``remote_port``, ``remote_addr``,
    ``shutting_down``, ``got_an_error``, ``shutdown_on_error``, plus ``id``,
    ``server``, ``state`` (from ``App(state=...)``) and ``args`` (the app's
    ``client_args``).

    Subclass it and pass ``App(connection_class=...)`` to add behaviour
    (POE's SessionType).
    """

    def __init__(
        self,
        server: Server[In, Out],
        config: ConnectionConfig,
        stream: anyio.abc.ByteStream,
        conn_id: int,
        stats: ServerStats,
    ) -> None:
        self.id = conn_id
        self.server = server
        self.args = config.client_args
        self.state: Any = config.state() if config.state is not None else None
        self.shutdown_on_error = config.shutdown_on_error
        self.got_an_error = False
        self._config = config
        self._observer = observer = config.observer
        self._timed: Callable[[float], None] | None = None  # times each on_input call
        if observer is not None:  # counts of its own too, for the observer (see tcpkit.observe)
            from .observe import ForwardingStats

            stats = ForwardingStats(stats)
            if observer.times_handlers:
                self._timed = observer.message_handled
        self._opened_at = 0.0
        self._close_reason: str | None = None  # the first reason this connection began ending
        self._close_error: str | None = None
        self._stats = stats
        self._stream = stream
        assert config.input_codec is not None
        assert config.output_codec is not None
        self._decoder: Decoder[In] = config.input_codec.decoder()
        self._encoder: Encoder[Out] = config.output_codec.encoder()
        self._set_addresses(stream)
        wb = config.write_buffer
        self._high, self._low, self._limit = wb.high, wb.low, wb.limit
        self._out: list[bytes] = []
        self._out_size = 0
        self._in_flight = 0
        self._flushing = False
        self._shutting_down = False
        self._writable = False  # True from on_connect until a shutdown begins
        self._closed = False
        self._eof_received = False  # the client half-closed
        self._paused = False
        self._busy = False  # a handler turn is running
        self._waiting = False  # ... and its async handler waits (see _drive)
        self._interruptible = False  # the reader is waiting for input
        self._inline: InlineStream | None = None  # while input is handled inline
        self._deferred: tuple[Exception, _Fault] | None = None  # an inline turn's error
        self._unsent = False  # an inline turn left output in the transport
        self._events: deque[tuple[Handler, tuple[Any, ...]]] = deque()
        self._dispatching = False
        self._flushed_queued = False
        self._change: anyio.Event | None = None
        self._pool: TaskPool | None = None  # where helper tasks start, while serving
        self._helpers: set[anyio.CancelScope] = set()  # one per running helper task
        # The scope of the current phase: set-up and input, then (if needed) the
        # final flush. close() cancels it; shutdown() cancels it while waiting for
        # input; the idle timeout is its deadline.
        self._scope = anyio.CancelScope()
        self._fatal: BaseException | None = None  # a socket error or overflow, reported at the end
        self._log_prefix = f"{config.name} #{conn_id} {self._peer()}"

    # -- addresses ---------------------------------------------------------

    def _set_addresses(self, stream: anyio.abc.ByteStream) -> None:
        remote: Any = stream.extra(SocketAttribute.remote_address, None)
        local: Any = stream.extra(SocketAttribute.local_address, None)
        self.remote_addr: Any = remote
        self.local_addr: Any = local
        if isinstance(remote, tuple):
            self.remote_ip: str | None = str(remote[0])  # pyright: ignore[reportUnknownArgumentType]
            self.remote_port: int | None = int(remote[1])  # pyright: ignore[reportUnknownArgumentType]
        else:
            self.remote_ip = None
            self.remote_port = None

    def _set_remote(self, ip: str, port: int) -> None:
        """Replace the peer address (the PROXY protocol's real client)."""
        self.remote_ip, self.remote_port = ip, port
        self.remote_addr = (ip, port)
        self._log_prefix = f"{self._config.name} #{self.id} {self._peer()}"

    def _peer(self) -> str:
        if self.remote_ip is None:
            return str(self.remote_addr) if self.remote_addr else "(unix)"
        if ":" in self.remote_ip:
            return f"[{self.remote_ip}]:{self.remote_port}"
        return f"{self.remote_ip}:{self.remote_port}"

    def __repr__(self) -> str:
        return f"<{type(self).__name__} #{self.id} {self._peer()}>"

    # -- public state ------------------------------------------------------

    @property
    def shutting_down(self) -> bool:
        """True from the moment a shutdown or close begins, whatever began it."""
        return self._shutting_down

    @property
    def closed(self) -> bool:
        """True once the connection has been closed (``close()`` or the end of it)."""
        return self._closed

    @property
    def pending_output(self) -> int:
        """Bytes queued by ``send``/``put`` and not yet handed to the OS."""
        return self._out_size + self._in_flight

    @property
    def stream(self) -> anyio.abc.ByteStream:
        """The byte stream in use (after ``pre_connect`` and TLS, the wrapped one)."""
        return self._stream

    # -- output --------------------------------------------------------------

    def put(self, message: Out) -> None:
        """Encode ``message`` and queue it for sending, without waiting (POE ``put``).

        Usable from plain ``def`` handlers. The output of a handler turn is sent
        in one write when the turn ends, or as soon as an ``async def`` handler
        waits for something.

        Raises:
            ConnectionClosed: the connection is shutting down or closed, or this
                message took the pending output past the hard limit (the
                connection is then closed and ``on_error`` sees
                :class:`~tcpkit.WriteBufferFull`).
            EncodeError: the codec cannot encode ``message``.
        """
        if not self._writable:
            raise self._not_writable()
        data = self._encoder.encode(message)
        self._stats.messages_out += 1
        size = self._out_size + len(data)
        if self._busy and not self._waiting and data and size + self._in_flight <= self._limit:
            self._out.append(data)  # the common case, inline: a handler turn is running
            self._out_size = size
        else:
            self._queue(data)

    async def send(self, message: Out) -> None:
        """Encode and send ``message``; wait while the pending output is above the high mark.

        Raises:
            ConnectionClosed: the connection is shutting down or closed.
            EncodeError: the codec cannot encode ``message``.
        """
        self.put(message)
        if self._out_size + self._in_flight > self._high:
            await self._drain()

    def _not_writable(self) -> ConnectionClosed:
        if self._shutting_down:
            return ConnectionClosed(f"connection #{self.id} is shutting down or closed")
        return ConnectionClosed(
            f"connection #{self.id} is not set up yet (no sending before on_connect)"
        )

    def _queue(self, data: bytes) -> None:
        if not data:
            return
        size = self._out_size + len(data)
        if size + self._in_flight > self._limit:
            exc = WriteBufferFull(size + self._in_flight, self._limit)
            self._out.clear()
            self._out_size = 0
            self._fail(exc)
            raise ConnectionClosed(str(exc)) from exc
        self._out.append(data)
        self._out_size = size
        if not self._busy or self._waiting:
            # Output from outside this connection's handlers (broadcast, post...),
            # or while its handler waits: nothing else will send it soon.
            self._flush_soon()

    def _flush_soon(self) -> None:
        """Send what is queued from a helper task, unless a flush is under way."""
        if self._out and not self._flushing and self._pool is not None:
            self._flushing = True
            self._start_helper(self._flush, True)

    async def _flush(self, started: bool = False) -> None:
        """Send everything queued, in as few writes as possible."""
        if not started:
            if self._flushing:
                return
            self._flushing = True
        try:
            while self._out:
                out = self._out
                data = out[0] if len(out) == 1 else b"".join(out)
                self._out = []
                self._out_size = 0
                self._in_flight = len(data)
                try:
                    await self._stream.send(data)
                except _SOCKET_ERRORS as exc:
                    self._in_flight = 0
                    self._fail(exc)
                    return
                self._in_flight = 0
                self._stats.bytes_out += len(data)
        finally:
            self._flushing = False
            self._changed()
        if self._config.on_flushed is not None and not self._flushed_queued:
            self._flushed_queued = True
            self._enqueue(self._config.on_flushed, ())

    async def _drain(self) -> None:
        """Wait until the pending output is at or below the low mark."""
        while self._out_size + self._in_flight > self._low:
            if self._closed:
                raise ConnectionClosed(f"connection #{self.id} closed while sending")
            if self._flushing:
                await self._wait_change()
            else:
                await self._flush()

    # -- control -----------------------------------------------------------

    def shutdown(self) -> None:
        """Shut down gracefully: deliver no more input, flush pending output, then close.

        Never blocks; safe to call more than once and from any handler.
        """
        if self._shutting_down:
            return
        if self._close_reason is None:
            self._close_reason = "server-shutdown" if self.server.closing else "shutdown"
        self._shutting_down = True
        self._writable = False
        if self._interruptible:
            self._scope.cancel()
        self._changed()

    def close(self) -> None:
        """Close at once: pending output is discarded. Never blocks."""
        if self._close_reason is None:
            self._close_reason = "aborted" if self.server.closing else "close"
        self._shutting_down = True
        self._writable = False
        if self._closed:
            return
        self._closed = True
        self._out.clear()
        self._out_size = 0
        self._scope.cancel()
        for scope in self._helpers:
            scope.cancel()
        self._changed()

    def _fail(self, exc: BaseException) -> None:
        """A fatal socket-level problem: remember it for ``on_error``, then close."""
        if self._fatal is None and not self._closed:
            self._fatal = exc
        if self._close_reason is None:
            self._close_reason, self._close_error = "error", type(exc).__name__
        self.close()

    def pause_input(self) -> None:
        """Stop reading and delivering input until :meth:`resume_input`."""
        self._paused = True

    def resume_input(self) -> None:
        """Deliver input again after :meth:`pause_input`."""
        if self._paused:
            self._paused = False
            self._changed()

    @property
    def input_paused(self) -> bool:
        """True between :meth:`pause_input` and :meth:`resume_input`."""
        return self._paused

    def set_codec(self, codec: CodecSpec[I2, O2]) -> Connection[I2, O2]:
        """Switch both directions to ``codec`` (POE ``set_filter``).

        Every byte after the message being handled is decoded by the new codec,
        even bytes that arrived in the same read. Returns this connection, typed
        for the new codec.
        """
        resolved = resolve_codec(codec)
        self.set_input_codec(resolved)
        return self.set_output_codec(resolved)  # type: ignore[return-value]

    def set_input_codec(self, codec: CodecSpec[I2, Any]) -> Connection[I2, Out]:
        """Switch the input direction only; undecoded bytes move to the new decoder."""
        decoder: Decoder[Any] = resolve_codec(codec).decoder()
        pending = self._decoder.take_pending()
        if pending:
            decoder.push(pending)
        self._decoder = decoder
        return self  # type: ignore[return-value]

    def set_output_codec(self, codec: CodecSpec[Any, O2]) -> Connection[In, O2]:
        """Switch the output direction only; messages already queued are already bytes."""
        self._encoder = resolve_codec(codec).encoder()  # type: ignore[assignment]
        return self  # type: ignore[return-value]

    def emit(self, event: str, *args: Any) -> bool:
        """Queue the custom event ``event`` for this connection (POE ``yield``).

        Its ``@app.on_event(event)`` handler is called with ``(conn, *args)``,
        in turn with this connection's other handlers. Returns ``False`` (and
        drops the event) if the connection has already ended.

        Raises:
            RegistrationError: no handler is registered for ``event``.
        """
        h = self._config.events.get(event)
        if h is None:
            raise RegistrationError(f"no handler registered for event {event!r}")
        if self._closed:
            return False
        self._enqueue(h, args)
        return True

    def _enqueue(self, h: Handler, args: tuple[Any, ...]) -> None:
        self._events.append((h, args))
        if not self._dispatching and self._pool is not None:
            self._dispatching = True
            self._start_helper(self._dispatch)

    def _start_helper(self, func: Callable[..., Awaitable[None]], *args: Any) -> None:
        """Run ``func(*args)`` in a task of its own, which ``close()`` cancels."""
        assert self._pool is not None
        scope = anyio.CancelScope()
        self._helpers.add(scope)
        self._pool.start_soon(self._run_helper, scope, func, args)

    async def _run_helper(
        self, scope: anyio.CancelScope, func: Callable[..., Awaitable[None]], args: tuple[Any, ...]
    ) -> None:
        try:
            if self._closed:
                scope.cancel()
            with scope:
                await func(*args)
        finally:
            self._helpers.discard(scope)
            self._changed()

    async def start_tls(
        self, ssl_context: ssl.SSLContext, *, handshake_timeout: float = 10.0
    ) -> None:
        """Upgrade this connection to TLS in place (STARTTLS).

        Call it from a handler after telling the client to go ahead: pending
        output is flushed first, then the handshake runs on the same socket.
        Bytes the client sent right after its STARTTLS command (already read,
        not yet decoded) are handed to TLS, not to the codec.

        Raises:
            ConnectionClosed: the connection is shutting down or closed.
            TimeoutError: the handshake took longer than ``handshake_timeout``.
            anyio.BrokenResourceError: the handshake failed.
        """
        from anyio.streams.tls import TLSStream

        from .streams import ReplayStream

        if not self._writable:
            raise self._not_writable()
        while self._out or self._flushing:  # a helper task may be flushing: wait for it
            if self._flushing:
                await self._wait_change()
            else:
                await self._flush()
        pending = self._decoder.take_pending()
        transport = ReplayStream(self._stream, pending) if pending else self._stream
        self._flushing = True  # no output on the plain stream during the handshake
        try:
            with anyio.fail_after(handshake_timeout):
                self._stream = await TLSStream.wrap(
                    transport, server_side=True, ssl_context=ssl_context, standard_compatible=False
                )
        finally:
            self._flushing = False
            self._changed()

    # -- turns -------------------------------------------------------------

    def _changed(self) -> None:
        ev = self._change
        if ev is not None:
            self._change = None
            ev.set()

    async def _wait_change(self) -> None:
        ev = self._change
        if ev is None:
            ev = self._change = anyio.Event()
        await ev.wait()

    async def _acquire(self) -> None:
        while self._busy:
            await self._wait_change()
        self._busy = True

    def _release(self) -> None:
        self._busy = False
        if self._change is not None:
            self._changed()

    async def _dispatch(self) -> None:
        """Run queued custom and flushed events, one turn each."""
        events = self._events
        flushed = self._config.on_flushed
        try:
            while events:
                h, args = events.popleft()
                if h is flushed:
                    self._flushed_queued = False
                await self._acquire()
                try:
                    await self._call(h, *args)
                except Exception as exc:
                    await self._handler_failed(exc)
                finally:
                    self._release()
                if self._out:
                    await self._flush()
        finally:
            self._dispatching = False
            self._changed()

    async def _call(self, h: Handler, *args: Any) -> None:
        """Run handler ``h`` with ``(self, *args)`` in a turn (see :meth:`_drive`)."""
        result = h.func(self, *args)
        if type(result) is types.CoroutineType:
            await self._drive(cast(Coroutine[Any, Any, Any], result))
        elif inspect.isawaitable(result):
            await result

    @types.coroutine
    def _drive(self, coro: Coroutine[Any, Any, Any]) -> Generator[Any, Any, None]:
        """Run ``coro`` (a handler, or a turn of them) as ``await coro`` would.

        Each time it is about to wait, the output queued so far starts going
        out (a helper task sends it), and so does output queued from outside
        while it waits: a client never waits for a reply that is written
        already. If it never waits, its output joins the turn's one write.
        """
        try:
            yielded = coro.send(None)
        except StopIteration:
            return  # done without waiting: the common case
        while True:
            self._waiting = True
            self._flush_soon()
            try:
                sent = yield yielded
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:  # cancellation and the like, thrown in: pass it on
                step: Callable[[Any], Any] = coro.throw
                sent = exc
            else:
                step = coro.send
            finally:
                self._waiting = False
            try:
                yielded = step(sent)
            except StopIteration:
                return

    async def _handler_failed(self, exc: Exception) -> None:
        if isinstance(exc, ConnectionClosed) and self._shutting_down:
            logger.debug("%s: %s", self._log_prefix, exc)
            return
        await self._report(exc)

    async def _report(self, exc: BaseException, source: str = "handler") -> None:
        """Give ``exc`` to ``on_error`` (default: log it), then shut down if configured."""
        self.got_an_error = True
        self._stats.errors += 1
        if self._observer is not None:
            self._observer.connection_error(self, exc)
        h = self._config.on_error
        if h is None:
            self._log_error(exc, source)
        else:
            try:
                await self._call(h, exc)
            except Exception as inner:
                logger.exception("%s: on_error handler raised", self._log_prefix, exc_info=inner)
        if self.shutdown_on_error:
            if self._close_reason is None:
                self._close_reason, self._close_error = "error", type(exc).__name__
            self.shutdown()

    async def _codec_failed(self, exc: Exception) -> None:
        """The decoder raised something other than a ``FrameError``: a bug in the codec.

        Its state is unknown, so nothing more is decoded: ``exc`` goes to
        ``on_error`` (default: logged with its traceback), then the connection
        shuts down; output already queued still goes out.
        """
        await self._report(exc, "codec")
        self.shutdown()

    def _log_error(self, exc: BaseException, source: str = "handler") -> None:
        if isinstance(exc, _SOCKET_ERRORS):
            cause = exc.__cause__ or exc.__context__
            detail = str(exc) or (f"{type(cause).__name__}: {cause}" if cause else "")
            logger.info("%s: connection lost (%s) %s", self._log_prefix, type(exc).__name__, detail)
        elif isinstance(exc, (FrameError, WriteBufferFull)):
            logger.warning("%s: %s: %s", self._log_prefix, type(exc).__name__, exc)
        else:
            logger.error("%s: %s raised", self._log_prefix, source, exc_info=exc)

    # -- the connection's life ---------------------------------------------

    async def _serve(self, pool: TaskPool) -> None:
        """Run the connection to its end: on_connect, input, graceful close, on_disconnect.

        Helper tasks (events, output from outside the handlers) start in
        ``pool``, the server's; the connection waits for them before it ends.
        """
        config = self._config
        self._pool = pool
        if self._observer is not None:
            self._opened_at = time.monotonic()
            self._observer.connection_opened(self)
        try:
            scope = self._scope
            with scope:
                self._writable = not self._shutting_down
                if self._events and not self._dispatching:
                    self._dispatching = True
                    self._start_helper(self._dispatch)
                if config.on_connect is not None:
                    await self._acquire()
                    try:
                        await self._call(config.on_connect, *config.client_args)
                    except Exception as exc:
                        await self._handler_failed(exc)
                    finally:
                        self._release()
                    if self._out:
                        await self._flush()
                await self._read_loop()
            if scope.cancelled_caught and not self._shutting_down:
                logger.info("%s: idle timeout, shutting down", self._log_prefix)
                if self._close_reason is None:
                    self._close_reason = "idle-timeout"
            self._shutting_down = True
            self._writable = False
            if not self._closed and (
                self._helpers or self._out or self._unsent or self._deferred or self._may_linger
            ):
                scope = self._scope = anyio.CancelScope()
                with scope:
                    await self._settle()
                    await self._linger()
        finally:
            self._shutting_down = True
            self._writable = False
            self._closed = True
            self._pool = None
            if self._helpers:  # still running (started during the linger, or cancelled)
                with anyio.CancelScope(shield=True):
                    await self._stop_helpers()
            await self._end()
            if self._observer is not None:
                self._observer.connection_closed(self._closed_info())

    async def _stop_helpers(self) -> None:
        for scope in self._helpers:
            scope.cancel()
        while self._helpers:
            await self._wait_change()

    async def _settle(self) -> None:
        """Wait for queued events to run and for pending output to be sent."""
        if self._unsent:  # left by an inline turn that shut the connection down
            self._unsent = False
            await self._wait_unsent()
        if self._deferred is not None:  # an error of that turn, not reported yet
            await self._turn(b"")
        while self._dispatching or self._flushing or self._out:
            if self._out and not self._flushing:
                await self._flush()
            else:
                await self._wait_change()

    @property
    def _may_linger(self) -> bool:
        """Whether closing may need a linger (after the client's EOF no input can come)."""
        return self._config.linger > 0 and not self._eof_received

    async def _linger(self) -> None:
        """Half-close, then drop client input until EOF or a quiet spell (bounded).

        Closing a socket that still has unread input makes the kernel send a
        reset, which can destroy our last bytes before the client reads them.
        """
        config = self._config
        if self._closed or not self._may_linger:
            return
        try:
            await self._stream.send_eof()
        except Exception:  # best effort: TLS streams cannot half-close
            return
        deadline = anyio.current_time() + config.linger
        try:
            while True:
                quiet = min(config.linger_quiet, deadline - anyio.current_time())
                if quiet <= 0:
                    return
                with anyio.move_on_after(quiet):
                    await self._stream.receive(config.read_size)
                    continue
                return  # nothing arrived for a while: the client is not sending
        except (anyio.EndOfStream, *_SOCKET_ERRORS):
            pass

    async def _end(self) -> None:
        """Close the stream, report a fatal error, call on_disconnect.

        Shielded from cancellation when there is a handler to run (a server
        that is being cancelled still calls on_disconnect, for at most 5 s).
        """
        h = self._config.on_disconnect
        fatal = self._fatal
        if h is None and fatal is None:  # the common case: no shield scope to pay for
            await self._close_stream()
            return
        with anyio.CancelScope(shield=True):
            await self._close_stream()
            if fatal is not None:
                self._fatal = None
                with anyio.move_on_after(5):
                    await self._report(fatal)
            if h is not None:
                with anyio.move_on_after(5):
                    try:
                        await call(h, self)
                    except Exception as exc:
                        logger.exception("%s: on_disconnect raised", self._log_prefix, exc_info=exc)

    def _closed_info(self) -> ClosedConnectionInfo:
        """What the observer is told once this connection has ended."""
        from .observe import ClosedConnectionInfo, peer_of

        stats = self._stats
        return ClosedConnectionInfo(
            server=self._config.name,
            id=self.id,
            remote_ip=self.remote_ip,
            remote_port=self.remote_port,
            peer=peer_of(self.remote_ip, self.remote_port, self.remote_addr),
            duration=time.monotonic() - self._opened_at,
            bytes_in=stats.bytes_in,
            bytes_out=stats.bytes_out,
            messages_in=stats.messages_in,
            messages_out=stats.messages_out,
            reason=self._close_reason or "close",
            error=self._close_error,
        )

    async def _close_stream(self) -> None:
        try:
            await self._stream.aclose()
        except _SOCKET_ERRORS:
            pass

    async def _read_loop(self) -> None:
        stream = self._stream
        read_size = self._config.read_size
        idle = self._config.idle_timeout
        scope = self._scope
        stats = self._stats
        if self._can_inline() and isinstance(stream, InlineStream):
            self._inline = stream
            stream.set_data_callback(self._inline_turn)
        try:
            while not self._shutting_down:
                if self._paused:
                    await self._wait_resumed()
                    if self._shutting_down:
                        return
                    await self._turn(b"")  # messages already buffered when input was paused
                    continue
                if idle is not None:
                    scope.deadline = anyio.current_time() + idle
                self._interruptible = True
                try:
                    data: bytes | None = await stream.receive(read_size)
                except anyio.EndOfStream:
                    data = None
                except _SOCKET_ERRORS as exc:
                    if not self._shutting_down:
                        self._fail(exc)
                    return
                finally:
                    self._interruptible = False
                if idle is not None:
                    scope.deadline = math.inf
                if data is None:
                    self._eof_received = True
                    if self._close_reason is None:
                        self._close_reason = "eof"
                    await self._turn_eof()
                    return
                if data:
                    stats.bytes_in += len(data)
                elif self._unsent:  # b"": an inline turn kicked us (see _inline_turn)
                    self._unsent = False
                    await self._wait_unsent()
                await self._turn(data)
                if self._stream is not stream:  # start_tls replaced it
                    stream = self._stream
                    self._stop_inline()
        finally:
            self._stop_inline()

    # -- the inline fast path (the fast streams of every backend) -----------

    def _can_inline(self) -> bool:
        """Whether input on a fast stream can be handled in its data callback.

        It can with a plain ``def`` on_input (or none), no idle timeout and no
        on_flushed: a turn then needs no ``await`` unless something goes
        wrong, and then the reader task takes over.
        """
        config = self._config
        h = config.on_input
        return (h is None or not h[1]) and config.idle_timeout is None and config.on_flushed is None

    def _stop_inline(self) -> None:
        if self._inline is not None:
            self._inline.set_data_callback(None)
            self._inline = None

    def _inline_turn(self, data: bytes) -> bool:
        """One turn run synchronously in the stream's data callback (or trio's reactor).

        Used only while the reader task waits for input with nothing pending;
        returns ``False`` (having consumed nothing) otherwise. Decodes and
        handles every message like :meth:`_turn`, then writes the output at
        once. Whatever needs an ``await`` (an error to report, input paused,
        output the transport could not send yet) is left to the reader task,
        woken with ``kick``.
        """
        stream = self._inline
        if (
            stream is None
            or not self._interruptible
            or self._busy
            or self._paused
            or self._shutting_down
            or self._out
            or self._flushing
            or self._deferred is not None
            or cast(object, self._stream) is not stream  # start_tls replaced it
        ):
            return False
        stats = self._stats
        stats.bytes_in += len(data)
        self._busy = True
        count = 0
        dec = self._decoder
        h = self._config.on_input
        func = h[0] if h is not None else None
        timed = self._timed
        try:
            try:
                dec.push(data)
            except Exception as exc:
                self._deferred = (exc, "codec")
            else:
                while not self._shutting_down and not self._paused:
                    try:
                        message = dec.next_message()
                    except FrameError as exc:
                        self._deferred = (exc, "frame")
                        break
                    except Exception as exc:
                        self._deferred = (exc, "codec")
                        break
                    if message is NEED_DATA:
                        break
                    count += 1
                    if func is not None:
                        try:
                            if timed is None:
                                func(self, message)
                            else:
                                started = time.perf_counter()
                                func(self, message)
                                timed(time.perf_counter() - started)
                        except Exception as exc:
                            self._deferred = (exc, "handler")
                            break
                    dec = self._decoder  # set_codec may have switched it
        finally:
            stats.messages_in += count
            self._release()
        kick: bool = self._deferred is not None or self._paused
        out = self._out
        if out and not self._closed:
            payload = out[0] if len(out) == 1 else b"".join(out)
            self._out = []
            self._out_size = 0
            try:
                sent = stream.write_nowait(payload)
            except _SOCKET_ERRORS as exc:
                self._fail(exc)
                return True
            stats.bytes_out += len(payload)
            if not sent:  # the reader waits for the transport before reading on
                self._flushing = True
                self._in_flight = len(payload)
                self._unsent = kick = True
        if kick:  # (after a shutdown the task is leaving the read loop: _settle does it)
            stream.kick()
        return True

    async def _wait_unsent(self) -> None:
        """Wait until the transport has sent what an inline turn left in it."""
        try:
            await self._stream.send(b"")
        except _SOCKET_ERRORS as exc:
            self._fail(exc)
        finally:
            self._in_flight = 0
            self._flushing = False
            self._changed()
        if self._out:
            await self._flush()

    async def _wait_resumed(self) -> None:
        self._interruptible = True
        try:
            while self._paused and not self._shutting_down:
                await self._wait_change()
        finally:
            self._interruptible = False

    async def _turn(self, data: bytes) -> None:
        """Decode and handle every message in ``data`` (one turn), then send the output."""
        if self._busy:
            await self._acquire()
        else:
            self._busy = True
        try:
            await self._drive(self._handle_read(data))
        finally:
            self._release()
        if self._out and not self._flushing and not self._write_nowait():
            await self._flush()

    async def _handle_read(self, data: bytes) -> None:
        """The body of :meth:`_turn`: report an inline turn's error, decode, run on_input."""
        count = 0
        frame_errors = 0
        try:
            deferred = self._deferred
            if deferred is not None:  # left by an inline turn
                self._deferred = None
                exc, fault = deferred
                if fault == "frame":
                    frame_errors += 1
                    await self._report(exc)
                elif fault == "codec":
                    await self._codec_failed(exc)
                else:
                    await self._handler_failed(exc)
            dec = self._decoder
            if data:
                try:
                    dec.push(data)
                except Exception as exc:
                    await self._codec_failed(exc)
            h = self._config.on_input
            func, is_async = h if h is not None else (None, False)
            timed = self._timed
            while not self._shutting_down and not self._paused:
                try:
                    message = dec.next_message()
                except FrameError as exc:
                    # The decoder consumed the bad frame: report it, then go on with
                    # the rest of this read unless on_error shut the connection down.
                    frame_errors += 1
                    await self._report(exc)
                    if frame_errors >= _MAX_FRAME_ERRORS_PER_READ:
                        self.shutdown()
                    dec = self._decoder
                    continue
                except Exception as exc:
                    await self._codec_failed(exc)
                    break
                if message is NEED_DATA:
                    break
                count += 1
                if func is None:
                    continue
                try:
                    if timed is None:
                        if is_async:
                            await func(self, message)
                        else:
                            func(self, message)
                    else:
                        started = time.perf_counter()
                        if is_async:
                            await func(self, message)
                        else:
                            func(self, message)
                        timed(time.perf_counter() - started)
                except Exception as exc:
                    await self._handler_failed(exc)
                dec = self._decoder  # set_codec may have switched it
        finally:
            self._stats.messages_in += count

    def _write_nowait(self) -> bool:
        """Send the turn's output without an ``await`` if the stream can (trio's fast stream).

        Returns ``True`` if nothing is left to send; otherwise the rest stays
        queued for :meth:`_flush`.
        """
        send_nowait = getattr(self._stream, "send_nowait", None)
        if send_nowait is None:
            return False
        out = self._out
        data = out[0] if len(out) == 1 else b"".join(out)
        try:
            sent: int = send_nowait(data)
        except _SOCKET_ERRORS as exc:
            self._out = []
            self._out_size = 0
            self._fail(exc)
            return True
        self._stats.bytes_out += sent
        if sent == len(data):
            self._out = []
            self._out_size = 0
            return True
        self._out = [data[sent:]]
        self._out_size = len(data) - sent
        return False

    async def _turn_eof(self) -> None:
        """The client half-closed: handle what is left; a partial frame is an error."""
        await self._turn(b"")
        if self._shutting_down:
            return
        await self._acquire()
        try:
            try:
                messages = self._decoder.eof()
            except FrameError as exc:
                await self._report(exc)
                return
            except Exception as exc:
                await self._codec_failed(exc)
                return
            h = self._config.on_input
            for message in messages:
                if h is None or self._shutting_down:
                    break
                try:
                    await self._call(h, message)
                except Exception as exc:
                    await self._handler_failed(exc)
        finally:
            self._release()
        if self._out and not self._flushing:
            await self._flush()
