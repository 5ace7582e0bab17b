"""What tcpkit's own socket streams (asyncio and trio) share: attributes, the inline interface."""

from __future__ import annotations

import socket
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

from anyio.abc import SocketAttribute

__all__ = ["InlineStream", "convert_address", "socket_attributes"]


class InlineStream(ABC):
    """A stream that can hand arriving bytes to a callback instead of a waiting ``receive``.

    Both fast streams are one (``tcpkit._asyncio_stream``,
    ``tcpkit._trio_stream``); the connection runs a turn in the callback
    while its task waits in ``receive``, so a read costs no task switch.
    (A base class, not a ``Protocol``: ``isinstance`` on a runtime-checkable
    protocol costs microseconds, per connection.)
    """

    __slots__ = ()

    @abstractmethod
    def set_data_callback(self, callback: Callable[[bytes], bool] | None) -> None:
        """Offer arriving bytes to ``callback`` first (it returns ``True`` if it consumed them).

        It is called only while a task waits in ``receive`` with nothing
        buffered; ``None`` stops it.
        """

    @abstractmethod
    def kick(self) -> None:
        """Make the waiting (or next) ``receive`` return ``b""``: the callback needs its task."""

    @abstractmethod
    def write_nowait(self, data: bytes) -> bool:
        """Send ``data`` without waiting; ``False`` if part of it waits for ``send(b"")``."""


def convert_address(address: Any) -> Any:
    """anyio's form of a socket address: IPv6 as ``(host, port)``, others unchanged."""
    if isinstance(address, tuple) and len(address) > 2:  # pyright: ignore[reportUnknownArgumentType]
        return address[:2]  # pyright: ignore[reportUnknownVariableType]
    return address  # pyright: ignore[reportUnknownVariableType]


def socket_attributes(
    raw: socket.socket | None, family: int, local: Any, peer: Any
) -> dict[Any, Callable[[], Any]]:
    """The ``extra_attributes`` of a connected stream (addresses already converted)."""
    attributes: dict[Any, Callable[[], Any]] = {
        SocketAttribute.family: lambda: family,
        SocketAttribute.local_address: lambda: local,
        SocketAttribute.raw_socket: lambda: raw,
    }
    if peer is not None:
        attributes[SocketAttribute.remote_address] = lambda: peer
    if family in (socket.AF_INET, socket.AF_INET6):
        if isinstance(local, tuple):
            local_port = local[1]  # pyright: ignore[reportUnknownVariableType]
            attributes[SocketAttribute.local_port] = lambda: local_port  # pyright: ignore[reportUnknownLambdaType]
        if isinstance(peer, tuple):
            remote_port = peer[1]  # pyright: ignore[reportUnknownVariableType]
            attributes[SocketAttribute.remote_port] = lambda: remote_port  # pyright: ignore[reportUnknownLambdaType]
    return attributes
