"""What a check needs to build, serve and observe an app on one path.

``h = Harness(path, ...)`` (the ``h`` fixture) gives:

* ``h.app(...)``: an :class:`~tcpkit.App` with the path's options
  (``idle_timeout``) and recording ``on_error``/``on_disconnect`` handlers
  (plus a recording ``on_flushed`` when the path has one);
* ``h.handler(body)``: ``body(conn, *args)`` (plain code) as a handler of the
  path's kind: a ``def``, an ``async def`` that does not wait, or an ``async
  def`` that waits (a timer) before running ``body``;
* ``h.serve(app)``: serve it over the path's stream; ``await
  served.connect()`` opens a :class:`~pathclient.PathClient`;
* ``h.rec``: what the handlers observed (errors, disconnects, flushes,
  overlapping handler turns of one connection).
"""

from __future__ import annotations

import socket
import ssl
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path as FsPath
from typing import Any

import anyio
from anyio.abc import SocketAttribute
from pathclient import TIMEOUT, MemoryClient, PathClient, SocketClient
from pathmatrix import Path

from tcpkit import App, Connection, Server
from tcpkit.testing import TestServer

WAIT = 0.001
"""What an ``awaits`` handler waits for (a timer, as a database call would)."""

IDLE_TIMEOUT = 60.0
"""The ``idle_timeout`` of the paths that set one: far longer than any check."""


@dataclass
class Recorder:
    """What the handlers of an app observed, per connection id."""

    errors: list[tuple[int, BaseException]] = field(default_factory=list)
    disconnects: list[int] = field(default_factory=list)
    flushed: Counter[int] = field(default_factory=Counter)
    log: list[str] = field(default_factory=list)
    """Free-form events a check records, in order."""
    overlaps: list[str] = field(default_factory=list)
    _active: Counter[int] = field(default_factory=Counter)
    _change: anyio.Event | None = None

    def note(self, entry: str | None = None) -> None:
        """Append ``entry`` to the log (if given) and wake :meth:`wait_until`."""
        if entry is not None:
            self.log.append(entry)
        if self._change is not None:
            self._change.set()
            self._change = None

    async def wait_until(self, what: str, condition: Callable[[], bool], timeout: float) -> None:
        """Wait (bounded) until ``condition()`` holds; it is re-checked at every :meth:`note`."""
        with anyio.move_on_after(timeout) as scope:
            while not condition():
                if self._change is None:
                    self._change = anyio.Event()
                await self._change.wait()
        if scope.cancelled_caught:
            raise TimeoutError(f"{what}: not within {timeout} s (observed: {self})")

    @contextmanager
    def turn(self, conn: Connection[Any, Any], name: str) -> Iterator[None]:
        """Around every handler: notes a handler of ``conn`` running while another one is."""
        self._active[conn.id] += 1
        if self._active[conn.id] > 1:
            self.overlaps.append(f"#{conn.id} {name}")
        try:
            yield
        finally:
            self._active[conn.id] -= 1

    def error_types(self) -> list[type[BaseException]]:
        return [type(exc) for _, exc in self.errors]

    def __str__(self) -> str:
        errors = [f"#{i} {type(e).__name__}({e})" for i, e in self.errors]
        return (
            f"errors={errors} disconnects={self.disconnects} flushed={dict(self.flushed)} "
            f"log={self.log[-10:]} overlaps={self.overlaps}"
        )


def shrink_send_buffer(conn: Connection[Any, Any]) -> None:
    """A small kernel send buffer, so that what the client does not read backs up soon.

    (The in-memory transport's pipe is small already.)
    """
    sock = conn.stream.extra(SocketAttribute.raw_socket, None)
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)


class Harness:
    """Builds and serves apps for one :class:`~pathmatrix.Path` (see the module doc)."""

    def __init__(
        self,
        path: Path,
        tls_server: ssl.SSLContext,
        tls_client: ssl.SSLContext,
        sock_dir: FsPath,
        timeout: float = TIMEOUT,
    ) -> None:
        self.path = path
        self.timeout = timeout
        """What each client wait may take (see :data:`pathclient.KNOWN_FAILURE_TIMEOUT`)."""
        self.rec = Recorder()
        self.tls_server = tls_server
        self.tls_client = tls_client
        self._sock_dir = sock_dir
        self._apps = 0

    # -- building ---------------------------------------------------------------------

    async def wait_until(self, what: str, condition: Callable[[], bool]) -> None:
        """Wait, bounded by the client timeout, until the recorder shows ``condition()``."""
        await self.rec.wait_until(what, condition, self.timeout)

    def handler(self, body: Callable[..., Any], name: str | None = None) -> Callable[..., Any]:
        """``body(conn, *args)`` as a handler of the path's kind (recording its turns)."""
        rec = self.rec
        label = name or getattr(body, "__name__", "handler")
        if self.path.handler == "def":

            def plain(conn: Connection[Any, Any], *args: Any) -> Any:
                with rec.turn(conn, label):
                    return body(conn, *args)

            return plain
        if self.path.handler == "async":

            async def quick(conn: Connection[Any, Any], *args: Any) -> Any:
                with rec.turn(conn, label):
                    return body(conn, *args)

            return quick

        async def waiting(conn: Connection[Any, Any], *args: Any) -> Any:
            with rec.turn(conn, label):
                await anyio.sleep(WAIT)
                return body(conn, *args)

        return waiting

    def async_handler(
        self, body: Callable[..., Awaitable[Any]], name: str | None = None
    ) -> Callable[..., Any]:
        """An ``async def`` ``body`` as a handler of the path's (async) kind.

        ``async``: ``body`` as it is; ``awaits``: a timer first. (A check that
        needs to ``await`` inside its handler runs only on the async kinds.)
        """
        assert self.path.is_async, "a check with async handler bodies must skip the def kind"
        rec = self.rec
        label = name or getattr(body, "__name__", "handler")
        waits = self.path.handler == "awaits"

        async def run(conn: Connection[Any, Any], *args: Any) -> Any:
            with rec.turn(conn, label):
                if waits:
                    await anyio.sleep(WAIT)
                return await body(conn, *args)

        return run

    def app(
        self,
        codec: Any = None,
        *,
        on_error: Callable[[Connection[Any, Any], BaseException], None] | None = None,
        on_disconnect: Callable[[Connection[Any, Any]], Any] | None = None,
        flushed: bool = True,
        **options: Any,
    ) -> App[Any, Any]:
        """An app with the path's options and recording handlers.

        ``on_error`` runs (as the path's kind) after the error is recorded; by
        default it replies ``error:<type>`` while the connection is writable.
        ``on_disconnect`` (a handler, registered as it is) replaces the
        recording one. ``flushed=False`` leaves ``on_flushed`` to the check.
        """
        if self.path.idle:
            options.setdefault("idle_timeout", IDLE_TIMEOUT)
        app: App[Any, Any] = App(codec, **options) if codec is not None else App(**options)
        rec = self.rec

        def error(conn: Connection[Any, Any], exc: BaseException) -> None:
            rec.errors.append((conn.id, exc))
            rec.note()
            if on_error is not None:
                on_error(conn, exc)
            elif not conn.shutting_down:
                conn.put(f"error:{type(exc).__name__}")

        def disconnect(conn: Connection[Any, Any]) -> None:
            rec.disconnects.append(conn.id)
            rec.note()

        app.add_on_error(self.handler(error, "on_error"))
        app.add_on_disconnect(on_disconnect or self.handler(disconnect, "on_disconnect"))
        if flushed and self.path.flushed:

            def on_flushed(conn: Connection[Any, Any]) -> None:
                rec.flushed[conn.id] += 1
                rec.note()

            app.add_on_flushed(self.handler(on_flushed, "on_flushed"))
        return app

    # -- serving ------------------------------------------------------------------------

    @asynccontextmanager
    async def serve(self, app: App[Any, Any], **start: Any) -> AsyncIterator[Served]:
        """Serve ``app`` over the path's stream until the block ends (then shut it down)."""
        stream = self.path.stream
        async with AsyncExitStack() as stack:
            if stream == "memory":
                test_server = await stack.enter_async_context(TestServer(app))
                served = Served(test_server.server, self, test_server=test_server)
            else:
                if stream == "unix":  # only the Unix socket listens
                    self._apps += 1
                    start.setdefault("uds", str(self._sock_dir / f"s{self._apps}"))
                else:
                    start.setdefault("host", "127.0.0.1")
                    if stream == "tls":
                        start.setdefault("ssl", self.tls_server)
                server = await stack.enter_async_context(app.start(**start))
                served = Served(server, self)
            try:
                yield served
            except BaseException:
                served.server.abort()  # a failed check: no graceful drain to wait for
                raise
            finally:
                for client in served.clients:
                    await client.aclose()


@dataclass
class Served:
    """A served app: its running server and a way to connect to it."""

    server: Server[Any, Any]
    harness: Harness
    test_server: TestServer[Any, Any] | None = None
    clients: list[PathClient] = field(default_factory=list)

    async def connect(self, *, small_buffers: bool = False) -> PathClient:
        """A new client over the path's stream (``small_buffers``: a small receive buffer)."""
        client: PathClient
        if self.test_server is not None:
            client = MemoryClient(await self.test_server.connect(), self.harness.timeout)
        else:
            address: tuple[str, int] | str = self.server.addresses[0]
            tls = self.harness.tls_client if self.harness.path.stream == "tls" else None
            client = await SocketClient.connect(
                address, tls, small_buffers=small_buffers, timeout=self.harness.timeout
            )
        self.clients.append(client)
        return client
