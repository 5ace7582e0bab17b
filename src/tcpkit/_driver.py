"""The one driver: runs a connection's :class:`~tcpkit._session.Session` over its transport.

Every connection, on every backend and stream, is driven by this code:

* The connection's task loops on the session's turn function: a turn
  handles everything buffered (handlers run), its output leaves in **one
  write**, then the task reads again. What the turn asks for next is done
  here: await an ``async def`` handler's coroutine, wait for a resume, close.
* A connection has that task only while it needs one (:meth:`Driver.start`):
  where the transport can, a connection whose ``on_input`` is a plain
  ``def`` waits for input *parked*, with no task, as a hand-written
  Protocol does; the transport's wake callback handles what woke it there
  (input, the client's end of stream) and starts a task when a turn needs
  an ``await``; the task ends when it would wait for input again. An end
  that needs no waiting needs no task either (:meth:`Driver._end_now`).
* Where the transport can (tcpkit's own socket streams), a turn runs right in
  its data callback while the task waits in ``receive``: no task switch per
  read. The callback runs only what needs no ``await``; anything else (a
  handler that waits, output the kernel could not take yet, an event) wakes
  the task with ``interrupt_receive``. Where the callback runs as the task
  itself (asyncio), it also runs ``async def`` handlers, up to the first that
  waits, which the task then resumes where it waits.
* A connection runs in a context of its own (``contextvars``): every step
  of its task and every inline turn, so handlers see the same context
  variables wherever they run.
* An ``async def`` handler that waits (a lock, a timer, a database) first
  lets what it queued so far go out, in a helper task, as does output queued
  from outside the connection's turns (``broadcast``, ``post``...).
* The end: flush, then linger (half-close and drop input until the client's
  end of stream, so the kernel sends a FIN and not a reset that could
  destroy the last bytes), report a socket error, close, ``on_disconnect``.
"""

from __future__ import annotations

import enum
import functools
import inspect
import logging
import socket
import ssl
import types
import weakref
from collections.abc import Awaitable, Callable, Coroutine, Generator
from contextvars import Context, ContextVar, copy_context
from typing import TYPE_CHECKING, Any, TypeAlias

import anyio
import anyio.lowlevel
from anyio.abc import SocketAttribute

from ._session import Next, Session, State
from ._socket import unsent_bytes
from ._transport import ReceiveInterrupted, Transport, as_transport, socket_error
from .exceptions import (
    ConnectionClosed,
    ConnectionTimeout,
    IdleTimeout,
    MessageTimeout,
    SendTimeout,
)
from .handlers import call

if TYPE_CHECKING:
    from ._tasks import CancelScope, TaskPool
    from ._watchdog import Watchdog
    from .connection import Connection
    from .handlers import Handler
    from .observer import Observer
    from .settings import Settings
    from .stats import ServerStats

__all__ = ["Driver", "current_connection"]

logger = logging.getLogger("tcpkit.connection")

_SOCKET_ERRORS = (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError)
# A write can also meet the end of the stream: TLS after the peer's EOF without close_notify.
_WRITE_ERRORS = (*_SOCKET_ERRORS, anyio.EndOfStream)
_TIMEOUT_REASONS: dict[type[ConnectionTimeout], str] = {
    IdleTimeout: "idle-timeout",
    MessageTimeout: "message-timeout",
    SendTimeout: "send-timeout",
}
# Enum members as globals: an enum's attribute costs about ten globals on Python 3.10-3.11.
_CALL, _READ, _CLOSE = Next.CALL, Next.READ, Next.CLOSE
_OPEN, _CLOSING, _CLOSED = State.OPEN, State.CLOSING, State.CLOSED


class _Input(enum.Enum):
    """How a connection's input reaches its turns (chosen when it starts: Driver.start)."""

    TASK = "task"
    """Its task receives, and runs the turns (no data callback)."""
    CALLBACK = "callback"
    """The transport's data callback runs the turns while the task waits in ``receive``."""
    CALLBACK_CALLS = "callback-calls"
    """... and starts ``async def`` handlers there, as the task (see ``_step_inline``)."""
    PARKING = "parking"
    """The data callback runs the turns; the connection waits for input without a task."""


_TASK, _CALLBACK, _CALLBACK_CALLS, _PARKING = (
    _Input.TASK,
    _Input.CALLBACK,
    _Input.CALLBACK_CALLS,
    _Input.PARKING,
)

_current: ContextVar[weakref.ref[Connection[Any, Any]] | None] = ContextVar(
    "tcpkit_connection", default=None
)
# A weak reference: a copy of the connection's context can outlive the connection (asyncio
# keeps the context of a cancelled timer until its deadline), and must not keep it alive.


def current_connection() -> Connection[Any, Any] | None:
    """The connection whose handler is running now, or ``None`` outside handlers."""
    ref = _current.get()
    return None if ref is None else ref()


class Driver:
    """Runs one connection (see the module doc): :meth:`start` it, or await :meth:`run`."""

    __slots__ = (
        "_aborted",
        "_change",
        "_conn",
        "_context",
        "_drain_scope",
        "_flush_scheduled",
        "_helpers",
        "_input",
        "_observer",
        "_on_end",
        "_parked",
        "_pool",
        "_raw_socket",
        "_reading",
        "_scope",
        "_session",
        "_settings",
        "_started",
        "_stats",
        "_stepping",
        "_transport",
        "_watchdog",
        "_writing",
    )

    def __init__(
        self,
        conn: Connection[Any, Any],
        session: Session,
        transport: Transport,
        settings: Settings,
        stats: ServerStats,
        pool: TaskPool,
        observer: Observer,
        watchdog: Watchdog | None,
        on_end: Callable[[], None],
    ) -> None:
        self._conn = conn
        self._session = session
        self._transport = transport
        self._settings = settings
        self._stats = stats
        self._pool = pool
        self._observer = observer
        self._context: Context = copy_context()  # the connection's own: its task's steps, its
        # inline turns (see _steps)
        self._reading = False  # the task waits in receive, or the connection is parked:
        # a data callback may run a turn
        self._started: _Started | None = None  # see _step_inline
        self._stepping = False  # _step_inline runs a handler
        self._writing = False  # a write (and its drain) is under way
        self._flush_scheduled = False
        self._change: anyio.Event | None = None
        # One per running helper task (a tuple: an idle connection holds no list or set).
        self._helpers: tuple[CancelScope, ...] = ()
        self._scope: CancelScope | None = None  # the task's (close() cancels it)
        self._drain_scope: CancelScope | None = None  # a drain under way (send_timeout)
        self._watchdog = watchdog
        self._raw_socket: socket.socket | None = None  # (for the watchdog: see _begin)
        self._on_end = on_end  # called once the connection has ended
        self._input = _TASK  # how input reaches the turns (set when it starts)
        self._parked = False  # ... and does now
        self._aborted = False  # close() was called

    @property
    def transport(self) -> Transport:
        return self._transport

    # -- starting, the connection's task -----------------------------------------------

    def start(self) -> None:
        """Start the connection; it gets a task only while it needs one.

        Where the transport is :attr:`~Transport.parkable` and ``on_input`` is
        a plain ``def``, ``on_connect`` runs right here (if it is a plain
        ``def`` too: else a task runs it), and the connection then waits for
        input without a task (parked): the data callback runs its turns, and
        a task starts when something needs one (an ``async def`` handler,
        backpressure, an event, the end), and ends when it would wait for
        input again. Elsewhere a task runs the connection, as :meth:`run`.
        """
        try:
            self._context.run(self._open)
        except Exception:  # (a bug: contained to this connection)
            logger.exception("%s: unexpected error starting the connection", self)
            self._session.close("error")
            self._spawn(_CLOSE)

    def _open(self) -> None:
        self._begin()
        session = self._session
        h = session.handlers.on_input
        transport = self._transport
        if not (
            transport.parkable
            and (h is None or not h.is_async)
            and transport.set_data_callback(self._data_callback())
        ):
            self._spawn(None)  # (the data callback, if any, is set in the task: as_task)
            return
        self._input = _PARKING
        self._go_on(session.start())

    def _go_on(self, nxt: Next) -> None:
        """After a turn of a parked connection run outside its task: park, end, or start it."""
        session = self._session
        if nxt is _READ and (not session.out or self._write_now()) and self._park():
            return
        if nxt is _CLOSE and self._end_now():
            return
        self._spawn(nxt)

    def run(self) -> Awaitable[None]:
        """Run the connection to its end in the calling task (it never parks).

        (Await it: it steps the connection in its own context, see :meth:`_steps`.)
        """
        return self._steps(self._run_here())

    async def _run_here(self) -> None:
        self._begin()
        await self._run(None)

    def _begin(self) -> None:
        _current.set(weakref.ref(self._conn))  # (in the connection's context)
        watchdog = self._watchdog
        if watchdog is not None:  # it asks what the kernel still holds: the socket tells
            self._raw_socket = self._transport.stream.extra(SocketAttribute.raw_socket, None)
            watchdog.add(self)

    def _spawn(self, nxt: Next | None) -> None:
        """Start the connection's task: it goes on with ``nxt`` (``None``: ``on_connect``)."""
        self._pool.start_soon(self._task, nxt)

    async def _task(self, nxt: Next | None) -> None:
        try:
            await self._steps(self._run(nxt))
        except Exception as exc:  # a bug must not reach the server's task group
            logger.exception("%s: unexpected error in connection task", self, exc_info=exc)

    async def _run(self, nxt: Next | None) -> None:
        """The task: the turns from ``nxt`` on, then the end, unless it parks before."""
        self._reading = False
        parked = ended = False
        try:
            # (close() cancels it: the turns, the end)
            scope = self._scope = self._pool.cancel_scope()
            if self._aborted:
                scope.cancel()
            if nxt is None and self._input is _TASK:
                self._set_data_callback()
            with scope:
                parked = await self._turns(self._session.start() if nxt is None else nxt)
                if not parked:
                    self._stop_inline()
                    ended = self._end_now()  # (if the end needs no waiting, as a parked one's)
                    if not ended:
                        await self._wind_down()
        finally:
            self._scope = None
            if not (parked or ended):
                await self._close_up()

    def _stop_inline(self) -> None:
        if self._input is not _TASK:
            self._input = _TASK
            self._transport.set_data_callback(None)

    async def _close_up(self) -> None:
        """The end (after the turns, or cut short): close, ``on_disconnect``, tell the server."""
        self._stop_inline()
        if self._watchdog is not None:
            self._watchdog.remove(self)
        try:
            await self._finish()
        finally:
            self._on_end()

    def _set_data_callback(self) -> None:
        """The data callback of a connection that does not park (set in its task)."""
        h = self._session.handlers.on_input
        transport = self._transport
        calls = transport.callback_runs_as_task
        if (h is None or not h.is_async or calls) and transport.set_data_callback(
            self._data_callback(), as_task=calls
        ):
            self._input = _CALLBACK_CALLS if calls else _CALLBACK

    @types.coroutine
    def _steps(self, coro: Coroutine[Any, Any, None]) -> Generator[Any, Any, None]:
        """Run ``coro`` as ``await coro`` would, every step in the connection's own context.

        The inline turns of the data callback run in that context too, so
        handlers see the same context variables wherever they run. While a
        step runs, handlers' output joins the turn's one write; a step that
        ends with a handler waiting (a lock, a timer, backpressure) lets what
        it queued so far go out now, in a helper task.
        """
        session = self._session
        run = self._context.run
        step: Callable[[Any], Any] = coro.send
        value: Any = None
        while True:
            session.turning = True
            try:
                yielded = run(step, value)
            except StopIteration:
                return
            finally:
                session.turning = False
            if session.call is not None:
                self.flush_soon()  # a client never waits for a reply that is written already
            try:
                value = yield yielded
            except GeneratorExit:
                run(coro.close)
                raise
            except BaseException as exc:  # cancellation and the like, thrown in: pass it on
                step, value = coro.throw, exc
            else:
                step = coro.send

    async def _turns(self, nxt: Next) -> bool:
        """Run turns from ``nxt`` on; ``True`` once parked."""
        session = self._session
        while True:
            if nxt is _CALL:  # await the session's coroutine, then go on
                try:
                    await self._call()
                except BaseException as exc:
                    nxt = self._call_raised(exc)
                else:
                    nxt = session.after_call()
                continue
            if self._write_pending():  # (else no coroutine to await)
                await self._write_out()
            if nxt is _CLOSE:
                return False
            if nxt is _READ:
                if self._input is _PARKING and self._park():
                    return True
                nxt = await self._read()
                continue
            if session.paused and not session.has_work:
                await self._wait_change()
            nxt = session.advance()

    def _park(self) -> bool:
        """Wait for input without a task, if nothing else is to be done (see :meth:`start`)."""
        # (Not after close(): that closed the session, which is then not idle.)
        session = self._session
        if not session.idle or session.in_flight:
            return False
        if not self._transport.set_wake_callback(self._unpark):
            return False
        self._parked = self._reading = True
        return True

    def _unpark(self) -> None:
        """Something for a parked connection to do (the transport's wake callback).

        Input, the client's end of stream or a failure is handled right here
        (in the connection's context), as the task would after its
        ``receive``: the connection then parks again, or ends here when its
        end needs no waiting (:meth:`_end_now`), or its task starts. An
        interrupt (a shutdown, an event, a time limit: from anywhere, maybe a
        handler or a loop over connections) and ``close()`` start the task.
        """
        if not self._parked:
            return
        self._leave_park()
        session = self._session
        if (
            self._aborted
            or session.turning
            or self._writing
            or session.in_flight
            or not session.idle
        ):
            # (A write under way, from a helper: the input waits for the task, as in
            # _on_data, so that no reply goes out in the middle of that write.)
            self._transport.clear_interrupt()  # (an interrupt that woke it: served by the task)
            self._spawn(_READ)
        else:
            self._context.run(self._woken)

    def _leave_park(self) -> None:
        """No longer parked: the wake callback is cleared (the caller goes on)."""
        self._parked = self._reading = False
        self._transport.set_wake_callback(None)  # (cleared already, unless abort() woke it)

    def _woken(self) -> None:
        """What woke a parked connection, handled here (see :meth:`_unpark`)."""
        # receive_nowait raises ReceiveInterrupted before anything else: so an interrupt,
        # which may come from anywhere (a handler, a loop over connections), always goes
        # to the task, and this runs only from the transport's own callbacks.
        try:
            nxt = self._read_now()
        except Exception:  # (a bug: contained to this connection)
            logger.exception("%s: unexpected error on input", self)
            self._session.close("error")
            nxt = _CLOSE
        if nxt is None:
            self._spawn(_READ)
        else:
            self._go_on(nxt)

    def _read_now(self) -> Next | None:
        """:meth:`_read` without waiting; ``None``: an interrupt, for the task."""
        try:
            data = self._transport.receive_nowait(self._settings.read_size)
        except (ReceiveInterrupted, anyio.WouldBlock):
            return None
        except anyio.EndOfStream:
            return self._input_ended()
        except _SOCKET_ERRORS as exc:
            return self._input_failed(exc)
        return self._received(data)

    async def _read(self) -> Next:
        """Wait for input and run the turn it makes (or the one that woke the wait)."""
        session = self._session
        if not session.idle:  # work came in meanwhile: no wait
            return session.advance()
        self._reading = True
        try:
            data = await self._transport.receive(self._settings.read_size)
        except ReceiveInterrupted:
            return session.advance()
        except anyio.EndOfStream:
            return self._input_ended()
        except _SOCKET_ERRORS as exc:
            return self._input_failed(exc)
        except BaseException as exc:
            if self._started is None:
                raise
            # A handler the callback started waits: this (a cancellation...) is for it.
            runner, yielded, _ = self._started
            self._started = (runner, yielded, exc)
            return _CALL
        finally:
            self._reading = False
        self._stats.bytes_in += len(data)  # (as _received, inline: a hot path)
        session.counts.bytes_in += len(data)
        return session.turn(data)

    def _received(self, data: bytes) -> Next:
        self._stats.bytes_in += len(data)
        self._session.counts.bytes_in += len(data)
        return self._session.turn(data)

    def _input_ended(self) -> Next:
        self._session.feed_eof()
        return self._session.advance()

    def _input_failed(self, exc: BaseException) -> Next:
        session = self._session
        if session.state is _OPEN:
            session.fail(socket_error(exc))
        return session.advance()

    # -- the inline fast path ---------------------------------------------------------

    def _data_callback(self) -> Callable[[bytes], bool]:
        """:meth:`_on_data`, run in the connection's context (no Python frame in between)."""
        run: Callable[..., Any] = self._context.run
        return functools.partial(run, self._on_data)

    def _on_data(self, data: bytes) -> bool:
        """A turn run in the transport's data callback, in the connection's context."""
        session = self._session
        if not self._reading or self._writing or session.in_flight or not session.idle:
            return False  # the task takes it
        self._stats.bytes_in += len(data)  # (as _received: inline, the hottest path)
        session.counts.bytes_in += len(data)
        nxt = session.turn(data)
        if not self._parked:
            self._waiting_turn_done(nxt)
        elif nxt is not _READ or (session.out and not self._write_now()):
            self._leave_park()  # (else still parked)
            self._go_on(nxt)
        return True

    def _waiting_turn_done(self, nxt: Next) -> None:
        """After a turn in the data callback while the task waits in ``receive``."""
        if nxt is _CALL and self._started is None and self._input is _CALLBACK_CALLS:
            nxt = self._step_inline()
        if (nxt is not _READ or (self._session.out and not self._write_now())) and self._reading:
            # The task does what needs an await (unless a handler has woken it already).
            self._transport.interrupt_receive()

    def _step_inline(self) -> Next:
        """Run the session's ``async def`` handlers right here, while none waits.

        The data callback runs as the connection's task (the transport says
        so), so a handler that does not wait costs no task switch: its
        coroutine is stepped here. If one waits, it is left to the task,
        which goes on with it where it waits (:attr:`_started`).
        """
        session = self._session
        session.turning = self._stepping = True
        try:
            while True:
                coro = session.call
                assert coro is not None
                try:
                    waits_on = coro.send(None)
                except StopIteration:
                    nxt = session.after_call()
                except BaseException as exc:
                    nxt = self._call_raised(exc)
                else:
                    self._started = (coro, waits_on, None)
                    return _CALL
                if nxt is not _CALL:
                    return nxt
        finally:
            session.turning = self._stepping = False

    def _write_now(self) -> bool:
        """Write an inline turn's output; ``False`` if the task must act (drain, on_flushed...)."""
        session = self._session
        try:
            if not self._send(session.take_output()):
                return False
        except _WRITE_ERRORS as exc:
            session.fail(socket_error(exc))
            return False
        return not (session.wants_flushed and session.flushed())

    def _send(self, data: bytes) -> bool:
        """Hand ``data`` to the transport; ``False`` if it holds some (in flight: a drain)."""
        session = self._session
        transport = self._transport
        done = False
        if data:
            done = transport.write(data)
            self._stats.bytes_out += len(data)
            session.counts.bytes_out += len(data)
        if not done:
            session.in_flight = transport.buffered  # what send's backpressure sees
        return done

    # -- handler coroutines -------------------------------------------------------------

    def _call(self) -> Awaitable[Any]:
        """What to await for the session's coroutine: itself, or (one the data callback
        started, see :meth:`_step_inline`) the rest of it."""
        coro = self._session.call
        assert coro is not None
        started, self._started = self._started, None
        if started is None:
            return coro
        assert started[0] is coro
        return _resume(*started)

    def _call_raised(self, exc: BaseException) -> Next:
        """The session's coroutine raised ``exc``: an error is reported; anything else
        (a cancellation...) is passed on, once the session knows."""
        if isinstance(exc, Exception):
            return self._session.call_failed(exc)
        self._session.call_done()
        raise exc

    # -- output -----------------------------------------------------------------------------

    def _write_pending(self) -> bool:
        """Write the output as an inline turn does, if no other write is under way;
        whether :meth:`_write_out` has something to do (and must be awaited)."""
        session = self._session
        if self._writing or session.in_flight or self._transport.buffered:
            return True
        return bool(session.out) and not self._write_now()

    async def _write_out(self) -> None:
        """Send what the session queued (and what the transport holds), in one write."""
        while self._writing:
            await self._wait_change()
        session = self._session
        transport = self._transport
        if session.state is _CLOSED:
            return  # closed: nothing more goes out
        data = session.take_output()
        if not data and not transport.buffered:
            if session.in_flight:  # what an inline turn left has gone out meanwhile
                session.in_flight = 0
                session.flushed()
            return
        self._writing = True
        try:
            if not self._send(data) and not await self._drain():
                return
        except _WRITE_ERRORS as exc:
            session.fail(socket_error(exc))
            self.wake()  # (its task, or a parked connection, ends it)
            return
        finally:
            self._writing = False
            session.in_flight = 0
            self._changed()
            if session.out:  # queued from outside (a broadcast) while this wrote
                self.flush_soon()
        if session.wants_flushed and session.flushed():
            self.wake()

    async def _drain(self) -> bool:
        """Wait until the transport took everything; ``False`` if a time limit cut it short."""
        if self._watchdog is None:  # nothing but close() can end it early: no scope of its own
            await self._transport.drain()
            return True
        drain = self._pool.cancel_scope()
        with drain:  # a time limit cancels it (time_out)
            self._drain_scope = drain
            try:
                await self._transport.drain()
            finally:
                self._drain_scope = None
        return not drain.cancelled_caught

    def flush_soon(self) -> None:
        """Send what is queued from a helper task, unless a write is under way or scheduled."""
        if self._session.out and not self._writing and not self._flush_scheduled:
            self._flush_scheduled = True
            self._start_helper(self._flush)

    async def _flush(self) -> None:
        self._flush_scheduled = False
        await self._write_out()

    async def wait_low(self) -> None:
        """Wait until the pending output is at or below the low mark (``send``'s backpressure).

        Raises:
            ConnectionClosed: the connection closed meanwhile.
        """
        session = self._session
        while session.out_size + session.in_flight > session.low:
            if session.state is _CLOSED:
                raise ConnectionClosed(f"connection #{self._conn.id} closed while sending")
            await self._write_out()

    # -- time limits (see tcpkit._watchdog) ------------------------------------------------------

    def __repr__(self) -> str:
        return self._session.log_prefix

    def progress(self) -> tuple[int, int, int, int]:
        """What the watchdog compares: bytes read, bytes delivered, messages decoded,
        and output not delivered yet (queued, in the transport, in the kernel).

        Delivered: handed to the OS, less what waits in the kernel's send
        queue (so a download that the client reads from a full queue is
        progress too). One look at the kernel's queue serves both.
        """
        session = self._session
        counts = session.counts
        held = self._transport.buffered + unsent_bytes(self._raw_socket)
        return counts.bytes_in, counts.bytes_out - held, counts.messages_in, session.out_size + held

    @property
    def message_in_progress(self) -> bool:
        return self._session.decoder.in_progress

    @property
    def reading(self) -> bool:
        """Whether the task waits for input (else the server is not reading: a handler
        runs, output drains, input is paused)."""
        return self._reading

    @property
    def handler_running(self) -> bool:
        """Whether an ``async def`` handler is running (its connection is not idle)."""
        return self._session.call is not None

    def time_out(self, exc: ConnectionTimeout, *, stuck: bool) -> None:
        """A time limit passed: report ``exc`` to on_error and close this connection.

        With output ``stuck`` (the client does not read), it closes at once
        (a waiting ``send`` raises ``ConnectionClosed``); else gracefully.
        """
        session = self._session
        reason = _TIMEOUT_REASONS[type(exc)]
        if stuck or isinstance(exc, SendTimeout):
            session.fail(exc, reason)
            if self._drain_scope is not None:
                self._drain_scope.cancel()
        else:
            session.time_out(exc, reason)
        self.wake()

    def end_of_life(self, seconds: float) -> None:
        """``max_lifetime`` reached: shut down gracefully (logged, no error)."""
        logger.info("%s: max_lifetime (%g s) reached, shutting down", self, seconds)
        self._session.shutdown("max-lifetime")
        self.wake()

    # -- waking and helpers --------------------------------------------------------------------

    def wake(self) -> None:
        """Something for the task to do (an event, a resume, a shutdown): wake it if it waits.

        (Not from a handler's turn: what the turn returns says what is next.)
        """
        if self._reading and not self._session.turning:
            self._transport.interrupt_receive()
        self._changed()

    def abort(self) -> None:
        """``close()``: cancel the current phase and every helper (output is discarded)."""
        self._aborted = True
        if self._scope is not None:
            self._scope.cancel()
        self._unpark()
        for scope in self._helpers:
            scope.cancel()
        self._changed()

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

    def _start_helper(self, func: Callable[[], Awaitable[None]]) -> None:
        """Run ``func()`` in a task of its own in the server's pool, which ``close()`` cancels."""
        scope = self._pool.cancel_scope()
        self._helpers += (scope,)
        self._pool.start_soon(self._run_helper, scope, func)

    async def _run_helper(self, scope: CancelScope, func: Callable[[], Awaitable[None]]) -> None:
        _current.set(weakref.ref(self._conn))
        try:
            if self._session.state is _CLOSED:
                scope.cancel()
            with scope:
                await func()
        finally:
            self._helpers = tuple(s for s in self._helpers if s is not scope)
            self._changed()

    # -- STARTTLS ------------------------------------------------------------------------------

    async def start_tls(self, ssl_context: ssl.SSLContext, handshake_timeout: float) -> None:
        """Flush, then upgrade the transport to TLS in place (see ``Connection.start_tls``)."""
        from anyio.streams.tls import TLSStream

        from .streams import ReplayStream

        if self._stepping:  # in the data callback, while the task waits in receive:
            await anyio.lowlevel.checkpoint()  # go on in the task, out of its receive
        await self._write_out()
        while self._writing:
            await self._wait_change()
        pending = self._session.decoder.take_pending()
        old = self._transport
        self._stop_inline()
        old.clear_interrupt()  # (no receive waits: the handshake's must not raise)
        stream = ReplayStream(old.stream, pending) if pending else old.stream
        self._writing = True  # no output on the plain stream during the handshake
        try:
            with anyio.fail_after(handshake_timeout):
                tls = await TLSStream.wrap(
                    stream, server_side=True, ssl_context=ssl_context, standard_compatible=False
                )
        finally:
            self._writing = False
            self._changed()
        self._transport = as_transport(tls)

    # -- the end ---------------------------------------------------------------------------------

    async def _wind_down(self) -> None:
        """The graceful end, unless the connection is closed already: the rest out, linger."""
        session = self._session
        if session.state is not _CLOSED:
            session.shutdown()
            await self._settle()
            await self._linger()

    def _end_now(self) -> bool:
        """The end (:meth:`_wind_down`, :meth:`_close_up`) right here, if none of it waits.

        For a parked connection (its ``on_input`` a plain ``def``), run
        outside its task; and by a task, before it awaits the end (no
        coroutine per step). ``False`` if a step needs the task: a linger (the
        client has not ended its stream), output the kernel did not take, an
        ``async def`` handler, a socket error to report, a helper still
        running, a transport that cannot close without waiting. The task then
        goes on from there: the steps done here are done once. ``on_disconnect``
        and the server's count follow once the socket is closed (on asyncio
        at the event loop's next turn).
        """
        session = self._session
        h = session.handlers.on_disconnect
        if self._helpers or session.fatal is not None or (h is not None and h.is_async):
            return False
        if not self._wind_down_now():
            return False
        self._stop_inline()
        session.close()
        if self._watchdog is not None:
            self._watchdog.remove(self)
        return self._transport.close_nowait(self._closed_now)  # (parkable: it can)

    def _closed_now(self) -> None:
        """The end without a task, once the socket is closed: on_disconnect, the server.

        (In the connection's context, where :meth:`_end_now` ran: ``close_nowait`` says so.)
        """
        h = self._session.handlers.on_disconnect
        if h is None or self._disconnect_now(h):
            self._on_end()

    def _wind_down_now(self) -> bool:
        """:meth:`_wind_down` if it needs no waiting (``False``: it does, for the task)."""
        session = self._session
        if session.state is _CLOSED:
            return True
        if session.state is not _CLOSING:  # (the client's end of stream: it is)
            session.shutdown()
        if session.advance() is _CALL:  # (an error to report: on_error)
            return False
        if session.out and not self._write_now():
            return False
        return session.eof or not self._settings.linger  # (a linger waits for the client)

    def _disconnect_now(self, h: Handler) -> bool:
        """A plain ``def`` on_disconnect, here; ``False`` if it returned an awaitable.

        That is awaited in a task, as the task's end would (shielded, for at
        most 5 s), which then ends the connection.
        """
        try:
            result = h.func(self._conn)
        except Exception as exc:
            self._disconnect_failed(exc)
            return True
        if not inspect.isawaitable(result):
            return True
        self._pool.start_soon(self._await_disconnect, result)
        return False

    async def _await_disconnect(self, result: Awaitable[Any]) -> None:
        try:
            with anyio.CancelScope(shield=True), anyio.move_on_after(5):
                try:
                    await result
                except Exception as exc:
                    self._disconnect_failed(exc)
        finally:
            self._on_end()

    def _disconnect_failed(self, exc: Exception) -> None:
        logger.exception("%s: on_disconnect raised", self._session.log_prefix, exc_info=exc)
        self._observer.unhandled_error(exc, "on_disconnect", self._conn)

    async def _finish(self) -> None:
        self._session.close()
        if self._helpers:  # still running (cancelled, or started during the linger)
            with anyio.CancelScope(shield=True):
                await self._stop_helpers()
        await self._end()

    async def _settle(self) -> None:
        """Run what is left (error reports), send the rest of the output."""
        await self._turns(self._session.advance())  # (not open: it ends with the write)

    async def _linger(self) -> None:
        """Half-close, then drop client input until EOF or a quiet spell (bounded).

        Closing a socket that still has unread input makes the kernel send a
        reset, which can destroy our last bytes before the client reads them.
        """
        settings = self._settings
        session = self._session
        if session.state is _CLOSED or session.eof or not settings.linger:
            return
        transport = self._transport
        try:
            await transport.send_eof()
        except Exception:  # best effort: TLS streams cannot half-close
            return
        deadline = anyio.current_time() + settings.linger
        while True:
            quiet = min(settings.linger_quiet, deadline - anyio.current_time())
            if quiet <= 0:
                return
            with anyio.move_on_after(quiet):
                try:
                    await transport.receive(settings.read_size)
                except ReceiveInterrupted:
                    pass
                except (anyio.EndOfStream, *_SOCKET_ERRORS):
                    return
                continue
            return  # nothing arrived for a while: the client is not sending

    async def _stop_helpers(self) -> None:
        for scope in self._helpers:
            scope.cancel()
        while self._helpers:
            await self._wait_change()

    async def _end(self) -> None:
        """Report a socket error, close the transport, call on_disconnect.

        Shielded from cancellation when there is a handler to run (a server
        that is being cancelled still calls them, for at most 5 s each).
        """
        session = self._session
        h = session.handlers.on_disconnect
        fatal = session.fatal
        if h is None and fatal is None:  # no shield scope to pay for
            await self._close_transport()
            return
        with anyio.CancelScope(shield=True):
            if fatal is not None:
                session.fatal = None
                session.report_fatal(fatal)  # (socket_error made it say what happened)
                with anyio.move_on_after(5):
                    await self._turns(session.advance())  # on_error (nothing can be sent)
            await self._close_transport()
            if h is not None:
                with anyio.move_on_after(5):
                    try:
                        await call(h, self._conn)
                    except Exception as exc:
                        self._disconnect_failed(exc)

    async def _close_transport(self) -> None:
        try:
            # (aclose waits until the socket is closed: the connection counts until then)
            await self._transport.aclose()
        except _SOCKET_ERRORS:
            pass


_Started: TypeAlias = tuple[Coroutine[Any, Any, Any], Any, "BaseException | None"]
"""A handler's coroutine the data callback started, what it waits on, what was thrown since."""


@types.coroutine
def _resume(
    coro: Coroutine[Any, Any, Any], yielded: Any, thrown: BaseException | None
) -> Generator[Any, Any, Any]:
    """Go on with ``coro``, started elsewhere, as ``await`` would: it waits on ``yielded``.

    ``thrown`` (if any) came while it waited, and is thrown into it first.
    """
    step: Callable[[Any], Any] | None = None if thrown is None else coro.throw
    value: Any = thrown
    while True:
        if step is not None:
            try:
                yielded = step(value)
            except StopIteration as done:
                return done.value
        try:
            value = yield yielded
        except GeneratorExit:
            coro.close()
            raise
        except BaseException as exc:  # cancellation and the like, thrown in: pass it on
            step, value = coro.throw, exc
        else:
            step = coro.send
