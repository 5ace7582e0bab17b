"""A faster socket stream and listener for the asyncio backend (and uvloop).

anyio's asyncio ``SocketStream`` pays, per ``receive``, a checkpoint (a full
event-loop turn) or a ``resume_reading``/``pause_reading`` pair (two
``epoll_ctl`` calls), and per ``send`` another checkpoint; it also looks up
the running loop several times per call (a ``getpid`` system call each time on
CPython 3.11), and its transport reads with ``recv(256 KiB)``, an allocation
past glibc's mmap threshold (``mmap``/``mremap``/``munmap`` per read).
:class:`AsyncioSocketStream` keeps anyio's :class:`anyio.abc.SocketStream`
interface on an asyncio protocol instead (a ``BufferedProtocol`` on asyncio's
selector loop, a plain one on uvloop, which reads into a buffer of its own):

* ``receive`` returns buffered bytes at once, joining the chunks that arrived
  since the last call (up to ``max_bytes``). It waits only when nothing is
  buffered; that wait is a cancellation point, and a cancelled wait loses
  nothing (bytes stay in the buffer). Reading stays registered with the loop
  and is paused only when the buffer passes a high mark (flow control); on
  the selector loop the transport reads into one buffer shared by the
  listener's connections.
* ``send`` writes to the transport and awaits only while the transport's
  buffer is not empty. The transport's write-buffer limits are 0, so a
  ``send`` that returned has handed every byte to the OS: graceful-close code
  can rely on it.
* So that one busy connection cannot starve the others, after :data:`STREAK`
  operations in a row that did not wait, the next one first yields to the
  loop (before any byte moves, so it is safe to cancel there).
* ``aclose`` closes the transport and waits until the socket is closed. Bytes
  of completed sends are already in the kernel and are delivered; only the
  unsent rest of a ``send`` that did not complete (cancelled, or failing) is
  dropped, as with anyio.

:class:`AsyncioSocketListener` wraps an anyio asyncio listener: ``accept``
takes connections straight from the listening socket (waiting, a
cancellation point, only when none is pending; the reader registration is
kept while accepts keep coming) and, on asyncio's own selector loop, builds
the transport without an extra loop turn. Elsewhere (uvloop) a transport is
made only by ``connect_accepted_socket``, which waits one loop turn for
``connection_made``: ``accept`` then takes every pending connection (up to
:data:`_ACCEPT_BATCH`) and starts them all before that wait, so the turn is
shared instead of paid per connection. :mod:`tcpkit._listeners` picks the
fast listener of the running backend.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import socket
import types
from collections import deque
from collections.abc import Callable, Coroutine, Generator, Mapping
from typing import Any, cast

import anyio
import anyio.abc

from . import _asyncio_private
from ._asyncio_private import can_run_as_task, socket_transport_maker
from ._busy_poll import BusyPoller
from ._socket import FastListener, convert_address, socket_attributes
from ._transport import ReceiveInterrupted, Transport

__all__ = ["STREAK", "AsyncioSocketListener", "AsyncioSocketStream"]

_ACCEPT_BATCH = 16
"""Connections accepted at once where making a transport waits a loop turn (uvloop)."""
_READ_HIGH = 256 * 1024
"""Pause reading from the socket once this many received bytes are not yet consumed."""
_READ_LOW = 64 * 1024
"""Resume reading once the unconsumed bytes drop to this."""
_READ_SIZE = 256 * 1024
"""The most one read from the socket takes (asyncio's own default)."""
STREAK = 32
"""Operations in a row that did not wait (receives and sends of a stream, accepts
of a listener), after which one yields to the event loop: a busy connection, or
a connect flood, cannot starve the others."""


def _wake(waiter: asyncio.Future[None] | None) -> None:
    if waiter is not None and not waiter.done():
        waiter.set_result(None)


class _StreamProtocol(asyncio.Protocol):
    """Buffers input and signals readiness; holds no anyio state.

    This plain protocol is for uvloop, which reads into a buffer of its own
    and hands over ``bytes``; asyncio's selector loop gets
    :class:`_BufferedStreamProtocol`.
    """

    __slots__ = (
        "buffer",
        "buffered",
        "eof",
        "exception",
        "interrupted",
        "lost",
        "lost_waiter",
        "on_data",
        "on_lost",
        "on_wake",
        "poll",
        "read_paused",
        "read_waiter",
        "transport",
        "write_paused",
        "write_waiters",
    )

    def __init__(self, poll: Callable[[], None] | None = None) -> None:
        self.transport: asyncio.Transport | None = None
        self.poll = poll  # called on every read (busy polling, see tcpkit._busy_poll)
        self.buffer: list[bytes] | None = None  # bytes for receive (None: none, no list)
        self.buffered = 0
        self.eof = False
        self.lost = False
        self.exception: BaseException | None = None
        self.read_paused = False
        self.write_paused = False
        self.read_waiter: asyncio.Future[None] | None = None
        self.write_waiters: tuple[asyncio.Future[None], ...] = ()  # (no list while idle)
        self.lost_waiter: asyncio.Future[None] | None = None
        # Called once the socket is closed, in its context (see close_nowait).
        self.on_lost: tuple[Callable[[], None], contextvars.Context] | None = None
        self.on_data: Callable[[bytes], bool] | None = None
        self.on_wake: Callable[[], None] | None = None  # for a reader that does not wait (parked)
        self.interrupted = False

    # asyncio.Protocol --------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        # Limits of 0: pause_writing as soon as anything stays in the transport's
        # buffer, resume_writing once it is empty again.
        self.transport.set_write_buffer_limits(0, 0)

    def data_received(self, data: bytes) -> None:
        poll = self.poll
        if poll is not None:
            poll()
        on_data = self.on_data
        if on_data is not None and not self.buffer and on_data(data):
            return  # handled right here, with no task switch
        if self.buffer is None:
            self.buffer = [data]
        else:
            self.buffer.append(data)
        self.buffered += len(data)
        self.wake_reader()
        if self.buffered > _READ_HIGH and not self.read_paused and self.transport is not None:
            self.read_paused = True
            self.transport.pause_reading()

    def eof_received(self) -> bool:
        self.eof = True
        self.wake_reader()
        return True  # stay open: we may still write (half-close)

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        self.wake_writers()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if exc is not None:
            self.exception = exc
        self.write_paused = False
        self.wake_reader()
        self.wake_writers()
        waiter, self.lost_waiter = self.lost_waiter, None
        _wake(waiter)
        on_lost = self.on_lost
        if on_lost is not None:
            self.on_lost = None
            closed, context = on_lost
            # (the transport closes the socket right after this call returns)
            asyncio.get_running_loop().call_soon(closed, context=context)

    # helpers -------------------------------------------------------------------

    def interrupt(self) -> None:
        """Make the waiting (or next) ``receive`` raise ``ReceiveInterrupted``."""
        self.interrupted = True
        self.wake_reader()

    def wake_reader(self) -> None:
        """Wake the waiting ``receive``, or call the wake callback if none waits."""
        waiter = self.read_waiter
        if waiter is not None:
            self.read_waiter = None
            _wake(waiter)
        elif self.on_wake is not None:
            on_wake, self.on_wake = self.on_wake, None
            on_wake()

    @property
    def ready(self) -> bool:
        """Whether a ``receive`` would return (or raise) without waiting."""
        return bool(self.buffer) or self.interrupted or self.eof or self.lost

    def wake_writers(self) -> None:
        waiters = self.write_waiters
        if waiters:
            self.write_waiters = ()
            for waiter in waiters:
                _wake(waiter)

    def take(self, max_bytes: int) -> bytes:
        """Remove and return up to ``max_bytes`` buffered bytes (the buffer is not empty)."""
        buffer = self.buffer
        assert buffer is not None
        if self.buffered <= max_bytes:
            chunk = buffer[0] if len(buffer) == 1 else b"".join(buffer)
            self.buffer = None
        else:  # more than asked for: split (rare; bounded by the read high mark)
            data = b"".join(buffer)
            chunk = data[:max_bytes]
            buffer[:] = [data[max_bytes:]]
        self.buffered -= len(chunk)
        if self.read_paused and self.buffered <= _READ_LOW and not self.lost:
            self.read_paused = False
            assert self.transport is not None
            self.transport.resume_reading()
        return chunk


class _BufferedStreamProtocol(_StreamProtocol, asyncio.BufferedProtocol):
    """:class:`_StreamProtocol` reading into a buffer shared by a listener's connections.

    For asyncio's selector loop: the transport reads into ``read_buffer`` (it
    is only used between ``get_buffer`` and ``buffer_updated``,
    synchronously), and the bytes read are copied out. Reading with plain
    ``recv(256 KiB)`` instead allocates 256 KiB per read, past glibc's mmap
    threshold: an ``mmap``/``mremap``/``munmap`` per message.
    """

    __slots__ = ("read_buffer",)

    def __init__(self, read_buffer: memoryview, poll: Callable[[], None] | None = None) -> None:
        super().__init__(poll)
        self.read_buffer = read_buffer

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.read_buffer

    def buffer_updated(self, nbytes: int) -> None:
        self.data_received(bytes(self.read_buffer[:nbytes]))


class AsyncioSocketStream(anyio.abc.SocketStream, Transport):
    """An :class:`anyio.abc.SocketStream` on an asyncio transport (see the module doc)."""

    def __init__(
        self,
        transport: asyncio.Transport,
        protocol: _StreamProtocol,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self._transport = transport
        self._protocol = protocol
        self._loop = loop
        self._closed = False
        self._streak = 0  # receives and sends in a row that did not wait
        self._attributes: Mapping[Any, Callable[[], Any]] | None = None

    # receiving -----------------------------------------------------------------

    async def receive(self, max_bytes: int = 65536) -> bytes:
        """Return buffered bytes at once; wait (a cancellation point) only if there are none.

        Raises:
            ValueError: ``max_bytes`` is below 1.
            EndOfStream: the peer half-closed and every byte has been received.
            ClosedResourceError: this stream was closed.
            BrokenResourceError: the connection failed.
            BusyResourceError: another task is already waiting in ``receive``.
        """
        if max_bytes < 1:
            raise ValueError("max_bytes must be a positive integer")
        if self._closed:
            raise anyio.ClosedResourceError
        protocol = self._protocol
        self._streak += 1
        if self._streak > STREAK:
            self._streak = 0
            await asyncio.sleep(0)  # fairness; nothing is consumed yet, so safe to cancel
        while not protocol.buffer:
            self._streak = 0
            waiter = self._read_waiter()
            try:
                await waiter
            finally:
                if protocol.read_waiter is waiter:
                    protocol.read_waiter = None
        return protocol.take(max_bytes)

    def receive_nowait(self, max_bytes: int = 65536) -> bytes:
        """See :meth:`tcpkit._transport.Transport.receive_nowait`."""
        protocol = self._protocol
        if not protocol.interrupted and not self._closed and protocol.buffer:
            return protocol.take(max_bytes)
        self._raise_ended()
        raise anyio.WouldBlock

    def _raise_ended(self) -> None:
        """Raise what ends a wait for input (an interrupt, the end, a failure), if anything."""
        protocol = self._protocol
        if protocol.interrupted:
            protocol.interrupted = False
            raise ReceiveInterrupted
        if self._closed:
            raise anyio.ClosedResourceError
        if protocol.eof or protocol.lost:
            if protocol.exception is not None and not protocol.eof:
                raise anyio.BrokenResourceError from protocol.exception
            raise anyio.EndOfStream

    def _read_waiter(self) -> asyncio.Future[None]:
        """A future the protocol completes when bytes come; raise what ends the wait instead."""
        protocol = self._protocol
        self._raise_ended()
        if protocol.read_waiter is not None:
            raise anyio.BusyResourceError("reading from")
        waiter: asyncio.Future[None] = self._loop.create_future()
        protocol.read_waiter = waiter
        return waiter

    # handling input in the protocol callback ------------------------------------

    def set_data_callback(
        self, callback: Callable[[bytes], bool] | None, *, as_task: bool = False
    ) -> bool:
        """Offer arriving bytes to ``callback`` first, in the protocol's ``data_received``.

        See :meth:`tcpkit._transport.Transport.set_data_callback`; always taken
        here. With ``as_task``, it runs as the task that set it, where asyncio
        allows (:func:`tcpkit._asyncio_private.as_task`).
        """
        if callback is not None and as_task:
            callback = _asyncio_private.as_task(callback) or callback
        self._protocol.on_data = callback
        return True

    @property
    def callback_runs_as_task(self) -> bool:
        return can_run_as_task()

    @property
    def parkable(self) -> bool:
        return True

    def set_wake_callback(self, callback: Callable[[], None] | None) -> bool:
        protocol = self._protocol
        if callback is not None and (self._closed or protocol.ready):
            return False
        protocol.on_wake = callback
        return True

    def interrupt_receive(self) -> None:
        """Make the waiting (or next) ``receive`` raise ``ReceiveInterrupted``."""
        self._protocol.interrupt()

    def clear_interrupt(self) -> None:
        self._protocol.interrupted = False

    def write(self, data: bytes) -> bool:
        """Hand ``data`` to the transport without waiting.

        Returns ``True`` if every byte went to the OS, ``False`` if some are
        still in the transport's buffer (:meth:`drain` waits for them).

        Raises:
            BrokenResourceError: the connection is closed or failed.
        """
        transport = self._transport
        if self._closed or self._protocol.lost or transport.is_closing():
            raise anyio.BrokenResourceError from self._protocol.exception
        try:
            transport.write(data)
        except RuntimeError as exc:  # uvloop: the transport is closed
            raise anyio.BrokenResourceError from exc
        if transport.is_closing():  # the write failed
            raise anyio.BrokenResourceError from self._protocol.exception
        return not self._protocol.write_paused

    @property
    def buffered(self) -> int:
        """Bytes in the transport's buffer, not yet handed to the OS."""
        return self._transport.get_write_buffer_size()

    async def drain(self) -> None:
        """Wait until the transport's buffer is empty.

        Raises:
            ClosedResourceError: this stream was closed.
            BrokenResourceError: the connection failed (the rest is lost).
        """
        protocol = self._protocol
        while protocol.write_paused:
            waiter = self._loop.create_future()
            protocol.write_waiters += (waiter,)
            await waiter
        if self._closed:
            raise anyio.ClosedResourceError
        if protocol.lost or self._transport.is_closing():
            # The write failed (asyncio closes the transport and reports it through
            # connection_lost) or the connection died while bytes were queued.
            raise anyio.BrokenResourceError from protocol.exception

    @property
    def stream(self) -> anyio.abc.ByteStream:
        return self

    # sending -------------------------------------------------------------------

    async def send(self, item: bytes) -> None:
        """Hand ``item`` to the transport; wait only while its buffer is not empty.

        When this returns, every byte of ``item`` (and of earlier sends) has
        been handed to the OS.

        Raises:
            ClosedResourceError: this stream was closed.
            BrokenResourceError: the connection failed (the data may be lost).
        """
        protocol = self._protocol
        self._streak += 1
        if self._streak > STREAK:
            self._streak = 0
            await asyncio.sleep(0)  # fairness; nothing is written yet, so safe to cancel
        if self._closed:
            raise anyio.ClosedResourceError
        self.write(item)
        if protocol.write_paused:
            self._streak = 0
            await self.drain()

    async def send_eof(self) -> None:
        """Half-close: the peer reads EOF once the bytes already sent have gone out.

        Raises:
            ClosedResourceError: this stream was closed.
        """
        if self._closed:
            raise anyio.ClosedResourceError
        if self._protocol.lost or self._transport.is_closing():
            return
        try:
            self._transport.write_eof()
        except (OSError, RuntimeError):
            pass

    async def aclose(self) -> None:
        """Close the connection and wait until the socket is closed.

        Bytes of completed sends are in the kernel already and still reach
        the peer. Never raises for a connection that already failed.
        """
        protocol = self._protocol
        self._close()
        if not protocol.lost:
            # The transport closes the socket on the next loop turn: wait for it,
            # so that a closed stream holds no file descriptor.
            waiter = protocol.lost_waiter
            if waiter is None or waiter.done():  # done: an earlier aclose was cancelled
                waiter = protocol.lost_waiter = self._loop.create_future()
            await waiter

    def close_nowait(self, closed: Callable[[], None]) -> bool:
        """Close the connection; ``closed`` is called once the socket is closed.

        (The transport closes the socket at the event loop's next turn.)
        """
        self._close()
        protocol = self._protocol
        if protocol.lost:  # (maybe in connection_lost, before the socket is closed)
            self._loop.call_soon(closed)  # (in a copy of this context)
        else:
            protocol.on_lost = (closed, contextvars.copy_context())
        return True

    def _close(self) -> None:
        if not self._closed:
            self._closed = True
            transport = self._transport
            if transport.get_write_buffer_size():
                transport.abort()  # only the rest of an unfinished send is left
            else:
                transport.close()
            self._protocol.wake_reader()
            self._protocol.wake_writers()

    # attributes ----------------------------------------------------------------

    @property
    def _raw_socket(self) -> socket.socket:
        return self._transport.get_extra_info("socket")  # type: ignore[no-any-return]

    @property
    def extra_attributes(self) -> Mapping[Any, Callable[[], Any]]:
        attributes = self._attributes
        if attributes is None:
            attributes = self._attributes = self._make_attributes()
        return attributes

    def _make_attributes(self) -> Mapping[Any, Callable[[], Any]]:
        transport = self._transport
        raw = transport.get_extra_info("socket")
        return socket_attributes(
            raw,
            _address(transport, "sockname"),
            _address(transport, "peername"),
        )


def _address(transport: asyncio.Transport, name: str) -> Any:
    """The transport's ``sockname`` or ``peername`` (anyio's form), or ``None``.

    uvloop reads both when the connection is made and forgets its socket once
    the transport closes; an address it could not read then (a client that
    reset while waiting in the accept queue) makes ``get_extra_info`` raise
    ``AttributeError`` after the close.
    """
    try:
        return convert_address(transport.get_extra_info(name))
    except AttributeError:
        return None


class AsyncioSocketListener(FastListener):
    """Accepts :class:`AsyncioSocketStream` connections from an anyio asyncio listener.

    Accept errors are those of ``socket.accept`` (``OSError``: EMFILE and the
    like); a closed listener raises ``ClosedResourceError``.
    """

    def __init__(self, listener: anyio.abc.Listener[Any], poller: BusyPoller | None = None) -> None:
        super().__init__(listener, poller.kick if poller is not None else None)
        self._loop = asyncio.get_running_loop()
        self._waiter: asyncio.Future[None] | None = None
        self._reading = False  # the listening socket is registered with the loop
        # asyncio's own selector loop can build a transport synchronously (no
        # await, no extra loop turn); uvloop only through connect_accepted_socket.
        self._make_transport = socket_transport_maker(self._loop)
        # Shared by its connections' protocols (selector loop only; uvloop reads into its own).
        self._read_buffer = memoryview(bytearray(_READ_SIZE if self._make_transport else 0))
        # Elsewhere: connect_accepted_socket calls started, each waiting for connection_made.
        self._attaching: deque[tuple[Coroutine[Any, Any, Any], Any]] = deque()

    def _readable(self) -> None:
        waiter = self._waiter
        if waiter is None:
            # Nobody is accepting (paused at max_connections): stop watching, or a
            # level-triggered selector would call us on every loop turn.
            self._stop_reading()
            return
        self._waiter = None
        if not waiter.done():
            waiter.set_result(None)

    def _stop_reading(self) -> None:
        if self._reading:
            self._reading = False
            self._loop.remove_reader(self._sock)

    async def accept(self) -> anyio.abc.SocketStream:
        """Accept one connection; waits (a cancellation point) only when none is pending.

        Raises:
            ClosedResourceError: the listener is closed.
            BusyResourceError: another task is already accepting.
            OSError: ``accept`` failed (e.g. EMFILE); the listener stays usable.
        """
        if self._attaching:  # accepted with an earlier one
            return await self._attached(*self._attaching.popleft())
        self._streak += 1
        if self._streak > STREAK:
            # Connections kept coming without a wait: let other tasks run (a
            # checkpoint), as a connect flood must not starve the connections.
            self._streak = 0
            await asyncio.sleep(0)
        client = await self._accept_socket()
        make = self._make_transport
        if make is None:
            return await self._attach_batch(client)
        try:
            self._configure(client)
            # connection_made runs first thing on the next loop turn, before
            # any task can use the stream.
            protocol = _BufferedStreamProtocol(self._read_buffer, self._poll)
            transport = make(client, protocol)
            transport.set_write_buffer_limits(0, 0)
            if not self.options.nodelay and self._tcp:  # (asyncio sets it if proto is TCP)
                self.options.apply_after_transport(client)
        except BaseException:
            client.close()
            raise
        return AsyncioSocketStream(transport, protocol, self._loop)

    async def _accept_socket(self) -> socket.socket:
        """The next connection's socket; waits (watched by the loop) while none is pending."""
        sock = self._sock
        while True:
            if self._closed:
                raise anyio.ClosedResourceError
            try:
                client, _ = sock.accept()
                return client
            except BlockingIOError:
                self._streak = 0
            except OSError:
                if self._closed or sock.fileno() < 0:
                    raise anyio.ClosedResourceError from None
                raise
            if self._waiter is not None:
                raise anyio.BusyResourceError("accepting connections from")
            if not self._reading:
                self._loop.add_reader(sock, self._readable)
                self._reading = True
            waiter = self._waiter = self._loop.create_future()
            try:
                await waiter
            finally:
                if self._waiter is waiter:
                    self._waiter = None

    async def _attach_batch(self, client: socket.socket) -> AsyncioSocketStream:
        """Where a transport takes a loop turn: start ``client`` and every other pending one."""
        self._start_attach(client)
        while len(self._attaching) < _ACCEPT_BATCH:  # the others pending share the wait
            try:
                more, _ = self._sock.accept()
                self._start_attach(more)
            except Exception:  # none pending, or an error that the next accept reports
                break
        return await self._attached(*self._attaching.popleft())

    def _start_attach(self, client: socket.socket) -> None:
        """Run ``connect_accepted_socket`` for ``client`` up to its wait for ``connection_made``."""
        poll = self._poll
        try:
            self._configure(client)
            attach = self._loop.connect_accepted_socket(lambda: _StreamProtocol(poll), client)
        except BaseException:
            client.close()
            raise
        try:
            waiting_for = attach.send(None)
        except StopIteration as done:  # no wait needed
            waiting_for = _Done(done.value)
        except BaseException:
            with contextlib.suppress(OSError):  # (if the loop has not closed it already)
                client.close()
            raise
        self._attaching.append((attach, waiting_for))

    async def _attached(
        self, attach: Coroutine[Any, Any, Any], waiting_for: Any
    ) -> AsyncioSocketStream:
        """Finish ``attach`` (see :meth:`_start_attach`): the stream of its transport."""
        if isinstance(waiting_for, _Done):
            transport, protocol = waiting_for.value
        else:
            transport, protocol = await _finish(attach, waiting_for)
        if not self.options.nodelay and self._tcp:  # (uvloop sets TCP_NODELAY on every transport)
            self.options.apply_after_transport(transport.get_extra_info("socket"))
        return AsyncioSocketStream(transport, protocol, self._loop)

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            while self._attaching:  # accepted, never handed out: close their transports
                self._attaching.popleft()[0].close()
            self._stop_reading()  # before the socket closes: no stale selector entry
            waiter = self._waiter
            if waiter is not None:
                self._waiter = None
                if not waiter.done():
                    waiter.set_result(None)
        await self._listener.aclose()


class _Done:
    """The result of a coroutine that finished without waiting."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


@types.coroutine
def _finish(coro: Coroutine[Any, Any, Any], waiting_for: Any) -> Generator[Any, Any, Any]:
    """Go on with ``coro``, which yielded ``waiting_for``, as ``await`` would.

    A future that is done by now is not waited for (no loop turn): that is
    the point of starting several before waiting for the first.
    """
    while True:
        sent: Any = None
        error: BaseException | None = None
        if not (isinstance(waiting_for, asyncio.Future) and waiting_for.done()):
            try:
                sent = yield waiting_for
            except BaseException as exc:  # cancellation and the like: pass it on
                error = exc
        try:
            waiting_for = coro.send(sent) if error is None else coro.throw(error)
        except StopIteration as done:
            return done.value
