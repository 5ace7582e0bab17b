"""The seam between a connection's driver and the bytes: :class:`Transport`.

A transport is a connected byte stream with the few extra capabilities the
driver (:mod:`tcpkit._driver`) needs, each a typed method:

* ``receive``: wait for input (anyio's ``ByteStream.receive``); a waiting
  receive can be woken with :meth:`~Transport.interrupt_receive`, which makes
  it raise :class:`ReceiveInterrupted` (nothing is lost);
* ``set_data_callback``: where the transport can, hand arriving bytes to a
  callback while a task waits in ``receive`` (a turn then costs no task
  switch); it says whether it will, and ``callback_runs_as_task`` whether
  the callback runs as that task (then it may start a handler coroutine);
* ``set_wake_callback``: where the transport is ``parkable``, a connection
  waits for input without a task: its data callback takes what arrives, and
  the wake callback runs when a ``receive`` would return (``receive_nowait``
  then says what it would return, and ``close_nowait`` closes without
  waiting, calling back once the socket is closed, so the end of a
  connection may need no task either);
* ``write``: take bytes without waiting, and tell whether they are all in the
  OS now; if not, :meth:`~Transport.drain` must be awaited (it pushes the
  rest out where the transport needs that, and waits until it is gone);
* ``send_eof`` (half-close), ``aclose``, and the stream's attributes.

tcpkit's own socket streams implement it directly (``tcpkit._asyncio_stream``
for asyncio and uvloop, ``tcpkit._trio_stream`` for trio);
:class:`StreamTransport` adapts any other ``anyio.abc.ByteStream`` (TLS, the
in-memory streams of ``tcpkit.testing``, a stream ``pre_connect`` wrapped).
"""

from __future__ import annotations

import errno
import os
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from typing import TypeAlias, TypeVar

import anyio
import anyio.abc
from anyio.streams.tls import TLSStream

__all__ = [
    "DataCallback",
    "Interrupter",
    "ReceiveInterrupted",
    "StreamTransport",
    "Transport",
    "as_transport",
    "socket_error",
]

T = TypeVar("T")

DataCallback: TypeAlias = Callable[[bytes], bool]
"""Called with arriving bytes; returns ``True`` if it consumed them (see ``set_data_callback``)."""


class ReceiveInterrupted(Exception):
    """A waiting ``receive`` was woken by :meth:`Transport.interrupt_receive`; no byte was lost."""


class Interrupter:
    """Makes a transport's waits for input interruptible (``interrupt_receive``).

    ``await interrupter.wait(f)`` awaits ``f()`` in a cancel scope that
    :meth:`interrupt` cancels, and then raises :class:`ReceiveInterrupted`; an
    interrupt with nobody waiting makes the next wait raise at once. Waiting
    for input must be safe to cancel (nothing is consumed before it returns).
    """

    __slots__ = ("_interrupted", "_scope")

    def __init__(self) -> None:
        self._interrupted = False
        self._scope: anyio.CancelScope | None = None

    def interrupt(self) -> None:
        self._interrupted = True
        if self._scope is not None:
            self._scope.cancel()

    def clear(self) -> None:
        """Forget an interrupt that no wait has raised for yet."""
        self._interrupted = False

    def check(self) -> None:
        """Raise :class:`ReceiveInterrupted` if an interrupt is pending (and clear it)."""
        if self._interrupted:
            self._interrupted = False
            raise ReceiveInterrupted

    async def wait(self, waiting: Callable[[], Awaitable[T]]) -> T:
        """Await ``waiting()`` unless interrupted (before or during it)."""
        self.check()
        with anyio.CancelScope() as scope:
            self._scope = scope
            try:
                return await waiting()
            finally:
                self._scope = None
        self._interrupted = False
        raise ReceiveInterrupted


class Transport(ABC):
    """A connected byte stream as a connection's driver uses it (see the module doc)."""

    __slots__ = ()

    @abstractmethod
    async def receive(self, max_bytes: int = 65536) -> bytes:
        """Wait for input and return it.

        Raises:
            ReceiveInterrupted: :meth:`interrupt_receive` was called.
            anyio.EndOfStream: the peer half-closed.
            anyio.BrokenResourceError: the connection failed (the OS error is the cause).
            anyio.ClosedResourceError: this transport was closed.
        """

    @abstractmethod
    def interrupt_receive(self) -> None:
        """Make the waiting (or the next) ``receive`` raise :class:`ReceiveInterrupted`."""

    @abstractmethod
    def clear_interrupt(self) -> None:
        """Forget an :meth:`interrupt_receive` that no ``receive`` has raised for yet."""

    def set_data_callback(self, callback: DataCallback | None, *, as_task: bool = False) -> bool:
        """Offer arriving bytes to ``callback`` while no ``receive`` consumes them.

        ``callback(data)`` runs synchronously when bytes arrive while none are
        buffered; it returns ``True`` if it consumed them (else they go to
        ``receive`` as usual). ``None`` stops it. Returns whether the
        transport will call it at all (this default: never). With
        ``as_task`` (where :attr:`callback_runs_as_task`), it runs as the task
        that set it, which must then be the task that waits in ``receive``.
        """
        return False

    @property
    def callback_runs_as_task(self) -> bool:
        """Whether a data callback set ``as_task`` runs as the task that set it.

        If so (asyncio: ``current_task()`` is that task while it runs), a
        coroutine the callback starts may wait, and that task resumes it.
        This default: no.
        """
        return False

    @property
    def parkable(self) -> bool:
        """Whether input can be waited for without a task (:meth:`set_wake_callback`).

        If so, a data callback may be set from anywhere (not ``as_task``) and
        runs while a task waits in ``receive`` or while the wake callback is
        set. This default: no.
        """
        return False

    def set_wake_callback(self, callback: Callable[[], None] | None) -> bool:
        """Call ``callback`` when a ``receive`` would return, while none waits.

        For a connection that waits for input without a task (parked): the
        callback runs (once: it is cleared first) when bytes arrive that the
        data callback did not take, at the end of the stream, when the
        connection fails and on :meth:`interrupt_receive`; it then starts a
        task to ``receive``. Returns ``False`` (and sets nothing) if this
        transport cannot (not :attr:`parkable`) or a ``receive`` would not
        wait now. ``None`` clears it.
        """
        return False

    def receive_nowait(self, max_bytes: int = 65536) -> bytes:
        """What :meth:`receive` would return or raise now, without waiting.

        For a parked connection's wake callback; :attr:`parkable` transports
        implement it. A pending :meth:`interrupt_receive` comes before input
        and the end of the stream.

        Raises:
            anyio.WouldBlock: ``receive`` would wait (this default: always).
            ReceiveInterrupted: :meth:`interrupt_receive` was called.
            anyio.EndOfStream: the peer half-closed.
            anyio.BrokenResourceError: the connection failed.
            anyio.ClosedResourceError: this transport was closed.
        """
        raise anyio.WouldBlock

    @abstractmethod
    def write(self, data: bytes) -> bool:
        """Take all of ``data`` without waiting.

        Returns ``True`` if it (and everything written before) is in the OS
        now; ``False`` if some of it waits in the transport: :meth:`drain`
        must then be awaited for it to go out.

        Raises:
            anyio.BrokenResourceError: the connection failed or is closed.
        """

    @property
    @abstractmethod
    def buffered(self) -> int:
        """Bytes taken by :meth:`write` and not yet handed to the OS."""

    @abstractmethod
    async def drain(self) -> None:
        """Send what :meth:`write` left, and wait until it is all in the OS.

        Raises:
            anyio.BrokenResourceError: the connection failed (the rest is lost).
            anyio.ClosedResourceError: this transport was closed.
        """

    @abstractmethod
    async def send_eof(self) -> None:
        """Half-close, after what was written (call :meth:`drain` first)."""

    @abstractmethod
    async def aclose(self) -> None:
        """Close; bytes already in the OS still go out, what is buffered here is dropped."""

    def close_nowait(self, closed: Callable[[], None]) -> bool:
        """Close as :meth:`aclose` does, without waiting, where this transport can.

        Returns whether it closed (this default: no, and ``closed`` is never
        called; await :meth:`aclose`). :attr:`parkable` transports always
        can. ``closed`` is called once the socket is closed, in the caller's
        context (``contextvars``): right here, or a moment later from the
        event loop, in a copy of it (asyncio closes a socket at the loop's
        next turn).
        """
        return False

    @property
    @abstractmethod
    def stream(self) -> anyio.abc.ByteStream:
        """The anyio byte stream this transport carries (addresses, ``start_tls``)."""


class StreamTransport(Transport):
    """A :class:`Transport` over any ``anyio.abc.ByteStream``.

    ``write`` only queues (an anyio stream cannot send without waiting), and
    ``drain`` sends the queue in one ``send``. A waiting ``receive`` is
    interrupted by cancelling it, which anyio's streams survive without
    losing bytes; TLS over a transport (one of tcpkit's socket streams:
    ``inner``) is interrupted through that transport instead, without a
    cancel scope per receive (the ``ReceiveInterrupted`` it raises passes
    through anyio's ``TLSStream.receive`` as a cancellation would).
    """

    __slots__ = (
        "_forwarded",
        "_inner",
        "_interrupter",
        "_pending",
        "_pending_size",
        "_receiving",
        "_stream",
    )

    def __init__(self, stream: anyio.abc.ByteStream, inner: Transport | None = None) -> None:
        self._stream = stream
        self._inner = inner
        self._pending: list[bytes] = []
        self._pending_size = 0
        self._interrupter = Interrupter()
        self._receiving = False  # (with an inner transport) a receive waits
        self._forwarded = False  # ... and was interrupted through the inner one

    @property
    def stream(self) -> anyio.abc.ByteStream:
        return self._stream

    async def receive(self, max_bytes: int = 65536) -> bytes:
        inner = self._inner
        if inner is None:
            return await self._interrupter.wait(lambda: self._stream.receive(max_bytes))
        self._interrupter.check()
        self._receiving = True
        try:
            return await self._stream.receive(max_bytes)
        finally:
            self._receiving = False
            if self._forwarded:  # (TLS returned what it had without asking the inner one)
                self._forwarded = False
                inner.clear_interrupt()

    def interrupt_receive(self) -> None:
        if self._receiving and self._inner is not None:
            self._forwarded = True
            self._inner.interrupt_receive()
        else:
            self._interrupter.interrupt()

    def clear_interrupt(self) -> None:
        self._interrupter.clear()

    def write(self, data: bytes) -> bool:
        if data:
            self._pending.append(data)
            self._pending_size += len(data)
        return not self._pending_size

    @property
    def buffered(self) -> int:
        return self._pending_size

    async def drain(self) -> None:
        while self._pending:
            pending = self._pending
            data = pending[0] if len(pending) == 1 else b"".join(pending)
            self._pending = []
            try:
                await self._stream.send(data)
            finally:
                self._pending_size -= len(data)

    async def send_eof(self) -> None:
        await self._stream.send_eof()

    async def aclose(self) -> None:
        self._pending = []
        self._pending_size = 0
        await self._stream.aclose()


def as_transport(stream: anyio.abc.ByteStream) -> Transport:
    """``stream`` itself if it is a :class:`Transport`, else a :class:`StreamTransport` over it."""
    if isinstance(stream, Transport):
        return stream
    if isinstance(stream, TLSStream) and isinstance(stream.transport_stream, Transport):
        return StreamTransport(stream, stream.transport_stream)
    return StreamTransport(stream)


def socket_error(exc: BaseException) -> BaseException:
    """What a failed transport operation means, as ``on_error`` reports it.

    Transports raise anyio's ``BrokenResourceError`` with the operating
    system's error as its cause; that error says what happened:
    ``ConnectionResetError`` (the peer reset the connection),
    ``BrokenPipeError`` (it closed before our write), ``ssl.SSLError`` (TLS
    failed mid-stream)... A broken stream with no such cause (an in-memory
    peer that closed) is reported as a reset, and a write that met the end
    of the stream (TLS after the peer's EOF) as a broken pipe. Anything else
    is itself.
    """
    if isinstance(exc, anyio.EndOfStream):  # a write after a TLS peer's unannounced EOF
        lost = BrokenPipeError(
            errno.EPIPE, "the peer closed the connection: nothing more can be sent"
        )
        lost.__cause__ = exc
        return lost
    if not isinstance(exc, anyio.BrokenResourceError):
        return exc
    cause = exc.__cause__ or exc.__context__
    if isinstance(cause, OSError):  # ssl.SSLError included
        return cause
    reset = ConnectionResetError(errno.ECONNRESET, str(exc) or os.strerror(errno.ECONNRESET))
    reset.__cause__ = exc
    return reset
