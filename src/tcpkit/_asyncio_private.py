"""The one private asyncio API tcpkit uses, and its public fallback.

On asyncio's own selector event loop, ``loop._make_socket_transport(sock,
protocol)`` builds a socket transport synchronously: an accepted connection
is ready without waiting a loop turn, which the public
``loop.connect_accepted_socket`` costs (it awaits ``connection_made``). That
turn is measurable in connects per second, so tcpkit uses the private method
where it exists, and the public coroutine everywhere else (uvloop, another
loop, or a Python that drops the method): :func:`socket_transport_maker`
says which. The tests check both paths on every Python the package claims.
"""

from __future__ import annotations

import asyncio
import asyncio.selector_events
import socket
from collections.abc import Callable

__all__ = ["TransportMaker", "socket_transport_maker"]

TransportMaker = Callable[[socket.socket, asyncio.BaseProtocol], asyncio.Transport]
"""Makes a socket transport for an accepted socket and a protocol, without waiting."""


def socket_transport_maker(loop: asyncio.AbstractEventLoop) -> TransportMaker | None:
    """The loop's synchronous transport maker, or ``None``: use ``connect_accepted_socket``.

    It is the private ``_make_socket_transport`` of asyncio's selector loop
    (``connection_made`` then runs first thing on the next loop turn, before
    any task can use the transport).
    """
    if not isinstance(loop, asyncio.selector_events.BaseSelectorEventLoop):
        return None
    # Not in the type stubs: looked up by name, here only. None on a Python without it.
    make: TransportMaker | None = getattr(loop, "_make_socket_transport", None)
    return make
