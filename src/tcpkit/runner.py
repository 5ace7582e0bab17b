"""Running a server: the backend choice, signals, and the drain timeout.

``App.run`` and the CLI end up here. Signals are received with anyio's
``open_signal_receiver`` and only on the main thread; on trio this also keeps
Ctrl-C from arriving as a ``KeyboardInterrupt`` inside an exception group.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio
import anyio.abc

from .server import ListenConfig, Server

__all__ = ["run", "serve_until_stopped"]

logger = logging.getLogger("tcpkit.server")

In = TypeVar("In")
Out = TypeVar("Out")

BACKENDS = ("asyncio", "trio")


def run(
    main: Callable[..., Awaitable[None]],
    *,
    backend: str = "asyncio",
    backend_options: dict[str, Any] | None = None,
    **kwargs: Any,
) -> None:
    """Run ``main(**kwargs, handle_signals=True)`` on the chosen backend; block until done.

    Raises:
        ValueError: an unknown backend.
        ServerError: the server could not start.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    options = dict(backend_options or {})
    if backend == "trio" and options.pop("use_uvloop", False):
        raise ValueError("use_uvloop applies to the asyncio backend only")

    async def entry() -> None:
        await main(handle_signals=True, **kwargs)

    anyio.run(entry, backend=backend, backend_options=options)


async def serve_until_stopped(
    server: Server[In, Out],
    listen: ListenConfig,
    *,
    handle_signals: bool,
    drain_timeout: float,
    task_status: anyio.abc.TaskStatus[Server[In, Out]] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until ``server.shutdown()`` completes (or a signal stops it)."""
    async with server.running(listen):
        task_status.started(server)
        async with anyio.create_task_group() as tg:
            if handle_signals and threading.current_thread() is threading.main_thread():
                await tg.start(_watch_signals, server, drain_timeout)
            await server.wait_stopped()
            tg.cancel_scope.cancel()


async def _watch_signals(
    server: Server[Any, Any],
    drain_timeout: float,
    *,
    task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        task_status.started()
        async for signum in signals:
            name = signal.Signals(signum).name
            if not server.closing:
                logger.info("%s: %s received, shutting down (again to force)", server.name, name)
                server.start_shutdown(grace=0, drain_timeout=drain_timeout)
            else:
                logger.warning("%s: %s received again, aborting connections", server.name, name)
                server.abort()
