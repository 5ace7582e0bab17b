"""What tcpkit's own socket streams (asyncio and trio) share: their attributes."""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

from anyio.abc import SocketAttribute

__all__ = ["convert_address", "listener_attributes", "socket_attributes"]


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


def listener_attributes(sock: socket.socket) -> dict[Any, Callable[[], Any]]:
    """The ``extra_attributes`` of a listening socket."""
    return socket_attributes(sock, sock.family, convert_address(sock.getsockname()), None)
