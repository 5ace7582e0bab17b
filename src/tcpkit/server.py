"""The master listening session: listeners, accept loops, connection bookkeeping.

One task group per server holds one accept loop per listener, and a task
pool inside it (see ``_tasks``: native tasks, cheaper to start) one task per
connection. The server serves any anyio ``Listener`` of byte streams: the
sockets it binds (through the backend's fast listener, see ``_listeners``),
sockets it is given, and listeners it is given (``tcpkit.testing``'s
in-memory one, or a user's).

An accept loop waits for a free slot *before* calling ``accept`` (so with
``max_connections`` reached, waiting clients stay in the kernel backlog),
backs off on resource exhaustion (EMFILE and friends, logged once per
burst), and ignores per-connection accept failures.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import socket
import ssl as _ssl
import sys
from collections.abc import AsyncGenerator, Awaitable, Callable, Generator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import anyio
import anyio.abc
from anyio.abc import SocketAttribute

from . import _setup
from ._busy_poll import busy_poller
from ._limits import BurstLog, PerIpLimit
from ._listeners import AcceptingListener, accepts, serve_listener
from ._socket import SocketOptions
from ._tasks import TaskPool, known_async_library, open_task_pool
from ._watchdog import Watchdog
from .connection import Connection, ServerContext, current_connection
from .exceptions import ConnectionClosed, RegistrationError, ServerError
from .handlers import call
from .observer import Observer, Observers, Rejection, peer_of
from .settings import Handlers, Settings
from .stats import ServerStats

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

__all__ = ["ListenConfig", "Server"]

In = TypeVar("In")
Out = TypeVar("Out")

logger = logging.getLogger("tcpkit.server")

_PER_CONNECTION_ERRNOS = frozenset(
    {errno.ECONNABORTED, errno.ECONNRESET, errno.EPROTO, errno.EPERM, errno.ETIMEDOUT}
)  # the client went away before accept returned: ignore quietly
_BACKOFF_START = 0.1
_BACKOFF_MAX = 1.0


@dataclass(frozen=True)
class ListenConfig:
    """Where and how to listen (the arguments of ``run``/``serve``/``start``)."""

    host: str | Sequence[str] | None = "127.0.0.1"
    port: int | None = 0
    uds: str | None = None
    ssl: _ssl.SSLContext | None = None
    reuse_port: bool = False
    backlog: int = 1024
    uds_mode: int | None = None
    sockets: Sequence[socket.socket] = ()
    """Already bound and listening sockets to serve too (the ``--workers`` supervisor's)."""
    listeners: Sequence[anyio.abc.Listener[anyio.abc.ByteStream]] = ()
    """anyio listeners to serve too (e.g. ``tcpkit.testing``'s in-memory one)."""


@contextmanager
def _unwrap_single() -> Generator[None, None, None]:
    """Re-raise a lone exception from a task group as itself, not as a group.

    An exception raised in the body of ``async with app.start()`` then reaches
    the caller unchanged, as it would without tcpkit's task group around it.
    """
    try:
        yield
    except BaseExceptionGroup as group:
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise


def _find_errno(exc: BaseException) -> int | None:
    """The errno behind ``exc`` (trio wraps accept errors in BrokenResourceError)."""
    seen: BaseException | None = exc
    for _ in range(4):
        if seen is None:
            return None
        if isinstance(seen, OSError) and seen.errno is not None:
            return seen.errno
        seen = seen.__cause__ or seen.__context__
    return None


def describe_address(address: tuple[str, int] | str) -> str:
    """``127.0.0.1:80``, ``[::1]:80`` or ``unix:/path``."""
    if isinstance(address, str):
        return f"unix:{address}"
    if ":" in address[0]:
        return f"[{address[0]}]:{address[1]}"
    return f"{address[0]}:{address[1]}"


class Server(Generic[In, Out]):
    """A running server (POE's master listening session and its HEAP).

    Obtained from ``async with app.start(...) as server``, passed to
    ``on_started``/``on_stopped``/``on_listen_error``, and reachable from every
    connection as ``conn.server``.
    """

    def __init__(
        self, settings: Settings, handlers: Handlers, observers: Sequence[Observer] = ()
    ) -> None:
        self.name = settings.name
        self.stats = ServerStats()
        self.addresses: list[tuple[str, int] | str] = []
        self._settings = settings
        self._handlers = handlers
        self._observer = Observers(observers)
        self._max_connections = settings.max_connections
        self._connections: dict[int, Connection[In, Out]] = {}
        self._next_id = 1
        self._slots: int = 0  # connections accepted or about to be (gates accept)
        self._listeners: list[anyio.abc.Listener[anyio.abc.ByteStream]] = []  # bound or given
        self._accept_scopes: set[anyio.CancelScope] = set()  # scopes of waiting accept loops
        self._slot_event = anyio.Event()
        self._all_done = anyio.Event()
        self._closing = False
        self._stopped = False
        self._stopped_event = anyio.Event()
        self._grace_expired = False
        self._tg: anyio.abc.TaskGroup | None = None
        self._context: ServerContext | None = None  # while serving
        self._ssl: _ssl.SSLContext | None = None
        self._refusals = BurstLog(self.name, "refusals of untrusted PROXY peers")
        self._owned_paths: list[str] = []  # Unix socket files to remove at the end
        limit = settings.max_connections_per_ip
        self._per_ip = PerIpLimit(limit) if limit is not None else None
        self._per_ip_log = BurstLog(self.name, "refusals over max_connections_per_ip")

    # -- POE HEAP / public state --------------------------------------------

    @property
    def settings(self) -> Settings:
        """The settings this server runs with."""
        return self._settings

    @property
    def handlers(self) -> Handlers:
        """The handlers this server runs."""
        return self._handlers

    @property
    def port(self) -> int | None:
        """The first bound TCP port (``None`` if only Unix sockets are bound)."""
        for address in self.addresses:
            if isinstance(address, tuple):
                return address[1]
        return None

    @property
    def connection_count(self) -> int:
        """Open connections, from accept to close (setup included)."""
        return self.stats.current

    @property
    def connections(self) -> list[Connection[In, Out]]:
        """The live connections that completed their setup."""
        return list(self._connections.values())

    @property
    def max_connections(self) -> int | None:
        """The concurrency limit (``None``: unlimited; ``0``: not accepting)."""
        return self._max_connections

    @property
    def closing(self) -> bool:
        """True once :meth:`shutdown` has begun."""
        return self._closing

    def describe_addresses(self) -> list[str]:
        """The bound addresses as text: ``127.0.0.1:80``, ``[::1]:80``, ``unix:/path``."""
        return [describe_address(address) for address in self.addresses]

    def set_max_connections(self, n: int | None) -> None:
        """Change the concurrency limit at run time (POE ``set_concurrency``).

        ``None`` is unlimited and ``0`` stops accepting. At the limit the
        server stops calling ``accept``: waiting clients stay in the kernel
        backlog and are accepted, in order, as slots free up. Lowering the limit
        closes no connection. Never blocks.

        Raises:
            ValueError: ``n`` is negative.
        """
        if n is not None and n < 0:
            raise ValueError("max_connections must be None or >= 0")
        self._max_connections = n
        if n is not None and self._slots >= n:
            for scope in list(self._accept_scopes):
                scope.cancel()  # an accept already waiting must not take a slot
        self._wake_acceptors()

    def get_connection(self, conn_id: int) -> Connection[In, Out] | None:
        """The live connection with id ``conn_id``, or ``None``."""
        return self._connections.get(conn_id)

    def post(self, conn_id: int, event: str, *args: Any) -> bool:
        """Queue the custom event ``event`` for connection ``conn_id``.

        Returns ``False`` if there is no such live connection (it ended, or
        never was): a connection can end at any moment, so that is not an
        error. Never blocks.

        Raises:
            RegistrationError: no handler is registered for ``event``, whether
                or not the connection exists (a mistake in the program, not a
                race).
        """
        if event not in self._handlers.events:
            raise RegistrationError(f"no handler registered for event {event!r}")
        conn = self._connections.get(conn_id)
        if conn is None:
            return False
        return conn.emit(event, *args)

    def broadcast(self, message: Out, *, exclude: Connection[In, Out] | None = None) -> int:
        """``put`` ``message`` on every live connection; return how many got it.

        Connections that are shutting down or closed (or that overflow) are
        skipped. Never blocks.
        """
        sent = 0
        for conn in list(self._connections.values()):
            if conn is exclude or conn.shutting_down:
                continue
            try:
                conn.put(message)
            except ConnectionClosed:
                continue
            sent += 1
        return sent

    # -- lifecycle ---------------------------------------------------------

    async def shutdown(
        self, grace: float | None = None, *, drain_timeout: float | None = None
    ) -> None:
        """Stop accepting, let connections finish, and return once all have ended.

        The listening sockets are closed at once (new connects are refused).
        With ``grace`` a number, after that many seconds every remaining
        connection is shut down as by ``conn.shutdown()``: queued output is
        still delivered. With ``drain_timeout`` too, connections still flushing
        that much later are closed at once. ``on_stopped`` runs last.

        Awaited from a handler of one of this server's connections (a "quit"
        command in ``on_input``, POE's shutdown from ``on_disconnect``), it
        returns once every *other* connection has ended: the calling
        connection is shut down like the others and ends after its handler
        returns, then ``on_stopped`` runs, and ``serve()`` or the
        ``app.start()`` block can finish.
        """
        me = current_connection()
        if me is not None and me.server is self:
            me.shutdown()
            self.start_shutdown(grace, drain_timeout=drain_timeout)
            await self._wait_connections(keep=1)
            return
        await self._shutdown(grace, drain_timeout)

    async def _shutdown(self, grace: float | None, drain_timeout: float | None) -> None:
        self._begin_close()
        await self._close_listeners()
        if grace is not None:
            with anyio.move_on_after(grace):
                await self._wait_connections()
            self._grace_expired = True
            for conn in self.connections:
                conn.shutdown()
            if drain_timeout is not None:
                with anyio.move_on_after(drain_timeout):
                    await self._wait_connections()
                if self.stats.current:
                    logger.warning(
                        "%s: drain timeout, aborting %d connection(s)",
                        self.name,
                        self.stats.current,
                    )
                    self.abort()
        await self._wait_connections()
        await self._run_stopped()

    def start_shutdown(
        self, grace: float | None = None, *, drain_timeout: float | None = None
    ) -> None:
        """Begin :meth:`shutdown` in the background and return at once (never blocks)."""
        if self._tg is None:
            return
        self._begin_close()
        self._tg.start_soon(self._shutdown_task, grace, drain_timeout)

    async def _shutdown_task(self, grace: float | None, drain_timeout: float | None) -> None:
        with anyio.CancelScope(shield=True):
            await self._shutdown(grace, drain_timeout)

    def abort(self) -> None:
        """Close every connection at once (pending output is discarded)."""
        self._begin_close()
        self._grace_expired = True
        for conn in self.connections:
            conn.close()

    def _begin_close(self) -> None:
        if self._closing:
            return
        self._closing = True
        for scope in list(self._accept_scopes):
            scope.cancel()
        self._wake_acceptors()
        if self._tg is not None:
            self._tg.start_soon(self._close_listeners)

    async def _close_listeners(self) -> None:
        """Close every listener and remove the socket files this server created (once)."""
        listeners, self._listeners = self._listeners, []
        for listener in listeners:
            try:
                await listener.aclose()
            except (OSError, anyio.BrokenResourceError):
                pass
        paths, self._owned_paths = self._owned_paths, []
        for path in paths:
            try:
                os.unlink(path)
            except OSError:
                pass

    async def _wait_connections(self, keep: int = 0) -> None:
        """Wait until at most ``keep`` connections are left."""
        while self.stats.current > keep:
            if self._all_done.is_set():
                self._all_done = anyio.Event()
            await self._all_done.wait()

    async def wait_stopped(self) -> None:
        """Wait until the server has fully stopped (``on_stopped`` has run)."""
        await self._stopped_event.wait()

    # -- binding -----------------------------------------------------------

    async def _bind(self, listen: ListenConfig) -> None:
        """Bind every listener of ``listen``: TCP addresses, a Unix socket, given sockets.

        Host names are resolved once, here (in a worker thread). ``host=None``
        is every interface, IPv4 and IPv6 (one dual-stack socket where
        possible). With ``port=0`` the OS picks one port and every TCP address
        listens on it. A Unix socket file left by a dead server is replaced; one
        in use by a live server is not. On failure nothing stays bound (given
        ``sockets`` are closed too: the server owns them).

        Raises:
            ServerError: a host name could not be resolved, an address could not
                be bound (in use, not available, bad port), or the Unix socket
                path is in use by a running server or is not a socket.
        """
        from . import _binding

        self._ssl = listen.ssl
        given = list(listen.sockets)
        socks: list[socket.socket] = []
        try:
            if listen.port is not None or listen.uds is not None:
                socks = await anyio.to_thread.run_sync(
                    functools.partial(
                        _binding.open_sockets,
                        listen.host,
                        listen.port,
                        listen.uds,
                        uds_mode=listen.uds_mode,
                        reuse_port=listen.reuse_port,
                        backlog=listen.backlog,
                    )
                )
            socks += given
            given = []
            while socks:
                bound = await anyio.abc.SocketListener.from_socket(socks[0])  # owns it now
                socks.pop(0)
                self._listeners.append(bound)
                local = bound.extra(SocketAttribute.local_address)
                if isinstance(local, tuple):
                    self.addresses.append((str(local[0]), int(local[1])))
                else:
                    self.addresses.append(os.fsdecode(local))
            if listen.uds is not None:
                self._owned_paths.append(listen.uds)
        except OSError as exc:
            for sock in socks + given:
                sock.close()
            for listener in self._listeners:
                await listener.aclose()
            self._listeners.clear()
            self.addresses.clear()
            if not isinstance(exc, _binding.BindError):
                exc = _binding.BindError("a given socket", exc)
            error = ServerError(str(exc))
            if self._handlers.on_listen_error is not None:  # else the caller reports it
                await self._listen_error(error)
            raise error from exc
        self._listeners.extend(listen.listeners)

    async def _listen_error(self, exc: BaseException) -> None:
        h = self._handlers.on_listen_error
        if h is None:
            logger.error("%s: %s", self.name, exc)
            return
        try:
            await call(h, self, exc)
        except Exception as inner:
            logger.exception("%s: on_listen_error raised", self.name, exc_info=inner)

    # -- running -----------------------------------------------------------

    @asynccontextmanager
    async def running(
        self, listen: ListenConfig, drain_timeout: float | None = 10.0
    ) -> AsyncGenerator[Server[In, Out], None]:
        """Bind, start accepting, yield; on exit shut down (grace 0) and stop.

        What ``app.start()`` and ``app.serve()`` use. On exit, connections
        still flushing after ``drain_timeout`` seconds (clients that stopped
        reading) are closed at once.

        Raises:
            ServerError: an address could not be bound.
        """
        await self._bind(listen)  # before the task group: a ServerError stays plain
        try:
            with _unwrap_single(), known_async_library():
                async with anyio.create_task_group() as tg, open_task_pool(tg) as pool:
                    self._tg = tg
                    self._context = self._serving_context(tg, pool)
                    await self._start_accepting(tg)
                    try:
                        yield self
                    finally:
                        with anyio.CancelScope(shield=True):
                            await self._shutdown(0, drain_timeout)
                        tg.cancel_scope.cancel()
        finally:
            self._tg = None
            self._context = None
            with anyio.CancelScope(shield=True):
                await self._run_stopped()

    def _serving_context(self, tg: anyio.abc.TaskGroup, pool: TaskPool) -> ServerContext:
        """What connections get from the running server (and its watchdog's task, if any)."""
        settings = self._settings
        watchdog = Watchdog(settings, self.stats) if settings.watched else None
        if watchdog is not None:
            tg.start_soon(watchdog.run)
        return ServerContext(
            self,
            settings,
            self._handlers,
            self.stats,
            self._observer,
            pool,
            watchdog,
            self._started_ended,
        )

    async def _start_accepting(self, tg: anyio.abc.TaskGroup) -> None:
        poller = busy_poller(self._settings.busy_poll, self.stats)
        if poller is not None:
            tg.start_soon(poller.run)
        options = SocketOptions(self._settings.tcp_nodelay, self._settings.tcp_keepalive)
        served = [serve_listener(listener, poller, options) for listener in self._listeners]
        self._listeners = [s.listener for s in served]
        for s in served:
            if s.background is not None:  # (its connections are accepted once it runs)
                await tg.start(s.background)
            tg.start_soon(self._serve_listener, s.listener)
        if self._handlers.on_started is not None:
            await call(self._handlers.on_started, self, *self._settings.listener_args)
        if self.addresses:
            # (INFO is the runner's startup line: run, serve, the CLI)
            logger.debug("%s: listening on %s", self.name, ", ".join(self.describe_addresses()))

    async def _run_stopped(self) -> None:
        """Run on_stopped once; every caller returns after it has run."""
        if self._stopped:
            await self._stopped_event.wait()
            return
        self._stopped = True
        try:
            if self._handlers.on_stopped is not None:
                with anyio.CancelScope(shield=True):
                    try:
                        await call(self._handlers.on_stopped, self)
                    except Exception as exc:
                        logger.exception("%s: on_stopped raised", self.name, exc_info=exc)
                        self._observer.unhandled_error(exc, "on_stopped", None)
        finally:
            self._stopped_event.set()

    # -- accepting -----------------------------------------------------------------

    def _has_slot(self) -> bool:
        limit = self._max_connections
        return limit is None or self._slots < limit

    def _wake_acceptors(self) -> None:
        if self._slot_event.statistics().tasks_waiting:  # else nobody to wake: no new Event
            self._slot_event.set()
            self._slot_event = anyio.Event()

    async def _serve_listener(self, listener: anyio.abc.Listener[anyio.abc.ByteStream]) -> None:
        accepting = accepts(listener)
        if accepting is not None:
            await self._accept_loop(accepting)
        else:  # a listener that only serves: connections wait for a slot once accepted
            await listener.serve(self._admit)

    async def _admit(self, stream: anyio.abc.ByteStream) -> None:
        """Serve ``stream`` (from a serving listener) once a slot is free; close it on shutdown."""
        while not self._closing and not self._has_slot():
            await self._slot_event.wait()
        if self._closing:
            with anyio.CancelScope(shield=True):
                await stream.aclose()
            return
        self._slots += 1
        self.stats.current += 1
        self.stats.total += 1
        await self._handle(stream, self._new_id(), False)  # (the listener may close it after)

    async def _accept_loop(
        self, listener: anyio.abc.SocketListener | AcceptingListener[anyio.abc.ByteStream]
    ) -> None:
        """Accept while there are free slots: one cancel scope per stretch, not per accept.

        ``set_max_connections`` and ``shutdown`` cancel the scope to stop an
        accept that is waiting.
        """
        backoff = _Backoff(self.name, self._accept_failed)
        while not self._closing:
            if not self._has_slot():
                await self._slot_event.wait()
                continue
            scope = anyio.CancelScope()
            self._accept_scopes.add(scope)
            try:
                with scope:
                    while not self._closing and self._has_slot():
                        if not await self._accept_one(listener, backoff):
                            return
            finally:
                self._accept_scopes.discard(scope)

    async def _accept_one(
        self,
        listener: anyio.abc.SocketListener | AcceptingListener[anyio.abc.ByteStream],
        backoff: _Backoff,
    ) -> bool:
        """Accept one connection and start it; ``False`` once the listener is closed.

        A slot is reserved before ``accept`` (so several listeners cannot
        overshoot the limit) and given back if no connection came of it.
        """
        self._slots += 1
        try:
            stream = await listener.accept()
        except (anyio.ClosedResourceError, anyio.BrokenResourceError, OSError) as error:
            self._slots -= 1
            if self._closing or isinstance(error, anyio.ClosedResourceError):
                return False
            await backoff.failed(error)
            return True
        except BaseException:
            self._slots -= 1
            raise
        backoff.succeeded()
        self.stats.current += 1
        self.stats.total += 1
        self._start(stream, self._new_id())
        return True

    async def _accept_failed(self, error: BaseException, code: int | None) -> None:
        if self._handlers.on_listen_error is not None:
            with anyio.CancelScope(shield=True):  # a user handler: not cut short
                await self._listen_error(error)
        else:
            logger.warning(
                "%s: accept failed (%s); backing off and retrying",
                self.name,
                os.strerror(code) if code else error,
            )

    def _release_slot(self) -> None:
        self._slots -= 1
        self.stats.current -= 1
        self._wake_acceptors()
        self._all_done.set()  # (every end: shutdown from a handler waits for all but one)

    def _new_id(self) -> int:
        """The next connection id: ids follow the order of ``accept`` (tasks may start in any)."""
        conn_id = self._next_id
        self._next_id += 1
        return conn_id

    # -- connections ----------------------------------------------------------------

    async def _handle(self, stream: anyio.abc.ByteStream, conn_id: int, start: bool) -> None:
        """Set up one accepted stream, then ``start`` its connection (else serve it to its end
        in this task). The slot is held until the connection has ended."""
        started = False
        try:
            if self._handlers.acceptor is not None:
                await self._run_acceptor(stream, conn_id)
            else:
                started = await self._run_connection(stream, conn_id, start)
        except Exception as exc:  # a bug in setup code must not reach the task group
            logger.exception("%s: unexpected error in connection task", self.name, exc_info=exc)
        finally:
            if not started:  # (else the connection's end gives the slot back)
                self._release_slot()

    async def _set_up(
        self, stream: anyio.abc.ByteStream
    ) -> tuple[anyio.abc.ByteStream, tuple[str, int] | None]:
        """PROXY header and TLS (``setup_timeout`` is the caller's)."""
        return await _setup.set_up_stream(stream, self._settings, self._ssl, self._refusals)

    async def _run_acceptor(self, stream: anyio.abc.ByteStream, conn_id: int) -> None:
        """A custom acceptor gets the stream after the same setup (PROXY header, TLS)."""
        assert self._handlers.acceptor is not None
        remote = stream.extra(SocketAttribute.remote_address, None)
        try:
            try:
                with _setup.setup_deadline(self._settings.setup_timeout):
                    used, source = await self._set_up(stream)
            except Exception as exc:
                await self._reject(stream, conn_id, exc)
                return
            if not self._admit_ip(source or remote):
                await self._reject(stream, conn_id, None, source, "per-ip-limit")
                return
            try:
                await call(self._handlers.acceptor, used, source or remote)
            except Exception as exc:
                logger.exception("%s: acceptor raised", self.name, exc_info=exc)
                self._observer.unhandled_error(exc, "acceptor", None)
            finally:
                self._release_ip(source or remote)
                with anyio.CancelScope(shield=True):
                    await used.aclose()
        finally:
            with anyio.CancelScope(shield=True):
                await stream.aclose()

    def _start(self, stream: anyio.abc.ByteStream, conn_id: int) -> None:
        """Start an accepted connection: right here if it has no setup steps, else once a
        task has set it up (PROXY header, TLS, ``pre_connect``; or a custom acceptor).

        Started, it gets a task of its own only while it needs one
        (``Connection.start``). The slot is held until it has ended.
        """
        context = self._context
        assert context is not None
        if self._handlers.acceptor is not None or _setup.needs_setup(
            self._settings, self._ssl, self._handlers.pre_connect
        ):
            context.pool.start_soon(self._handle, stream, conn_id, True)
            return
        try:
            conn = self._settings.connection_class(context, conn_id, stream)
        except Exception as exc:
            context.pool.start_soon(self._refuse, stream, conn_id, exc)
            return
        if not self._admit_ip(conn.remote_addr):
            context.pool.start_soon(self._refuse, stream, conn_id, None)
            return
        error = self._launch(conn, stream)
        if error is not None:
            context.pool.start_soon(self._refuse, stream, conn_id, error)

    def _launch(self, conn: Connection[In, Out], stream: anyio.abc.ByteStream) -> Exception | None:
        """Register ``conn`` and start it; the error if it could not start (a bug: undone)."""
        self._register(conn)
        try:
            conn.start(stream)
        except Exception as exc:
            logger.exception("%s: could not start connection #%d", self.name, conn.id)
            self._unregister(conn)
            return exc
        return None

    def _started_ended(self, conn: Connection[Any, Any]) -> None:
        self._unregister(conn)
        self._release_slot()

    async def _refuse(
        self, stream: anyio.abc.ByteStream, conn_id: int, exc: BaseException | None
    ) -> None:
        """Close a connection :meth:`_start` could not start: ``exc``, or one too many per IP."""
        try:
            await self._reject(stream, conn_id, exc, None, "per-ip-limit")  # (exc: its own)
        finally:
            self._release_slot()

    def _register(self, conn: Connection[In, Out]) -> None:
        if self._grace_expired:
            conn.shutdown()
        self._connections[conn.id] = conn

    def _unregister(self, conn: Connection[In, Out]) -> None:
        del self._connections[conn.id]
        self._release_ip(conn.remote_addr)

    async def _run_connection(
        self, stream: anyio.abc.ByteStream, conn_id: int, start: bool
    ) -> bool:
        """Set up the connection, then start it (``True``) or serve it (``False``)."""
        context = self._context
        assert context is not None
        pre = self._handlers.pre_connect
        used: anyio.abc.ByteStream | None = stream
        source: tuple[str, int] | None = None
        conn: Connection[In, Out] | None = None
        try:
            if _setup.needs_setup(self._settings, self._ssl, pre):  # else no timer per connection
                with _setup.setup_deadline(self._settings.setup_timeout):
                    used, source = await self._set_up(stream)
                    conn = self._settings.connection_class(context, conn_id, used, source)
                    if pre is not None:
                        used = await _setup.pre_connect(pre, conn, used)
        except Exception as exc:
            await self._reject(stream, conn_id, exc, source)
            return False
        if used is None:
            await self._reject(stream, conn_id, None, source)
            return False
        if conn is None:
            conn = self._settings.connection_class(context, conn_id, used)
        if not self._admit_ip(conn.remote_addr):
            await self._reject(stream, conn_id, None, source, "per-ip-limit")
            return False
        if start:
            error = self._launch(conn, used)
            if error is None:
                return True
            await self._reject(stream, conn_id, error, source)
            return False
        self._register(conn)
        try:
            await conn.serve(used)
        finally:
            self._unregister(conn)
        return False

    def _admit_ip(self, remote: Any) -> bool:
        """``max_connections_per_ip``: count the connection, or say it is one too many."""
        limit = self._per_ip
        if limit is None or not isinstance(remote, tuple):
            return True
        ip = str(remote[0])  # pyright: ignore[reportUnknownArgumentType]
        if limit.admit(ip):
            return True
        self.stats.rejected_per_ip += 1
        self._per_ip_log.log(
            f"refused a connection from {ip} over max_connections_per_ip={limit.limit}"
        )
        return False

    def _release_ip(self, remote: Any) -> None:
        if self._per_ip is not None and isinstance(remote, tuple):
            self._per_ip.release(str(remote[0]))  # pyright: ignore[reportUnknownArgumentType]

    async def _reject(
        self,
        stream: anyio.abc.ByteStream,
        conn_id: int,
        exc: BaseException | None,
        source: tuple[str, int] | None = None,
        reason: str = "rejected",
    ) -> None:
        """Close a connection that failed its setup (or was refused: ``reason``)."""
        self.stats.rejected += 1
        remote = stream.extra(SocketAttribute.remote_address, None)  # the peer that connected
        prefix = f"{self.name} #{conn_id} {peer_of(source or remote)}"
        logged = exc is not None or reason == "rejected"  # (a limit logs its own bursts)
        if logged and _setup.log_rejection(prefix, exc) and exc is not None:
            self._observer.unhandled_error(exc, "pre_connect", None)
        if exc is not None:
            reason = _setup.rejection_reason(exc)
        self._observer.connection_rejected(Rejection(self.name, conn_id, remote, reason, exc))
        with anyio.CancelScope(shield=True):
            try:
                await stream.aclose()
            except (OSError, anyio.BrokenResourceError):
                pass


class _Backoff:
    """Accept errors: a per-connection one is ignored; any other backs off (EMFILE...).

    Resource exhaustion is reported once per burst (not per attempt), and the
    loop sleeps from 0.1 s, doubling up to 1 s, until an accept succeeds.
    """

    def __init__(
        self, name: str, report: Callable[[BaseException, int | None], Awaitable[None]]
    ) -> None:
        self._name = name
        self._report = report
        self._delay = _BACKOFF_START
        self._in_burst = False

    def succeeded(self) -> None:
        if self._in_burst:
            logger.info("%s: accepting again", self._name)
            self._in_burst = False
            self._delay = _BACKOFF_START

    async def failed(self, error: BaseException) -> None:
        code = _find_errno(error)
        if code in _PER_CONNECTION_ERRNOS:
            logger.debug("%s: accept failed for one client: %s", self._name, error)
            return
        if not self._in_burst:  # report once per burst, not once per attempt
            self._in_burst = True
            await self._report(error, code)
        await anyio.sleep(self._delay)
        self._delay = min(self._delay * 2, _BACKOFF_MAX)
