"""The master listening session: listeners, accept loops, connection bookkeeping.

One task group per server holds one accept loop per listening socket, and a
task pool inside it (see ``_tasks``: native tasks, cheaper to start) one task
per connection. An accept loop waits for a free slot *before* calling
``accept`` (so with ``max_connections`` reached, waiting clients stay in the
kernel backlog), backs off on resource exhaustion (EMFILE and friends, logged
once per burst), and ignores per-connection accept failures.
"""

from __future__ import annotations

import errno
import functools
import logging
import math
import os
import socket
import ssl as _ssl
import sys
from collections.abc import AsyncGenerator, Generator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import anyio
import anyio.abc
from anyio.abc import SocketAttribute

from ._asyncio_stream import fast_listener
from ._busy_poll import busy_poller
from ._tasks import TaskPool, open_task_pool
from .connection import Connection, ConnectionConfig
from .exceptions import ConnectionClosed, ProxyProtocolError, ServerError, SetupTimeout
from .handlers import Handler, call
from .stats import ServerStats

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

__all__ = ["ListenConfig", "Server", "ServerHandlers"]

In = TypeVar("In")
Out = TypeVar("Out")

logger = logging.getLogger("tcpkit.server")

_RESOURCE_ERRNOS = frozenset(
    {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}
)  # back off and retry
_PER_CONNECTION_ERRNOS = frozenset(
    {errno.ECONNABORTED, errno.ECONNRESET, errno.EPROTO, errno.EPERM, errno.ETIMEDOUT}
)  # the client went away before accept returned: ignore quietly
_PEER_SETUP_ERRORS = (
    OSError,
    anyio.BrokenResourceError,
    anyio.EndOfStream,
    _ssl.SSLError,
    ProxyProtocolError,
)  # a failed setup caused by the client: logged at INFO without a traceback
_BACKOFF_START = 0.1
_BACKOFF_MAX = 1.0


@dataclass(frozen=True)
class ServerHandlers:
    """The server-level handlers and settings, frozen when serving starts."""

    connection: ConnectionConfig
    connection_class: type[Connection[Any, Any]] = Connection
    pre_connect: Handler | None = None
    acceptor: Handler | None = None
    on_started: Handler | None = None
    on_stopped: Handler | None = None
    on_listen_error: Handler | None = None
    listener_args: tuple[Any, ...] = ()
    max_connections: int | None = None
    setup_timeout: float | None = 10.0
    proxy_protocol: bool = False
    busy_poll: float | None = None
    """Seconds the loop may keep polling after a read (see tcpkit._busy_poll); None: off."""


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


def _prefix(conn: Connection[Any, Any]) -> str:
    """``NAME #ID PEER``: how every log line about one connection begins."""
    from .observe import peer_of

    peer = peer_of(conn.remote_ip, conn.remote_port, conn.remote_addr)
    return f"{conn.server.name} #{conn.id} {peer}"


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


class Server(Generic[In, Out]):
    """A running server (POE's master listening session and its HEAP).

    Obtained from ``async with app.start(...) as server``, passed to
    ``on_started``/``on_stopped``/``on_listen_error``, and reachable from every
    connection as ``conn.server``.
    """

    def __init__(self, name: str, handlers: ServerHandlers) -> None:
        self.name = name
        self.stats = ServerStats()
        self.addresses: list[tuple[str, int] | str] = []
        self._handlers = handlers
        self._config = handlers.connection
        self._max_connections = handlers.max_connections
        self._connections: dict[int, Connection[In, Out]] = {}
        self._next_id = 1
        self._slots: int = 0  # sockets accepted or about to be (gates accept)
        self._listeners: list[anyio.abc.SocketListener] = []
        self._accept_scopes: set[anyio.CancelScope] = set()  # scopes of waiting accept loops
        self._slot_event = anyio.Event()
        self._all_done = anyio.Event()
        self._closing = False
        self._stopped = False
        self._stopped_event = anyio.Event()
        self._grace_expired = False
        self._tg: anyio.abc.TaskGroup | None = None
        self._pool: TaskPool | None = None  # connection tasks (see _tasks)
        self._ssl: _ssl.SSLContext | None = None
        self._owned_paths: list[str] = []  # Unix socket files to remove at the end

    # -- POE HEAP / public state --------------------------------------------

    @property
    def port(self) -> int | None:
        """The first bound TCP port (``None`` if only Unix sockets are bound)."""
        for address in self.addresses:
            if isinstance(address, tuple):
                return address[1]
        return None

    @property
    def connection_count(self) -> int:
        """Open sockets, from accept to close (setup included)."""
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

        Returns ``False`` if there is no such live connection. Never blocks.

        Raises:
            RegistrationError: no handler is registered for ``event``.
        """
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

        Do not await this from a handler of one of the server's own
        connections without a ``grace``: that connection would wait for itself.
        Use :meth:`start_shutdown` there.
        """
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
            await self.shutdown(grace, drain_timeout=drain_timeout)

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

    async def _wait_connections(self) -> None:
        while self.stats.current:
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
                listener = await anyio.abc.SocketListener.from_socket(socks[0])  # owns it now
                socks.pop(0)
                self._listeners.append(listener)
                local = listener.extra(SocketAttribute.local_address)
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
    async def _running(
        self, listen: ListenConfig | None, drain_timeout: float | None = 10.0
    ) -> AsyncGenerator[Server[In, Out], None]:
        """Bind, start accepting, yield; on exit shut down (grace 0) and stop.

        On exit, connections still flushing after ``drain_timeout`` seconds
        (clients that stopped reading) are closed at once.
        """
        if listen is not None:
            await self._bind(listen)  # before the task group: a ServerError stays plain
        try:
            with _unwrap_single():
                async with anyio.create_task_group() as tg, open_task_pool(tg) as pool:
                    self._tg = tg
                    self._pool = pool
                    poller = busy_poller(self._handlers.busy_poll, self.stats)
                    if poller is not None:
                        tg.start_soon(poller.run)
                    # The backend's fast path (see _asyncio_stream): same API, fewer checkpoints.
                    self._listeners = [fast_listener(lsn, poller) for lsn in self._listeners]
                    for listener in self._listeners:
                        tg.start_soon(self._accept_loop, listener)
                        reactor = getattr(listener, "run_reactor", None)  # trio's (_trio_stream)
                        if reactor is not None:
                            tg.start_soon(reactor)
                    if self._handlers.on_started is not None:
                        await call(self._handlers.on_started, self, *self._handlers.listener_args)
                    if listen is not None:  # INFO is the runner's startup line (run, serve, CLI)
                        logger.debug(
                            "%s: listening on %s", self.name, ", ".join(self._describe_addresses())
                        )
                    try:
                        yield self
                    finally:
                        with anyio.CancelScope(shield=True):
                            await self.shutdown(grace=0, drain_timeout=drain_timeout)
                        tg.cancel_scope.cancel()
        finally:
            self._tg = None
            self._pool = None
            with anyio.CancelScope(shield=True):
                await self._run_stopped()

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
        finally:
            self._stopped_event.set()

    def _describe_addresses(self) -> list[str]:
        out: list[str] = []
        for address in self.addresses:
            if isinstance(address, str):
                out.append(f"unix:{address}")
            elif ":" in address[0]:
                out.append(f"[{address[0]}]:{address[1]}")
            else:
                out.append(f"{address[0]}:{address[1]}")
        return out

    def _has_slot(self) -> bool:
        limit = self._max_connections
        return limit is None or self._slots < limit

    def _wake_acceptors(self) -> None:
        if self._slot_event.statistics().tasks_waiting:  # else nobody to wake: no new Event
            self._slot_event.set()
            self._slot_event = anyio.Event()

    async def _accept_loop(self, listener: anyio.abc.SocketListener) -> None:
        """Accept while there are free slots: one cancel scope per stretch, not per accept.

        ``set_max_connections`` and ``shutdown`` cancel the scope to stop an
        accept that is waiting. A slot is reserved before each ``accept`` (so
        several listeners cannot overshoot the limit) and given back if no
        connection came of it.
        """
        backoff = _BACKOFF_START
        in_burst = False
        stats = self.stats
        while not self._closing:
            if not self._has_slot():
                await self._slot_event.wait()
                continue
            scope = anyio.CancelScope()
            self._accept_scopes.add(scope)
            try:
                with scope:
                    while not self._closing and self._has_slot():
                        self._slots += 1
                        stream: anyio.abc.SocketStream | None = None
                        error: BaseException | None = None
                        try:
                            stream = await listener.accept()
                        except (anyio.ClosedResourceError, anyio.BrokenResourceError, OSError) as e:
                            error = e
                        finally:
                            if stream is None:
                                self._slots -= 1
                        if stream is not None:
                            if in_burst:
                                logger.info("%s: accepting again", self.name)
                                in_burst = False
                                backoff = _BACKOFF_START
                            stats.current += 1
                            stats.total += 1
                            assert self._pool is not None
                            self._pool.start_soon(self._handle, stream, self._new_id())
                            continue
                        if self._closing or isinstance(error, anyio.ClosedResourceError):
                            return
                        assert error is not None
                        code = _find_errno(error)
                        if code in _PER_CONNECTION_ERRNOS:
                            logger.debug("%s: accept failed for one client: %s", self.name, error)
                            continue
                        if not in_burst:  # report once per burst, not once per attempt
                            in_burst = True
                            await self._accept_failed(error, code)
                        await anyio.sleep(backoff)
                        backoff = min(backoff * 2, _BACKOFF_MAX)
            finally:
                self._accept_scopes.discard(scope)

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

    def _serve_stream(self, stream: anyio.abc.ByteStream) -> None:
        """Serve a stream that came from no listener (``tcpkit.testing``'s in-memory clients).

        The stream is treated like a connection in the kernel backlog: it waits
        for a free slot (``max_connections``), is then counted in ``stats`` like
        an accepted socket, and is run to its end by :meth:`_handle` in the
        server's task group. If the server starts closing before a slot frees
        up, the stream is closed unserved (as the kernel resets the backlog of
        a closed listener). Never blocks.

        Raises:
            ServerError: the server is not running.
        """
        tg = self._tg
        if tg is None:
            raise ServerError(f"{self.name}: the server is not running")

        async def admit() -> None:
            while not self._closing and not self._has_slot():
                await self._slot_event.wait()
            if self._closing:
                with anyio.CancelScope(shield=True):
                    await stream.aclose()
                return
            self._slots += 1
            self.stats.current += 1
            self.stats.total += 1
            await self._handle(stream, self._new_id())

        tg.start_soon(admit)

    def _release_slot(self) -> None:
        self._slots -= 1
        self.stats.current -= 1
        self._wake_acceptors()
        if not self.stats.current:
            self._all_done.set()

    def _new_id(self) -> int:
        """The next connection id: ids follow the order of ``accept`` (tasks may start in any)."""
        conn_id = self._next_id
        self._next_id += 1
        return conn_id

    async def _handle(self, stream: anyio.abc.ByteStream, conn_id: int) -> None:
        """Run one accepted stream to its end. The slot is held until then."""
        try:
            if self._handlers.acceptor is not None:
                await self._run_acceptor(stream)
            else:
                await self._run_connection(stream, conn_id)
        except Exception as exc:  # a bug in setup code must not reach the task group
            logger.exception("%s: unexpected error in connection task", self.name, exc_info=exc)
        finally:
            self._release_slot()

    async def _run_acceptor(self, stream: anyio.abc.ByteStream) -> None:
        assert self._handlers.acceptor is not None
        remote = stream.extra(SocketAttribute.remote_address, None)
        try:
            await call(self._handlers.acceptor, stream, remote)
        except Exception as exc:
            logger.exception("%s: acceptor raised", self.name, exc_info=exc)
        finally:
            with anyio.CancelScope(shield=True):
                await stream.aclose()

    @property
    def _needs_setup(self) -> bool:
        """Whether connections have setup steps (PROXY header, TLS, pre_connect)."""
        h = self._handlers
        return h.proxy_protocol or self._ssl is not None or h.pre_connect is not None

    async def _setup(
        self, conn: Connection[In, Out], stream: anyio.abc.ByteStream
    ) -> anyio.abc.ByteStream | None:
        """PROXY header, TLS, pre_connect. Returns the stream to use, or None to reject."""
        if self._handlers.proxy_protocol:
            from .proxy import read_proxy_header

            stream, source = await read_proxy_header(stream)
            if source is not None:
                conn._set_remote(*source)  # pyright: ignore[reportPrivateUsage]
        if self._ssl is not None:
            from anyio.streams.tls import TLSStream

            stream = await TLSStream.wrap(
                stream, server_side=True, ssl_context=self._ssl, standard_compatible=False
            )
        h = self._handlers.pre_connect
        if h is not None:
            result = await call(h, conn, stream)
            if result is None or result is False:
                return None
            if result is not True:
                if not isinstance(result, anyio.abc.ByteStream):
                    raise TypeError(
                        "pre_connect must return None/False, True or an anyio ByteStream, "
                        f"got {result!r}"
                    )
                stream = result
        return stream

    async def _run_connection(self, stream: anyio.abc.ByteStream, conn_id: int) -> None:
        conn = self._handlers.connection_class(self, self._config, stream, conn_id, self.stats)
        timeout = self._handlers.setup_timeout
        used: anyio.abc.ByteStream | None = stream
        try:
            if self._needs_setup:  # else no cancel scope and timer per connection
                with anyio.fail_after(timeout if timeout is not None else math.inf):
                    used = await self._setup(conn, stream)
        except TimeoutError:
            logger.info("%s: setup timed out", _prefix(conn))
            await self._reject(stream, SetupTimeout(f"setup took over {timeout} s"), conn)
            return
        except Exception as exc:
            await self._reject(stream, exc, conn)
            return
        if used is None:
            logger.debug("%s: rejected by pre_connect", _prefix(conn))
            await self._reject(stream, None, conn)
            return
        conn._stream = used  # pyright: ignore[reportPrivateUsage]
        if self._grace_expired:
            conn.shutdown()
        self._connections[conn_id] = conn
        assert self._pool is not None
        try:
            await conn._serve(self._pool)  # pyright: ignore[reportPrivateUsage]
        finally:
            del self._connections[conn_id]

    async def _reject(
        self,
        stream: anyio.abc.ByteStream,
        exc: BaseException | None,
        conn: Connection[In, Out],
    ) -> None:
        self.stats.rejected += 1
        observer = self._config.observer
        if observer is not None:
            reason = (
                "rejected"
                if exc is None
                else "setup-timeout"
                if isinstance(exc, SetupTimeout)
                else "setup-failed"
            )
            observer.connection_rejected(conn, reason, exc)
        if exc is None or isinstance(exc, SetupTimeout):
            pass
        elif isinstance(exc, _PEER_SETUP_ERRORS):  # the peer's fault: one quiet line
            cause = exc.__cause__ or exc.__context__
            detail = str(exc) or (f"{type(cause).__name__}: {cause}" if cause else "")
            logger.info("%s: setup failed: %s %s", _prefix(conn), type(exc).__name__, detail)
        else:  # a bug in pre_connect or in our own code: show it
            logger.error("%s: setup failed", _prefix(conn), exc_info=exc)
        with anyio.CancelScope(shield=True):
            try:
                await stream.aclose()
            except (OSError, anyio.BrokenResourceError):
                pass
