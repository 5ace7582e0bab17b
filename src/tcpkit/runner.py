"""Running a server: the backend choice, signals, the drain, the startup line.

``App.run``, ``App.serve`` and the CLI end up here. Signals are received with
anyio's ``open_signal_receiver`` and only on the main thread; on trio this
also keeps Ctrl-C from arriving as a ``KeyboardInterrupt`` inside an
exception group.

The first SIGINT or SIGTERM starts a drain: the listeners close, every
connection is shut down gracefully, and what they still have to send may
take ``drain_timeout`` seconds; the log says how many connections and bytes
it waits for, and for how long. A second signal aborts what is left at once
(the CLI then exits non-zero).
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio
import anyio.abc

from .exceptions import ServerError
from .server import ListenConfig, Server

__all__ = [
    "BACKENDS",
    "Stopper",
    "backend_description",
    "require_backend",
    "run",
    "serve_until_stopped",
]

logger = logging.getLogger("tcpkit.server")

In = TypeVar("In")
Out = TypeVar("Out")

BACKENDS = ("asyncio", "trio")

_PROGRESS_EVERY = 5.0  # seconds between "still draining" lines


def require_backend(backend: str, use_uvloop: bool = False) -> None:
    """Check that the chosen event loop can be imported.

    Raises:
        ValueError: an unknown backend, or uvloop with trio.
        ServerError: trio or uvloop is not installed: the message names the
            ``pip install`` line (``'tcpkit[trio]'``, ``'tcpkit[uvloop]'``).
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if backend == "trio" and use_uvloop:
        raise ValueError("use_uvloop applies to the asyncio backend only")
    module = "trio" if backend == "trio" else "uvloop" if use_uvloop else None
    if module is None:
        return
    try:
        __import__(module)
    except ImportError as exc:
        what = "the trio backend" if module == "trio" else "uvloop"
        raise ServerError(
            f"{what} needs the {module} package, which cannot be imported ({exc}): "
            f"pip install 'tcpkit[{module}]'"
        ) from None


def run(
    main: Callable[..., Awaitable[None]],
    *,
    backend: str = "asyncio",
    backend_options: dict[str, Any] | None = None,
    **kwargs: Any,
) -> None:
    """Run ``main(**kwargs, handle_signals=True)`` on the chosen backend; block until done.

    If the program configured no logging, tcpkit's INFO lines (the startup
    line, the drain) go to stderr meanwhile (see :mod:`tcpkit.logconfig`).

    Raises:
        ValueError: an unknown backend.
        ServerError: the server could not start, or the backend is not installed.
    """
    from .logconfig import default_logging

    options = dict(backend_options or {})
    require_backend(backend, bool(options.get("use_uvloop")))
    if backend == "trio":
        options.pop("use_uvloop", None)

    async def entry() -> None:
        await main(handle_signals=True, **kwargs)

    with default_logging():
        anyio.run(entry, backend=backend, backend_options=options)


def backend_description() -> str:
    """``asyncio``, ``asyncio+uvloop`` or ``trio``: the running event loop."""
    import asyncio

    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # anyio runs on trio otherwise
        return "trio"
    return "asyncio+uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"


def describe_addresses(server: Server[Any, Any], *, tls: bool) -> str:
    """``tcp 127.0.0.1:8000, [::1]:8000`` or ``unix:/run/x.sock``, as the startup line says."""
    parts: list[str] = []
    for address in server.addresses:
        if isinstance(address, str):
            parts.append(f"unix:{address}")
        elif ":" in address[0]:
            parts.append(f"[{address[0]}]:{address[1]}")
        else:
            parts.append(f"{address[0]}:{address[1]}")
    where = ", ".join(parts)
    if server.port is not None:
        where = f"{'tls' if tls else 'tcp'} {where}"
    return where


async def serve_until_stopped(
    server: Server[In, Out],
    listen: ListenConfig,
    *,
    handle_signals: bool,
    drain_timeout: float,
    task_status: anyio.abc.TaskStatus[Server[In, Out]] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until ``server.shutdown()`` completes (or a signal stops it).

    Logs the startup line (``NAME running on tcp HOST:PORT [backend B]``) on
    ``tcpkit.server`` once every listener is bound.
    """
    async with server.running(listen):
        signals = handle_signals and threading.current_thread() is threading.main_thread()
        logger.info(
            "%s running on %s [backend %s]%s",
            server.name,
            describe_addresses(server, tls=listen.ssl is not None),
            backend_description(),
            " (Press CTRL+C to quit)" if signals else "",
        )
        task_status.started(server)
        async with anyio.create_task_group() as tg:
            stopper = Stopper(server, drain_timeout, tg)
            if signals:
                await tg.start(stopper.watch_signals)
            await server.wait_stopped()
            stopper.finished()
            tg.cancel_scope.cancel()


class Stopper:
    """Stops a server on signals: the first drains, the next aborts.

    Used by ``app.run()``/``app.serve(handle_signals=True)`` and by the CLI
    (which also drains for a reload and on ``tcpkit ctl ... drain``).
    """

    def __init__(
        self,
        server: Server[Any, Any],
        drain_timeout: float,
        tg: anyio.abc.TaskGroup,
    ) -> None:
        self.server = server
        self.drain_timeout = drain_timeout
        self.forced = False
        """True once a drain was cut short by a second signal (the CLI then exits 1)."""
        self.draining = False
        self._tg = tg
        self._started = 0.0

    async def watch_signals(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """SIGINT/SIGTERM: :meth:`drain` the first time, :meth:`force` after that."""
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            task_status.started()
            async for signum in signals:
                name = signal.Signals(signum).name
                if not self.draining:
                    self.drain(f"{name} received", again=name)
                else:
                    self.force(f"{name} received again")

    def drain(self, why: str, *, again: str | None = None, verb: str = "shutting down") -> None:
        """Begin the graceful stop (once): listeners close, connections flush and close.

        Logs what it waits for (connections, queued bytes) and for how long,
        then every few seconds while it waits.
        """
        if self.draining:
            return
        self.draining = True
        server = self.server
        conns = server.connections
        queued = sum(conn.pending_output for conn in conns)
        hint = f"; {again} again to force" if again else ""
        if server.connection_count:
            logger.info(
                "%s: %s, %s: stopped accepting; waiting for %d connection(s) to finish "
                "sending (%d B queued), at most %g s before aborting them%s",
                server.name,
                why,
                verb,
                server.connection_count,
                queued,
                self.drain_timeout,
                hint,
            )
        else:
            logger.info("%s: %s, %s: no connection to wait for%s", server.name, why, verb, hint)
        server.start_shutdown(grace=0, drain_timeout=self.drain_timeout)
        self._started = anyio.current_time()
        self._tg.start_soon(self._progress)

    def finished(self) -> None:
        """Log how long the drain took (call once the server has stopped)."""
        if self.draining:
            took = anyio.current_time() - self._started
            logger.info("%s: stopped after %.1f s", self.server.name, took)

    async def _progress(self) -> None:
        server = self.server
        started = self._started
        while True:
            with anyio.move_on_after(_PROGRESS_EVERY):
                await server.wait_stopped()
                return
            left = self.drain_timeout - (anyio.current_time() - started)
            logger.info(
                "%s: still waiting for %d connection(s) (%d B queued)%s",
                server.name,
                server.connection_count,
                sum(conn.pending_output for conn in server.connections),
                f", {left:.0f} s before aborting them" if left > 0 else "",
            )

    def force(self, why: str) -> None:
        """Abort every connection at once (pending output is discarded)."""
        first = not self.draining
        if first:
            self._started = anyio.current_time()
        self.forced = True
        self.draining = True
        logger.warning(
            "%s: %s, aborting %d connection(s)", self.server.name, why, self.server.connection_count
        )
        self.server.abort()
        if first:  # nothing runs the shutdown yet: listeners, on_stopped
            self.server.start_shutdown(grace=0, drain_timeout=0)
