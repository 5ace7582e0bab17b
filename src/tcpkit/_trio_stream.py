"""A faster socket stream and listener for the trio backend.

anyio's trio ``SocketStream`` goes through trio's socket wrapper, whose every
successful ``recv``/``send`` is a full checkpoint (a trip through the
scheduler), behind anyio's resource guards. :class:`TrioSocketStream` calls
the non-blocking socket directly and waits with
``trio.lowlevel.wait_readable``/``wait_writable`` only when the socket is not
ready; those waits are the cancellation points, and a cancelled wait loses
nothing (unread bytes stay in the kernel). So that one busy connection cannot
starve the others, every :data:`STREAK` operations in a row that did not wait,
one checkpoint is taken (before any byte moves, so it is safe to cancel).

``send`` returns once every byte is in the kernel's send buffer: the graceful
close code relies on it. :class:`TrioSocketListener` accepts from the
listening socket the same way and returns :class:`TrioSocketStream` objects.

The inline mode (``Transport.set_data_callback``, as on asyncio): with
a data callback set, a stream whose task waits in ``receive`` is watched by
the listener's :class:`Reactor` instead of by trio. The reactor is one task
with an epoll instance of its own (in trio's, as one file descriptor): per
wake-up it reads every ready connection and hands the bytes to its callback
right there. A request then costs no task switch and no ``epoll_ctl`` (trio
re-arms a file descriptor at every wait), as a callback server on asyncio.
A stream with no task at all waiting for it (a parked connection:
``Transport.set_wake_callback``) is watched the same way; the wake callback
starts its task when the callback does not take the bytes, or at the end.

Without a data callback (an ``async def`` ``on_input``, whose coroutine must
run in the connection's task), a waiting ``receive`` is woken by the reactor
too, with the bytes it read: a wake-up that serves many sockets costs one
``epoll_wait`` for all, where trio re-arms each socket. A wake-up that serves
one socket alone costs a task switch and two system calls more than trio's
own wait, so that task's next :data:`LONE_WAITS` waits are trio's, then it
tries the reactor again (``docs/performance.md`` has the measurements).
"""

from __future__ import annotations

import select
import socket
from collections.abc import Callable, Mapping
from typing import Any

import anyio
import anyio.abc
import trio

from ._busy_poll import BusyPoller
from ._socket import FastListener, convert_address, socket_attributes
from ._transport import ReceiveInterrupted, Transport

__all__ = ["STREAK", "Reactor", "TrioSocketListener", "TrioSocketStream"]

STREAK = 32
"""Operations in a row that did not wait, after which one checkpoint is taken."""
_READ_SIZE = 65536
"""What the reactor reads from a socket at once."""
_MAX_EVENTS = 256
"""Ready sockets the reactor handles per wake-up (then it lets other tasks run)."""
LONE_WAITS = 256
"""Waits for input in trio's own wait after the reactor woke a task for its socket alone."""


class Reactor:
    """Watches the sockets of inline streams in an epoll instance of its own (see the module doc).

    Only streams whose task waits in ``receive``, or that are parked, are
    watched (level-triggered): a socket becomes readable, the reactor reads it
    and passes the bytes to the stream's callback, or to its waiting task (or
    wake callback). A stream that nobody waits for is dropped at its next
    event, until its task waits again.
    """

    def __init__(self, polling: Callable[[], bool] | None = None) -> None:
        self._polling = polling  # while it says so, poll again instead of waiting (busy polling)
        self._epoll: select.epoll | None = None  # while running
        self._streams: dict[int, TrioSocketStream] = {}
        self._running = False

    @property
    def running(self) -> bool:
        return self._running

    def watch(self, fd: int, stream: TrioSocketStream) -> None:
        """Watch ``fd`` for ``stream`` (only while running)."""
        assert self._epoll is not None
        self._epoll.register(fd, select.EPOLLIN)
        self._streams[fd] = stream

    def unwatch(self, fd: int) -> None:
        if self._streams.pop(fd, None) is not None and self._epoll is not None:
            try:
                self._epoll.unregister(fd)
            except OSError:  # pragma: no cover - already gone with its socket
                pass

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Serve the watched streams until cancelled; then their tasks go back to trio's waits.

        ``task_status`` is told once it runs (with ``TaskGroup.start``: streams
        accepted after that can take the inline mode at once).
        """
        epoll = self._epoll = select.epoll()
        streams = self._streams
        polling = self._polling
        self._running = True
        task_status.started()
        try:
            while True:
                events = epoll.poll(0, _MAX_EVENTS)
                alone = len(events) == 1
                for fd, _ in events:
                    stream = streams.get(fd)
                    if stream is not None:
                        stream.on_readable(alone)
                if polling is not None and polling():
                    await trio.lowlevel.checkpoint()  # other tasks run; then poll again
                else:
                    await trio.lowlevel.wait_readable(epoll)
        finally:
            self._running = False
            for fd, stream in list(streams.items()):
                self.unwatch(fd)
                stream.reactor_gone()
            self._epoll = None
            epoll.close()


def _socket_attributes(sock: socket.socket) -> Mapping[Any, Callable[[], Any]]:
    try:
        peer: Any = convert_address(sock.getpeername())
    except OSError:
        peer = None
    return socket_attributes(sock, convert_address(sock.getsockname()), peer)


class TrioSocketStream(anyio.abc.SocketStream, Transport):
    """An :class:`anyio.abc.SocketStream` on a connected non-blocking socket, for trio."""

    def __init__(
        self,
        sock: socket.socket,
        poll: Callable[[], None] | None = None,
        reactor: Reactor | None = None,
    ) -> None:
        self._sock = sock
        self._poll = poll  # called on every read that brings bytes (tcpkit._busy_poll)
        self._closed = False
        self._streak = 0
        self._receiving = False
        self._sending = False
        self._drained = False  # the last receive got less than asked: the socket was empty
        self._attributes: Mapping[Any, Callable[[], Any]] | None = None
        # The inline mode (see the module doc):
        self._reactor = reactor
        self._on_data: Callable[[bytes], bool] | None = None
        self._watched = -1  # the file descriptor the reactor watches, or -1
        self._waiter: trio.lowlevel.Task | None = None  # a task waiting in receive
        self._on_wake: Callable[[], None] | None = None  # ... or none waits (parked)
        self._buffer = b""  # read by the reactor, for receive
        self._trio_waits = 0  # waits for input left that are trio's own (see LONE_WAITS)
        self._interrupted = False  # interrupt_receive() was called
        self._in_trio_wait = False  # a receive waits in trio's wait_readable
        self._eof = False
        self._error: BaseException | None = None  # a failed read in the reactor
        self._unsent: memoryview | None = None  # what write() could not send

    async def receive(self, max_bytes: int = 65536) -> bytes:
        """Return the bytes the kernel has; wait (a cancellation point) only if it has none.

        Raises:
            ValueError: ``max_bytes`` is below 1.
            EndOfStream: the peer half-closed.
            ClosedResourceError: this stream was closed.
            BrokenResourceError: the connection failed.
            BusyResourceError: another task is already receiving.
        """
        if max_bytes < 1:
            raise ValueError("max_bytes must be a positive integer")
        if self._receiving:
            raise anyio.BusyResourceError("reading from")
        self._receiving = True
        try:
            self._streak += 1
            if self._streak > STREAK:
                self._streak = 0
                await trio.lowlevel.checkpoint()
            if self._on_data is not None:  # the reactor reads, for the callback first
                await self._wait_reactor()
            data = self._read_already(max_bytes)
            if data is None and self._drained and not self._closed:
                # The last read emptied the socket: wait for more before trying
                # (saves a recv that would fail, in request-response traffic).
                self._streak = 0
                if self._trio_waits or self._reactor is None:
                    await self._wait_readable()
                else:
                    data = await self._wait_reactor_input(max_bytes)
            if data is None:
                while (data := self._recv(max_bytes)) is None:
                    self._streak = 0
                    await self._wait_readable()
            return data
        finally:
            self._receiving = False

    def _recv(self, max_bytes: int) -> bytes | None:
        """Read from the socket: ``None`` if it has nothing (without waiting)."""
        if self._closed:
            raise anyio.ClosedResourceError
        try:
            data = self._sock.recv(max_bytes)
        except BlockingIOError:
            return None
        except OSError as exc:
            if self._closed:
                raise anyio.ClosedResourceError from None
            raise anyio.BrokenResourceError from exc
        if not data:
            raise anyio.EndOfStream
        self._drained = len(data) < max_bytes
        if self._poll is not None:
            self._poll()
        return data

    async def _wait_reactor_input(self, max_bytes: int) -> bytes | None:
        """Wait for input through the reactor, which reads it (see LONE_WAITS); ``None``
        if the reactor is not running (then through trio's wait: the socket is readable)."""
        await self._wait_reactor()
        data = self._read_already(max_bytes)
        if data is None:
            await self._wait_readable()
        return data

    async def _wait_readable(self) -> None:
        """Wait until the socket is readable, or until :meth:`interrupt_receive`.

        trio can wake a task blocked in ``wait_readable`` only by cancelling it
        (a cancel scope per wait costs microseconds, on every read) or with
        ``notify_closing``, which wakes the socket's waiters with
        ``ClosedResourceError`` and leaves the socket usable (the next wait
        registers it again): :meth:`interrupt_receive` uses that.
        """
        if self._interrupted:
            self._interrupted = False
            raise ReceiveInterrupted
        if self._trio_waits:
            self._trio_waits -= 1
        self._in_trio_wait = True
        try:
            await trio.lowlevel.wait_readable(self._sock)
        except trio.ClosedResourceError:
            if self._closed or not self._interrupted:
                raise anyio.ClosedResourceError from None
            self._interrupted = False
            raise ReceiveInterrupted from None
        finally:
            self._in_trio_wait = False

    def _take(self, max_bytes: int) -> bytes:
        data = self._buffer
        if len(data) <= max_bytes:
            self._buffer = b""
            return data
        self._buffer = data[max_bytes:]
        return data[:max_bytes]

    def receive_nowait(self, max_bytes: int = 65536) -> bytes:
        """See :meth:`tcpkit._transport.Transport.receive_nowait` (what the reactor read)."""
        if self._closed:
            raise anyio.ClosedResourceError
        if self._interrupted:
            self._interrupted = False
            raise ReceiveInterrupted
        data = self._read_already(max_bytes)
        if data is None:
            raise anyio.WouldBlock
        return data

    def _read_already(self, max_bytes: int) -> bytes | None:
        """What the reactor read: bytes, or its end of stream or failure (raised); else ``None``."""
        if self._buffer:
            return self._take(max_bytes)
        if self._error is not None:
            raise anyio.BrokenResourceError from self._error
        if self._eof:
            raise anyio.EndOfStream
        return None

    # the inline mode -----------------------------------------------------------

    def set_data_callback(
        self, callback: Callable[[bytes], bool] | None, *, as_task: bool = False
    ) -> bool:
        """Offer arriving bytes to ``callback`` first, in the reactor (see ``Transport``).

        Without a running reactor (a stream not from a serving listener) this
        does nothing and returns ``False``: bytes reach ``receive`` as usual.
        """
        if callback is not None and (self._reactor is None or not self._reactor.running):
            return False
        self._on_data = callback
        if callback is None:
            self._unwatch()
        return True

    @property
    def waits_in_reactor(self) -> bool:
        """Whether a ``receive`` that has to wait now is woken by the reactor (see LONE_WAITS)."""
        reactor = self._reactor
        running = reactor is not None and reactor.running
        return running and (self._on_data is not None or not self._trio_waits)

    @property
    def parkable(self) -> bool:
        return self._reactor is not None and self._reactor.running

    def set_wake_callback(self, callback: Callable[[], None] | None) -> bool:
        """See ``Transport``: the reactor watches the socket while the callback is set."""
        reactor = self._reactor
        if callback is not None:
            if self._on_data is None or reactor is None or not reactor.running:
                return False
            if self._closed or self._interrupted or self._buffer or self._eof or self._error:
                return False
            self._watch(reactor)
        self._on_wake = callback
        return True

    def interrupt_receive(self) -> None:
        """Make the waiting (or next) ``receive`` raise ``ReceiveInterrupted``."""
        self._interrupted = True
        self._wake()  # a task waiting for the reactor
        if self._in_trio_wait:  # ... or in trio's own wait (see _wait_readable)
            trio.lowlevel.notify_closing(self._sock)

    def clear_interrupt(self) -> None:
        self._interrupted = False

    def write(self, data: bytes) -> bool:
        """Send what the kernel takes now; ``False`` if the rest waits for :meth:`drain`.

        Raises:
            BrokenResourceError: the connection is closed or failed.
        """
        if self._closed:
            raise anyio.BrokenResourceError
        if self._unsent is not None:
            self._unsent = memoryview(bytes(self._unsent) + data)
            return False
        if self._sending:  # a drain (or send) is under way: after what it sends
            self._unsent = memoryview(data)
            return False
        try:
            sent = self._sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            raise anyio.BrokenResourceError from exc
        if sent < len(data):
            self._unsent = memoryview(data)[sent:]
            return False
        return True

    @property
    def buffered(self) -> int:
        """Bytes :meth:`write` could not send yet."""
        return 0 if self._unsent is None else len(self._unsent)

    async def drain(self) -> None:
        """Send what :meth:`write` left, waiting while the kernel's buffer is full.

        Raises:
            ClosedResourceError: this stream was closed.
            BrokenResourceError: the connection failed.
            BusyResourceError: another task is sending.
        """
        if self._sending:
            raise anyio.BusyResourceError("writing to")
        self._sending = True
        try:
            if self._closed:
                raise anyio.ClosedResourceError
            while self._unsent is not None:  # (what write() took meanwhile: after it)
                unsent, self._unsent = self._unsent, None
                await self._send_rest(unsent, 0)
        finally:
            self._sending = False

    @property
    def stream(self) -> anyio.abc.ByteStream:
        return self

    async def _wait_reactor(self) -> None:
        """Wait until the reactor read something (or the end, or a failure), unless it is
        not running (then wait as usual)."""
        while True:
            if self._closed:
                raise anyio.ClosedResourceError
            if self._interrupted:
                self._interrupted = False
                raise ReceiveInterrupted
            if self._buffer or self._error is not None or self._eof:
                return  # receive hands them out
            reactor = self._reactor
            if reactor is None or not reactor.running:
                return
            self._watch(reactor)
            self._streak = 0
            self._waiter = trio.lowlevel.current_task()
            await trio.lowlevel.wait_task_rescheduled(self._abort_wait)

    def _abort_wait(self, _: object) -> trio.lowlevel.Abort:
        self._waiter = None
        return trio.lowlevel.Abort.SUCCEEDED

    def _wake(self) -> None:
        task = self._waiter
        if task is not None:
            self._waiter = None
            trio.lowlevel.reschedule(task)
        elif self._on_wake is not None:
            on_wake, self._on_wake = self._on_wake, None
            on_wake()

    def _watch(self, reactor: Reactor) -> None:
        if self._watched < 0:
            fd = self._sock.fileno()
            reactor.watch(fd, self)
            self._watched = fd

    def _unwatch(self) -> None:
        if self._watched >= 0 and self._reactor is not None:
            self._reactor.unwatch(self._watched)
        self._watched = -1

    def reactor_gone(self) -> None:
        self._watched = -1
        self._on_data = None
        self._wake()

    def on_readable(self, alone: bool) -> None:
        """The reactor saw the socket readable: read it, for the callback or the waiting task.

        ``alone``: no other socket was ready in this wake-up of the reactor.
        """
        if self._waiter is None and self._on_wake is None:
            self._unwatch()  # nobody waits (nor is parked): stop watching until one does
            return
        try:
            data = self._sock.recv(_READ_SIZE)
        except BlockingIOError:
            return
        except OSError as exc:
            self._error = exc
            data = b""
        if not data:
            self._eof = True
            self._unwatch()
            self._wake()
            return
        if self._poll is not None:
            self._poll()
        on_data = self._on_data
        if on_data is not None:
            try:
                if on_data(data):
                    return
            except Exception as exc:  # a bug in the callback: fail this stream only
                self._error = exc
                self._unwatch()
                self._wake()
                return
        elif alone:
            # A wake-up of the reactor costs a task switch and two system calls more
            # than trio's wait; it pays when it serves several sockets at once. For
            # one, the next waits of this task are trio's.
            self._trio_waits = LONE_WAITS
            self._unwatch()
        self._drained = len(data) < _READ_SIZE  # (for receive, as its own reads)
        self._buffer = data
        self._wake()

    async def send(self, item: bytes) -> None:
        """Write all of ``item`` to the kernel; wait only while its buffer is full.

        Raises:
            ClosedResourceError: this stream was closed.
            BrokenResourceError: the connection failed (part of ``item`` may be lost).
            BusyResourceError: another task is already sending.
        """
        if self._sending:
            raise anyio.BusyResourceError("writing to")
        sock = self._sock
        self._sending = True
        try:
            self._streak += 1
            if self._streak > STREAK:
                self._streak = 0
                await trio.lowlevel.checkpoint()
            if self._closed:
                raise anyio.ClosedResourceError
            if self._unsent is not None:  # left by write(): first
                item = bytes(self._unsent) + item
                self._unsent = None
            if not item:
                return
            try:
                sent = sock.send(item)
            except BlockingIOError:
                sent = 0
            except OSError as exc:
                raise anyio.BrokenResourceError from exc
            if sent < len(item):
                await self._send_rest(memoryview(item), sent)
        finally:
            self._sending = False

    async def _send_rest(self, view: memoryview, sent: int) -> None:
        sock = self._sock
        self._streak = 0
        while sent < len(view):
            try:
                await trio.lowlevel.wait_writable(sock)
            except trio.ClosedResourceError:
                if self._closed:
                    raise anyio.ClosedResourceError from None
                continue  # woken by interrupt_receive's notify_closing: wait again
            if self._closed:
                raise anyio.ClosedResourceError
            try:
                sent += sock.send(view[sent:])
            except BlockingIOError:
                continue
            except OSError as exc:
                if self._closed:
                    raise anyio.ClosedResourceError from None
                raise anyio.BrokenResourceError from exc

    async def send_eof(self) -> None:
        """Half-close: the peer reads EOF after the bytes already sent.

        Raises:
            ClosedResourceError: this stream was closed.
        """
        if self._closed:
            raise anyio.ClosedResourceError
        if self._unsent is not None:
            await self.send(b"")
        try:
            self._sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    async def aclose(self) -> None:
        """Close the socket (bytes of completed sends are in the kernel and still go out)."""
        self._close()

    def close_nowait(self, closed: Callable[[], None]) -> bool:
        """:meth:`aclose`, which never waits; calls ``closed`` before it returns."""
        self._close()
        closed()
        return True

    def _close(self) -> None:
        if not self._closed:
            self._closed = True
            self._unwatch()
            self._wake()
            if self._sock.fileno() >= 0:
                trio.lowlevel.notify_closing(self._sock)  # wakes a task waiting on it
            self._sock.close()

    @property
    def _raw_socket(self) -> socket.socket:
        return self._sock

    @property
    def extra_attributes(self) -> Mapping[Any, Callable[[], Any]]:
        attributes = self._attributes
        if attributes is None:
            attributes = self._attributes = _socket_attributes(self._sock)
        return attributes


class TrioSocketListener(FastListener):
    """Accepts :class:`TrioSocketStream` connections from an anyio trio listener.

    Accept errors are those of ``socket.accept`` (``OSError``: EMFILE and the
    like); a closed listener raises ``ClosedResourceError``.
    """

    def __init__(self, listener: anyio.abc.Listener[Any], poller: BusyPoller | None = None) -> None:
        super().__init__(listener, poller.kick if poller is not None else None)
        # The inline mode needs epoll (Linux); elsewhere streams use trio's waits only.
        self._reactor = (
            Reactor(poller.polling if poller is not None else None)
            if hasattr(select, "epoll")
            else None
        )
        self._accepting = False

    async def accept(self) -> anyio.abc.SocketStream:
        """Accept one connection; waits (a cancellation point) only when none is pending.

        Raises:
            ClosedResourceError: the listener is closed.
            BusyResourceError: another task is already accepting.
            OSError: ``accept`` failed (e.g. EMFILE); the listener stays usable.
        """
        if self._accepting:
            raise anyio.BusyResourceError("accepting connections from")
        sock = self._sock
        self._accepting = True
        try:
            self._streak += 1
            if self._streak > STREAK:
                self._streak = 0
                await trio.lowlevel.checkpoint()
            while True:
                if self._closed:
                    raise anyio.ClosedResourceError
                try:
                    client, _ = sock.accept()
                    break
                except BlockingIOError:
                    self._streak = 0
                    try:
                        await trio.lowlevel.wait_readable(sock)
                    except trio.ClosedResourceError:
                        raise anyio.ClosedResourceError from None
                except OSError:
                    if self._closed or sock.fileno() < 0:
                        raise anyio.ClosedResourceError from None
                    raise
        finally:
            self._accepting = False
        try:
            self._configure(client)
        except OSError:
            client.close()
            raise
        return TrioSocketStream(client, self._poll, self._reactor)

    async def run_reactor(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Run the :class:`Reactor` of this listener's streams until cancelled.

        Start it before the accept loop (``TaskGroup.start``: it says when it
        runs); it must outlive the listening socket as long as connections run
        (a graceful shutdown closes the listener first). Without it, streams
        do not take the inline mode. Returns at once where there is no epoll.
        """
        if self._reactor is not None:
            await self._reactor.run(task_status=task_status)
        else:
            task_status.started()

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            if self._sock.fileno() >= 0:
                trio.lowlevel.notify_closing(self._sock)  # a waiting accept raises Closed
        await self._listener.aclose()
