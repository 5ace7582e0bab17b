"""The private asyncio APIs tcpkit uses, and their public fallbacks.

On asyncio's own selector event loop, ``loop._make_socket_transport(sock,
protocol)`` builds a socket transport synchronously: an accepted connection
is ready without waiting a loop turn, which the public
``loop.connect_accepted_socket`` costs (it awaits ``connection_made``). That
turn is measurable in connects per second, so tcpkit uses the private method
where it exists, and the public coroutine everywhere else (uvloop, another
loop, or a Python that drops the method): :func:`socket_transport_maker`
says which.

A data callback (``Transport.set_data_callback``) runs a turn in the
protocol's ``data_received``, outside any task. :func:`as_task` runs it *as*
the connection's task, with asyncio's private ``_enter_task``/``_leave_task``
(what asyncio's own task steps and eager tasks do): ``current_task()`` is that
task, so anyio's cancel scopes and an ``async def`` handler started there
work as in the task. Without them (another Python), the callback runs as no
task, and ``async def`` handlers are left to the task.

The tests check both paths of each on every Python the package claims.
"""

from __future__ import annotations

import asyncio
import asyncio.selector_events
import asyncio.tasks
import socket
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["TransportMaker", "as_task", "can_run_as_task", "socket_transport_maker"]

T = TypeVar("T")
R = TypeVar("R")

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


# Not in the type stubs: looked up by name, here only. None on a Python without them.
_enter_task: Callable[[asyncio.AbstractEventLoop, asyncio.Task[Any]], None] | None = getattr(
    asyncio.tasks, "_enter_task", None
)
_leave_task: Callable[[asyncio.AbstractEventLoop, asyncio.Task[Any]], None] | None = getattr(
    asyncio.tasks, "_leave_task", None
)


def can_run_as_task() -> bool:
    """Whether :func:`as_task` can run a function as a task on this Python."""
    return _enter_task is not None and _leave_task is not None


def as_task(func: Callable[[T], R]) -> Callable[[T], R] | None:
    """``func`` made to run as the current task, from a loop callback; ``None`` if it cannot be.

    Call it in the task. While the function returned runs, ``current_task()``
    is that task (it must not be running then: a callback runs between steps).
    """
    enter, leave = _enter_task, _leave_task
    if enter is None or leave is None:  # (can_run_as_task() is False)
        return None
    loop = asyncio.get_running_loop()
    task = asyncio.current_task(loop)
    if task is None:
        return None

    def run(arg: T) -> R:
        enter(loop, task)
        try:
            return func(arg)
        finally:
            leave(loop, task)

    return run
