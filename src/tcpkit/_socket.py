"""What tcpkit's own socket streams (asyncio and trio) share: their attributes, socket options."""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import anyio.abc
from anyio.abc import SocketAttribute

__all__ = [
    "FastListener",
    "SocketOptions",
    "convert_address",
    "socket_attributes",
    "unsent_bytes",
]


def _send_queue_reader() -> Callable[[int], int] | None:
    """Reads SIOCOUTQ (Linux): bytes in a socket's send queue the peer has not acknowledged."""
    try:
        import fcntl
        import termios

        request = termios.TIOCOUTQ  # (the same number as SIOCOUTQ)
    except (ImportError, AttributeError):  # pragma: no cover - not on Linux
        return None

    def queued(fd: int) -> int:
        value: int = struct.unpack("i", fcntl.ioctl(fd, request, b"\0\0\0\0"))[0]
        return value

    return queued


_queued = _send_queue_reader()


def unsent_bytes(sock: socket.socket | None) -> int:
    """Bytes the OS took for ``sock`` that the peer has not acknowledged yet (0 if unknown).

    They wait in the kernel's send queue while the peer does not read; as it
    reads, they drain. Known on Linux (``SIOCOUTQ``), 0 elsewhere.
    """
    if _queued is None or sock is None:
        return 0
    try:
        return _queued(sock.fileno())
    except (OSError, ValueError):  # closed, or not a socket
        return 0


def convert_address(address: Any) -> Any:
    """anyio's form of a socket address: IPv6 as ``(host, port)``, others unchanged."""
    if isinstance(address, tuple) and len(address) > 2:  # pyright: ignore[reportUnknownArgumentType]
        return address[:2]  # pyright: ignore[reportUnknownVariableType]
    return address  # pyright: ignore[reportUnknownVariableType]


class SocketAttributes(Mapping[Any, Callable[[], Any]]):
    """The ``extra_attributes`` of a socket (addresses already converted).

    A small object rather than a dict of closures: a server keeps one per
    connection, and a dict of six lambdas costs 1.5 KiB each.
    """

    __slots__ = ("_local", "_peer", "_raw")

    def __init__(self, raw: socket.socket | None, local: Any, peer: Any) -> None:
        self._raw = raw
        self._local = local
        self._peer = peer

    def _values(self) -> dict[Any, Any]:
        # (The family only when asked: ``socket.family`` converts to an enum, per connection.)
        family = self._raw.family if self._raw is not None else socket.AF_UNSPEC
        values: dict[Any, Any] = {
            SocketAttribute.family: family,
            SocketAttribute.local_address: self._local,
            SocketAttribute.raw_socket: self._raw,
        }
        local: Any = self._local
        peer: Any = self._peer
        if peer is not None:
            values[SocketAttribute.remote_address] = peer
        if family in (socket.AF_INET, socket.AF_INET6):
            if isinstance(local, tuple):
                values[SocketAttribute.local_port] = local[1]
            if isinstance(peer, tuple):
                values[SocketAttribute.remote_port] = peer[1]
        return values

    def __getitem__(self, key: Any) -> Callable[[], Any]:
        # The three a connection asks for first, without building the dict (per connection).
        if key is SocketAttribute.remote_address and self._peer is not None:
            value = self._peer
        elif key is SocketAttribute.local_address:
            value = self._local
        elif key is SocketAttribute.raw_socket:
            value = self._raw
        else:
            value = self._values()[key]
        return lambda: value

    def __iter__(self) -> Iterator[Any]:
        return iter(self._values())

    def __len__(self) -> int:
        return len(self._values())


def socket_attributes(
    raw: socket.socket | None, local: Any, peer: Any
) -> Mapping[Any, Callable[[], Any]]:
    """The ``extra_attributes`` of a connected stream (addresses already converted)."""
    return SocketAttributes(raw, local, peer)


KEEPALIVE_PROBES = 3
"""Unanswered keepalive probes after which the kernel drops a connection."""


@dataclass(frozen=True)
class SocketOptions:
    """The options set on every accepted TCP socket (``App(tcp_nodelay=, tcp_keepalive=)``).

    Attributes:
        nodelay: set ``TCP_NODELAY`` (else the kernel's default, Nagle's
            algorithm, is left alone).
        keepalive: ``None`` leaves keepalive to the OS (off); seconds turn it
            on: the first probe after that long without traffic, then one every
            third of it (at least 1 s), :data:`KEEPALIVE_PROBES` in all.
    """

    nodelay: bool = True
    keepalive: int | None = None

    def apply(self, sock: socket.socket) -> None:
        """Set the options on the accepted TCP socket ``sock``.

        Raises:
            OSError: the kernel refused one.
        """
        if self.nodelay:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        idle = self.keepalive
        if idle is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            idle_option = getattr(socket, "TCP_KEEPIDLE", None) or getattr(
                socket, "TCP_KEEPALIVE", None
            )  # (macOS names it TCP_KEEPALIVE)
            if idle_option is not None:
                sock.setsockopt(socket.IPPROTO_TCP, idle_option, idle)
            if hasattr(socket, "TCP_KEEPINTVL"):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, max(1, idle // 3))
            if hasattr(socket, "TCP_KEEPCNT"):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, KEEPALIVE_PROBES)

    def apply_after_transport(self, sock: Any) -> None:
        """Undo what an event loop set on its own when it made the socket's transport.

        uvloop turns ``TCP_NODELAY`` on for every TCP transport; with
        ``nodelay=False`` it is turned off again here. Errors are ignored
        (the connection may already be gone).
        """
        if not self.nodelay and sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 0)
            except OSError:
                pass


class FastListener(anyio.abc.SocketListener):
    """What the fast listeners of both backends share: the socket, its attributes, options.

    Each wraps an anyio listener of one socket (which it closes) and accepts
    from that socket directly; its streams tell ``poll`` about every read
    that brings bytes (busy polling).
    """

    def __init__(
        self, listener: anyio.abc.Listener[Any], poll: Callable[[], None] | None = None
    ) -> None:
        self._listener = listener
        self._sock: socket.socket = listener.extra(SocketAttribute.raw_socket)
        self._poll = poll
        self._tcp = self._sock.family in (socket.AF_INET, socket.AF_INET6)
        self._closed = False
        self._streak = 0  # accepts in a row that did not wait
        self.options = SocketOptions()
        """What :meth:`_configure` sets on accepted TCP sockets (the server sets it once)."""

    @property
    def _raw_socket(self) -> socket.socket:
        return self._sock

    @property
    def extra_attributes(self) -> Mapping[Any, Callable[[], Any]]:
        sock = self._sock
        return socket_attributes(sock, convert_address(sock.getsockname()), None)

    def _configure(self, client: socket.socket) -> None:
        """An accepted socket: non-blocking, and on TCP the :attr:`options` (``TCP_NODELAY``...)."""
        client.setblocking(False)
        if self._tcp:  # (asyncio sets TCP_NODELAY only for sockets made with proto=IPPROTO_TCP)
            self.options.apply(client)
