"""The fast listener of the running backend, and the background task it needs.

A plain anyio socket listener is wrapped in tcpkit's own
(:mod:`tcpkit._asyncio_stream` on asyncio and uvloop,
:mod:`tcpkit._trio_stream` on trio), whose streams are transports with an
inline mode. On trio that mode needs the listener's reactor task, started
next to the accept loop. Any other listener (a memory listener, a user's) is
served as it is.
"""

from __future__ import annotations

import asyncio
from abc import abstractmethod
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio
import anyio.abc
from anyio.abc import SocketAttribute

from ._busy_poll import BusyPoller
from ._socket import SocketOptions

__all__ = ["AcceptingListener", "ServedListener", "accepts", "serve_listener"]

T_co = TypeVar("T_co", covariant=True)


class AcceptingListener(anyio.abc.Listener[T_co]):
    """A listener that hands out one connection per ``accept()`` (as a socket's does).

    The server accepts from such a listener only when it has a free slot
    (``max_connections``), so waiting clients stay in its backlog; any other
    anyio listener is run with its ``serve()``.
    """

    @abstractmethod
    async def accept(self) -> T_co:
        """Wait for the next connection and return it.

        Raises:
            anyio.ClosedResourceError: the listener was closed.
        """

    async def serve(
        self,
        handler: Callable[[T_co], Any],
        task_group: anyio.abc.TaskGroup | None = None,
    ) -> None:
        async with anyio.create_task_group() as tg:
            group = task_group or tg
            while True:
                group.start_soon(handler, await self.accept())


def accepts(
    listener: anyio.abc.Listener[anyio.abc.ByteStream],
) -> anyio.abc.SocketListener | AcceptingListener[anyio.abc.ByteStream] | None:
    """``listener`` if it can ``accept()`` one connection at a time, else ``None``."""
    if isinstance(listener, (anyio.abc.SocketListener, AcceptingListener)):
        return listener  # pyright: ignore[reportUnknownVariableType]
    return None


@dataclass(frozen=True)
class ServedListener:
    """A listener to accept from, and a task to run beside it (or ``None``).

    The task is started with ``TaskGroup.start`` before the first accept (it
    takes ``task_status``).
    """

    listener: anyio.abc.Listener[anyio.abc.ByteStream]
    background: Callable[..., Coroutine[Any, Any, None]] | None = None


def serve_listener(
    listener: anyio.abc.Listener[anyio.abc.ByteStream],
    poller: BusyPoller | None = None,
    options: SocketOptions | None = None,
) -> ServedListener:
    """``listener`` wrapped in the fast listener of the running backend, if it is a socket's.

    Its streams tell ``poller`` about every read that brings bytes, and its
    accepted TCP sockets get ``options`` (default: ``TCP_NODELAY`` only).
    """
    if listener.extra(SocketAttribute.raw_socket, None) is None:
        return ServedListener(listener)
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        from ._asyncio_stream import AsyncioSocketListener

        fast_asyncio = AsyncioSocketListener(listener, poller)
        if options is not None:
            fast_asyncio.options = options
        return ServedListener(fast_asyncio)
    try:
        import trio

        trio.lowlevel.current_task()
    except (ImportError, RuntimeError):
        return ServedListener(listener)
    from ._trio_stream import TrioSocketListener

    fast = TrioSocketListener(listener, poller)
    if options is not None:
        fast.options = options
    return ServedListener(fast, fast.run_reactor)
