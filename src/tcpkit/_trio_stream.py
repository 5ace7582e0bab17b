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
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Mapping
from typing import Any

import anyio
import anyio.abc
import trio
from anyio.abc import SocketAttribute

from ._socket import convert_address, socket_attributes

__all__ = ["STREAK", "TrioSocketListener", "TrioSocketStream"]

STREAK = 32
"""Operations in a row that did not wait, after which one checkpoint is taken."""


def _socket_attributes(sock: socket.socket) -> dict[Any, Callable[[], Any]]:
    try:
        peer: Any = convert_address(sock.getpeername())
    except OSError:
        peer = None
    return socket_attributes(sock, sock.family, convert_address(sock.getsockname()), peer)


class TrioSocketStream(anyio.abc.SocketStream):
    """An :class:`anyio.abc.SocketStream` on a connected non-blocking socket, for trio."""

    def __init__(self, sock: socket.socket, poll: Callable[[], None] | None = None) -> None:
        self._sock = sock
        self._poll = poll  # called on every read that brings bytes (tcpkit._busy_poll)
        self._closed = False
        self._streak = 0
        self._receiving = False
        self._sending = False
        self._drained = False  # the last receive got less than asked: the socket was empty
        self._attributes: Mapping[Any, Callable[[], Any]] | None = None

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
        sock = self._sock
        self._receiving = True
        try:
            self._streak += 1
            if self._streak > STREAK:
                self._streak = 0
                await trio.lowlevel.checkpoint()
            if self._drained and not self._closed:
                # The last read emptied the socket: wait for more before trying
                # (saves a recv that would fail, in request-response traffic).
                self._streak = 0
                await self._wait_readable()
            while True:
                if self._closed:
                    raise anyio.ClosedResourceError
                try:
                    data = sock.recv(max_bytes)
                except BlockingIOError:
                    self._streak = 0
                    await self._wait_readable()
                    continue
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
        finally:
            self._receiving = False

    async def _wait_readable(self) -> None:
        try:
            await trio.lowlevel.wait_readable(self._sock)
        except trio.ClosedResourceError:
            raise anyio.ClosedResourceError from None

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

    def send_nowait(self, item: bytes) -> int:
        """Write what the kernel takes now, without waiting; return how many bytes that was.

        The caller sends the rest with :meth:`send`.

        Raises:
            ClosedResourceError: this stream was closed.
            BrokenResourceError: the connection failed.
            BusyResourceError: another task is sending.
        """
        if self._sending:
            raise anyio.BusyResourceError("writing to")
        if self._closed:
            raise anyio.ClosedResourceError
        try:
            return self._sock.send(item)
        except BlockingIOError:
            return 0
        except OSError as exc:
            raise anyio.BrokenResourceError from exc

    async def _send_rest(self, view: memoryview, sent: int) -> None:
        sock = self._sock
        self._streak = 0
        while sent < len(view):
            try:
                await trio.lowlevel.wait_writable(sock)
            except trio.ClosedResourceError:
                raise anyio.ClosedResourceError from None
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
        try:
            self._sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    async def aclose(self) -> None:
        """Close the socket (bytes of completed sends are in the kernel and still go out)."""
        if not self._closed:
            self._closed = True
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


class TrioSocketListener(anyio.abc.SocketListener):
    """Accepts :class:`TrioSocketStream` connections from an anyio trio listener.

    Accept errors are those of ``socket.accept`` (``OSError``: EMFILE and the
    like); a closed listener raises ``ClosedResourceError``.
    """

    def __init__(
        self, listener: anyio.abc.SocketListener, poll: Callable[[], None] | None = None
    ) -> None:
        self._listener = listener
        self._sock: socket.socket = listener.extra(SocketAttribute.raw_socket)
        self._poll = poll  # handed to every stream
        self._tcp = self._sock.family in (socket.AF_INET, socket.AF_INET6)
        self._streak = 0
        self._accepting = False
        self._closed = False

    @property
    def _raw_socket(self) -> socket.socket:
        return self._sock

    @property
    def extra_attributes(self) -> Mapping[Any, Callable[[], Any]]:
        return self._listener.extra_attributes

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
            client.setblocking(False)
            if self._tcp:
                client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            client.close()
            raise
        return TrioSocketStream(client, self._poll)

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            if self._sock.fileno() >= 0:
                trio.lowlevel.notify_closing(self._sock)  # a waiting accept raises Closed
        await self._listener.aclose()
