"""The turn engine of one connection: bytes in, handlers run, bytes out. No I/O.

A :class:`Session` holds a connection's decoder, encoder, pending output and
its :class:`State`, and runs its handlers. Its one turn function,
:meth:`Session.advance`, handles everything that can be handled without
waiting (buffered messages, one at a time and in order; errors to report;
queued events) and returns what it needs next (:class:`Next`): more input, an
``await`` of an ``async def`` handler's coroutine, a resume, or the end.
The driver (:mod:`tcpkit._driver`) does the waiting and the I/O, on every
path: in a transport's data callback when nothing needs waiting, in the
connection's task otherwise. So there is one decode-dispatch-error loop.

The rules it keeps:

* every message one read delivered is handled before more is read, one at a
  time, so a codec switch applies to the very next message;
* an error is reported (``on_error``, or logged) before the next message;
  with ``shutdown_on_error`` the connection then closes gracefully;
* custom events (``emit``/``post``) and ``on_flushed`` run after the input
  at hand, never at the same time as another handler of the connection;
* at the client's end of stream the decoder's rest is handled (a partial
  frame is an error), then the connection closes gracefully.
"""

from __future__ import annotations

import enum
import inspect
import logging
import time
import weakref
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any

from .codecs.base import NEED_DATA
from .exceptions import ConnectionClosed, ConnectionTimeout, FrameError, WriteBufferFull
from .handlers import Handler
from .observer import peer_of
from .stats import ConnectionCounts

if TYPE_CHECKING:
    from .codecs.base import Decoder, Encoder
    from .connection import Connection
    from .observer import Observer
    from .settings import Handlers, Settings
    from .stats import ServerStats

__all__ = ["Next", "Session", "State"]

logger = logging.getLogger("tcpkit.connection")

_MAX_FRAME_ERRORS_PER_READ = 64  # a decoder that keeps failing cannot hold a turn forever
_PEER_ERRORS = (FrameError, WriteBufferFull, ConnectionTimeout, OSError)
"""Errors the peer causes: logged as one line, never with a traceback."""


class State(enum.Enum):
    """Where a connection is in its life (transitions only go down this list)."""

    SETUP = "setup"
    """Accepted, being set up (PROXY header, TLS, ``pre_connect``): nothing may be sent."""
    OPEN = "open"
    """From ``on_connect`` on: input is delivered, output accepted."""
    CLOSING = "closing"
    """``shutdown()``: no more input is delivered; queued output still goes out."""
    CLOSED = "closed"
    """``close()`` or the end: nothing more goes out."""


class Next(enum.Enum):
    """What a turn needs from the driver before the session can go on."""

    READ = "read"
    """Everything buffered was handled: send the output, then read more."""
    CALL = "call"
    """An ``async def`` handler is to run (or a plain ``def`` returned an awaitable):
    await :attr:`Session.call`, then report how it ended
    (:meth:`Session.after_call`, :meth:`Session.call_failed`)."""
    WRITE = "write"
    """An event queued output: send it (waiting while the client does not read),
    then go on; the next event runs after that, so a stream of events that
    each queue a chunk is held back by the client."""
    PAUSED = "paused"
    """Input is paused: wait for ``resume_input()``."""
    CLOSE = "close"
    """The connection is closing: send the output, then close."""


# The members, as module globals: on Python 3.10 and 3.11 an enum's attribute
# goes through EnumType.__getattr__ (about ten times the cost of a global),
# several times per message and per connection.
_SETUP, _OPEN, _CLOSING, _CLOSED = State.SETUP, State.OPEN, State.CLOSING, State.CLOSED
_CALL, _READ, _CLOSE, _WRITE, _PAUSED = Next.CALL, Next.READ, Next.CLOSE, Next.WRITE, Next.PAUSED


class _Kind(enum.Enum):
    """Which handler a call is, for what its failure means."""

    CONNECT = "on_connect"
    INPUT = "on_input"
    EVENT = "event"
    ERROR = "on_error"


_CONNECT, _INPUT, _EVENT, _ERROR = _Kind.CONNECT, _Kind.INPUT, _Kind.EVENT, _Kind.ERROR


class Session:
    """One connection's codecs, pending output, state and handler turns (see the module doc)."""

    __slots__ = (
        "_call_kind",
        "_conn",
        "_deliver",
        "_errors",
        "_events",
        "_flushed_queued",
        "_frame_errors",
        "_input_ended",
        "_name",
        "_observer",
        "_report_ends",
        "_reported",
        "_tail",
        "call",
        "close_error",
        "close_reason",
        "counts",
        "decoder",
        "encoder",
        "eof",
        "fatal",
        "handlers",
        "high",
        "in_flight",
        "limit",
        "low",
        "out",
        "out_size",
        "paused",
        "state",
        "stats",
        "turning",
        "wants_flushed",
    )

    def __init__(
        self,
        conn: Connection[Any, Any],
        settings: Settings,
        handlers: Handlers,
        stats: ServerStats,
        observer: Observer,
    ) -> None:
        # Weak: the connection owns its session, and one that ended must be freed by
        # reference counting, not left for the cycle collector (a server makes many).
        self._conn = weakref.ref(conn)
        self._name = settings.name  # (for log_prefix)
        self.handlers = handlers
        self.stats = stats
        self.decoder: Decoder[Any] = settings.input_codec.decoder()
        self.encoder: Encoder[Any] = settings.output_codec.encoder()
        self.state = _SETUP
        wb = settings.write_buffer
        self.high, self.low, self.limit = wb.high, wb.low, wb.limit
        self.out: list[bytes] = []
        self.out_size = 0
        self.in_flight = 0  # handed to the transport, not yet to the OS
        self.turning = False  # handlers are running: their output joins the turn's write
        self.paused = False
        self.eof = False  # the client half-closed: after the buffered input, the end
        self._input_ended = False  # ... and the decoder gave back what it held
        self.call: Coroutine[Any, Any, Any] | None = None  # see Next.CALL
        self.fatal: BaseException | None = None  # a socket error, reported once closed
        self._call_kind = _INPUT
        self._reported: BaseException | None = None  # the error on_error is handling
        # An idle connection holds no queue: errors to report are a tuple (a few at most),
        # events a deque made when one comes and dropped when it is empty (an empty deque
        # costs 600 bytes), the messages the decoder gave back at the end a list.
        # To report, in order: (error, where it came from, whether the connection ends after).
        self._errors: tuple[tuple[BaseException, str, bool], ...] = ()
        self._report_ends = False  # the error being reported ends the connection
        self._events: deque[tuple[Handler, tuple[Any, ...]]] | None = None
        self._tail: list[Any] | None = None  # messages the decoder gave back at the end of stream
        self._flushed_queued = False
        self._frame_errors = 0
        self._observer = observer
        self.counts = ConnectionCounts()
        self.close_reason: str | None = None  # why it began to end (see tcpkit.observer)
        self.close_error: str | None = None  # ... and the error's type, if an error did
        # The arguments of _deliver_input (a plain tuple: ``*`` copies a NamedTuple each time):
        # on_input, telling the observer how long each call took if it asked.
        h = handlers.on_input or _NO_INPUT
        func = _timed_input(h, observer.message_handled) if observer.times_handlers else h.func
        self._deliver = (func, h.is_async)
        self.wants_flushed = handlers.on_flushed is not None  # (flushed() does something)

    @property
    def conn(self) -> Connection[Any, Any]:
        """The connection (alive while its session is in use: it or its driver holds it)."""
        conn = self._conn()
        assert conn is not None
        return conn

    @property
    def log_prefix(self) -> str:
        """``<server name> #<id> <peer>``: how log lines name the connection."""
        conn = self.conn
        return f"{self._name} #{conn.id} {peer_of(conn.remote_addr)}"

    # -- input -------------------------------------------------------------------

    def turn(self, data: bytes) -> Next:
        """The turn function: bytes from the client in, handlers run, what is next out.

        Every message ``data`` completes is handled (as :meth:`advance` does);
        the output the handlers queued is in :attr:`out` (:meth:`take_output`).
        A decoder that fails is reported, never raised.
        """
        self._frame_errors = 0
        try:
            self.decoder.push(data)
        except Exception as exc:
            self._codec_failed(exc)
        return self.advance()

    def feed_eof(self) -> None:
        """The client half-closed: the next turns handle what is left, then close."""
        self.eof = True

    @property
    def has_work(self) -> bool:
        """A turn has something to do besides input: a call, an error, an event."""
        return self.call is not None or bool(self._errors) or bool(self._events)

    @property
    def idle(self) -> bool:
        """Open, not paused, nothing to do but read: a turn may run in a data callback."""
        return (
            self.state is _OPEN
            and not self.paused
            and self.call is None
            and not self._errors
            and not self._events
        )

    # -- turns --------------------------------------------------------------------

    def start(self) -> Next:
        """Open the connection, call ``on_connect``, then go on as :meth:`advance`.

        (A connection shut down during its setup still gets ``on_connect``,
        with sending refused, and then ``on_disconnect``.)
        """
        if self.state is _SETUP:
            self.state = _OPEN
        h = self.handlers.on_connect
        if h is not None:
            self.turning = True
            try:
                self._invoke(h, self.conn.args, _CONNECT)
            finally:
                self.turning = False
        return self.advance()

    def advance(self) -> Next:
        """Run every handler that can run without waiting; return what is needed next.

        The order: a call to await, errors to report, the state, the input at
        hand (a message at a time), then events, a pause, the end of input.
        """
        turning = self.turning
        self.turning = True
        try:
            while True:
                if self.call is not None:
                    return _CALL
                if self._errors:
                    error, self._errors = self._errors[0], self._errors[1:]
                    self._report(*error)
                    continue
                if self.state is not _OPEN:
                    return _CLOSE
                if not self.paused and self._deliver_input(*self._deliver):
                    continue
                if self._events:  # after the input at hand (events run while paused too)
                    if self.out:  # what came before goes out first: each event's output
                        return _WRITE  # is written before the next event runs
                    self._run_event()
                elif self.paused:
                    return _PAUSED
                elif self.eof:
                    self._end_of_input()
                else:
                    return _READ
        finally:
            self.turning = turning

    def _deliver_input(self, func: Callable[..., Any], is_async: bool) -> bool:
        """Hand the messages at hand to ``on_input`` (``func``, timed if an observer asked).

        The hot loop that hands buffered messages to ``on_input`` runs until no
        message is complete (``False``), or stops early (``True``) at the first
        message whose handler needs the turn loop (an error, a pause, a
        shutdown, an awaitable a ``def`` returned; for an ``async def``, at
        the first message: :meth:`_async_input` goes on from there). The
        decoder is looked up again after every message: a handler may have
        switched the codec.

        (The server's count of messages is updated once it returns, as nothing
        but its own handlers can look in between; the connection's, per message.)
        """
        conn, counts, tail = self._conn(), self.counts, self._tail
        n = 0
        try:
            while True:
                try:
                    message = tail.pop(0) if tail else self.decoder.next_message()
                except Exception as exc:
                    self._decode_failed(exc)
                    return True
                if message is NEED_DATA:
                    return False
                n += 1
                counts.messages_in += 1
                if is_async:
                    self.call = self._async_input(func, message)
                    self._call_kind = _INPUT
                    return True
                try:
                    result = func(conn, message)
                except Exception as exc:
                    self._failed(exc, _INPUT)
                    return True
                if result is not None and self._became_call(result, _INPUT):  # a def's awaitable
                    return True
                if self.state is not _OPEN or self.paused or self._errors:
                    return True  # the handler changed what comes next
        finally:
            self.stats.messages_in += n

    async def _async_input(self, func: Callable[..., Any], message: Any) -> None:
        """:meth:`_deliver_input` for an ``async def`` on_input, from ``message`` on.

        One coroutine awaits the handler for every message at hand (a native
        ``await``: a handler that does not wait costs about a plain call), and
        returns where the loop would stop; the driver then goes on as after
        any :attr:`call`.
        """
        conn, stats, counts = self._conn(), self.stats, self.counts
        while True:
            try:
                await func(conn, message)
            except Exception as exc:
                self._failed(exc, _INPUT)
                return
            if self.state is not _OPEN or self.paused or self._errors:
                return
            tail = self._tail
            try:
                message = tail.pop(0) if tail else self.decoder.next_message()
            except Exception as exc:
                self._decode_failed(exc)
                return
            if message is NEED_DATA:
                return
            stats.messages_in += 1
            counts.messages_in += 1

    def _became_call(self, result: object, kind: _Kind) -> bool:
        """Whether a handler's result is to be awaited: it becomes :attr:`call`."""
        if inspect.iscoroutine(result):
            self.call = result
        elif inspect.isawaitable(result):  # (a def returning a future)
            self.call = _awaited(result)
        else:
            return False
        self._call_kind = kind
        return True

    def _decode_failed(self, exc: Exception) -> None:
        if isinstance(exc, FrameError):
            self._frame_error(exc)
        else:
            self._codec_failed(exc)

    def _end_of_input(self) -> None:
        """The client's end of stream, with nothing left buffered.

        The first time, the decoder hands back what it still holds (a partial
        frame is an error); those messages are handled like any other, and
        then (the second time) the connection closes gracefully. With nothing
        handed back, it closes at once.
        """
        if self._input_ended:
            self.shutdown("eof")
            return
        self._input_ended = True
        try:
            self._tail = list(self.decoder.eof())
        except FrameError as exc:
            self._errors += ((exc, "frame", False),)
        except Exception as exc:
            self._codec_failed(exc)
        else:
            if not self._tail:  # nothing came of it: the end, now
                self.shutdown("eof")

    def _invoke(self, h: Handler, args: tuple[Any, ...], kind: _Kind) -> None:
        """Call ``h(conn, *args)``; an ``async def``'s coroutine becomes :attr:`call`."""
        try:
            result = h.func(self.conn, *args)
        except Exception as exc:
            self._failed(exc, kind)
            return
        if not self._became_call(result, kind) and kind is _ERROR:
            self._after_report(args[0])

    def after_call(self) -> Next:
        """The coroutine in :attr:`call` returned: what is next, as :meth:`advance` says.

        The fast path, after :meth:`_async_input`: it returned with nothing
        else to do (no error, event, pause, end) only when no message was
        complete, so the next thing is more input.
        """
        if (
            self._call_kind is _INPUT
            and self.state is _OPEN
            and not (self._errors or self._events or self.paused or self.eof)
            and self._deliver[1]  # (on_input is an async def)
        ):
            self.call = None  # (call_done, for input)
            return _READ
        self.call_done()
        return self.advance()

    def call_failed(self, exc: Exception) -> Next:
        """The coroutine in :attr:`call` raised ``exc``: report it, then as :meth:`advance`."""
        self.call_done(exc)
        return self.advance()

    def call_done(self, exc: BaseException | None = None) -> None:
        """The coroutine in :attr:`call` returned (``exc is None``) or raised ``exc``."""
        kind = self._call_kind
        self.call = None
        if exc is not None:
            self._failed(exc, kind)
        elif kind is _ERROR:
            self._after_report(self._reported)

    def _run_event(self) -> None:
        events = self._events
        assert events is not None
        h, args = events.popleft()
        if not events:
            self._events = None
        if h is self.handlers.on_flushed:
            self._flushed_queued = False
        self._invoke(h, args, _EVENT)

    # -- events --------------------------------------------------------------------

    def emit(self, h: Handler, args: tuple[Any, ...]) -> None:
        """Queue the event handler ``h`` (run after the input at hand)."""
        if self._events is None:
            self._events = deque()
        self._events.append((h, args))

    def flushed(self) -> bool:
        """Everything queued went to the OS: queue ``on_flushed`` (once until it runs).

        Returns whether it was queued.
        """
        h = self.handlers.on_flushed
        if h is None or self._flushed_queued or self.state is not _OPEN:
            return False
        self._flushed_queued = True
        self.emit(h, ())
        return True

    # -- output -------------------------------------------------------------------

    def take_output(self) -> bytes:
        """Remove and return everything queued, joined (``b""`` if nothing is)."""
        out = self.out
        if not out:
            return b""
        data = out[0] if len(out) == 1 else b"".join(out)
        self.out = []
        self.out_size = 0
        return data

    def over_limit(self, size: int) -> ConnectionClosed:
        """Queueing ``size`` bytes more passed the hard limit: fail, and say why to the caller."""
        exc = WriteBufferFull(self.out_size + self.in_flight + size, self.limit)
        self.fail(exc)
        closed = ConnectionClosed(str(exc))
        closed.__cause__ = exc
        return closed

    # -- control ------------------------------------------------------------------

    def shutdown(self, reason: str = "shutdown", error: BaseException | None = None) -> None:
        """No more input; queued output still goes out (never blocks).

        ``reason`` (and ``error``) say why, if nothing else did first (see
        :data:`tcpkit.observer.CLOSE_REASONS`).
        """
        self._ending(reason, error)
        if self.state is _OPEN or self.state is _SETUP:
            self.state = _CLOSING

    def close(self, reason: str = "close", error: BaseException | None = None) -> None:
        """Close at once: queued output is discarded."""
        self._ending(reason, error)
        self.state = _CLOSED
        self.out = []
        self.out_size = 0
        self._tail = None

    def fail(self, exc: BaseException, reason: str = "error") -> None:
        """A fatal socket-level problem: close, and report ``exc`` to ``on_error`` at the end."""
        if self.fatal is None and self.state is not _CLOSED:
            self.fatal = exc
        self.close(reason, exc)

    def time_out(self, exc: BaseException, reason: str) -> None:
        """A time limit passed: report ``exc`` (next turn), then shut down gracefully."""
        self._ending(reason, exc)
        self._errors += ((exc, "timeout", True),)

    def _ending(self, reason: str, error: BaseException | None) -> None:
        if self.close_reason is None:
            self.close_reason = reason
            self.close_error = type(error).__name__ if error is not None else None

    def report_fatal(self, exc: BaseException) -> None:
        """Queue the fatal error for the final turn (it runs even once closed)."""
        self._errors += ((exc, "socket", False),)

    def not_writable(self) -> ConnectionClosed:
        """The error ``put``/``send`` raise when the connection takes no output."""
        if self.state is _SETUP:
            return ConnectionClosed(
                f"connection #{self.conn.id} is not set up yet (no sending before on_connect)"
            )
        return ConnectionClosed(f"connection #{self.conn.id} is shutting down or closed")

    # -- errors -------------------------------------------------------------------

    def _frame_error(self, exc: FrameError) -> None:
        """The decoder consumed a bad frame: report it, then go on (unless it keeps failing)."""
        self._frame_errors += 1
        self._errors += ((exc, "frame", self._frame_errors >= _MAX_FRAME_ERRORS_PER_READ),)

    def _codec_failed(self, exc: Exception) -> None:
        """The decoder raised something other than a ``FrameError``: a bug in the codec.

        Its state is unknown, so nothing more is decoded: ``exc`` is reported,
        then the connection shuts down; output already queued still goes out.
        """
        self._errors += ((exc, "codec", True),)

    def _failed(self, exc: BaseException, kind: _Kind) -> None:
        if isinstance(exc, ConnectionClosed) and self.state is not _OPEN:
            logger.debug("%s: %s", self.log_prefix, exc)  # sent on its own closing connection
            if kind is _ERROR:
                self._after_report(self._reported)
        elif kind is _ERROR:
            logger.exception("%s: on_error handler raised", self.log_prefix, exc_info=exc)
            self._observer.unhandled_error(exc, "on_error", self.conn)
            self._after_report(self._reported)
        else:
            self._errors += ((exc, "handler", False),)

    def _report(self, exc: BaseException, source: str, ends: bool) -> None:
        """Give ``exc`` to ``on_error`` (default: log it), then shut down if configured."""
        self.conn.got_an_error = True
        self.stats.errors += 1
        self._observer.connection_error(self.conn, exc)
        self._reported = exc
        self._report_ends = ends
        h = self.handlers.on_error
        if h is not None:
            self._invoke(h, (exc,), _ERROR)
            return
        self._log_error(exc, source)
        if source in ("handler", "codec") and not isinstance(exc, _PEER_ERRORS):
            self._observer.unhandled_error(exc, source, self.conn)
        self._after_report(exc)

    def _after_report(self, exc: BaseException | None) -> None:
        if self._report_ends or self.conn.shutdown_on_error:
            self.shutdown("error", exc)

    def _log_error(self, exc: BaseException, source: str) -> None:
        prefix = self.log_prefix
        if isinstance(exc, ConnectionTimeout):
            logger.info("%s: %s", prefix, exc)
        elif source == "socket":
            logger.info("%s: connection lost (%s: %s)", prefix, type(exc).__name__, exc)
        elif isinstance(exc, (FrameError, WriteBufferFull)):
            logger.warning("%s: %s: %s", prefix, type(exc).__name__, exc)
        else:
            logger.error("%s: %s raised", prefix, source, exc_info=exc)


async def _awaited(awaitable: Awaitable[Any]) -> Any:
    """A coroutine for an awaitable that is not one (a plain ``def`` returning a future)."""
    return await awaitable


def _no_handler(conn: Connection[Any, Any], message: Any) -> None:
    """The ``on_input`` of an app that registered none: messages are decoded and dropped."""


_NO_INPUT = Handler(_no_handler, False)


def _timed_input(h: Handler, timer: Callable[[float], None]) -> Callable[..., Any]:
    """``h``'s function, telling ``timer`` how long each call took (for an observer)."""
    return (_timed_async if h.is_async else _timed)(h.func, timer)


def _timed(func: Callable[..., Any], timer: Callable[[float], None]) -> Callable[..., Any]:
    """``func``, telling ``timer`` how long each call took (for an observer)."""

    def timed(conn: Connection[Any, Any], message: Any) -> Any:
        started = time.perf_counter()
        try:
            return func(conn, message)
        finally:
            timer(time.perf_counter() - started)

    return timed


def _timed_async(
    func: Callable[..., Any], timer: Callable[[float], None]
) -> Callable[..., Coroutine[Any, Any, Any]]:
    """:func:`_timed` for an ``async def`` (the time until its coroutine returns)."""

    async def timed(conn: Connection[Any, Any], message: Any) -> Any:
        started = time.perf_counter()
        try:
            return await func(conn, message)
        finally:
            timer(time.perf_counter() - started)

    return timed
