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

import ssl
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path as FsPath
from typing import Any

import anyio
from pathclient import MemoryClient, PathClient, SocketClient
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


class Harness:
    """Builds and serves apps for one :class:`~pathmatrix.Path` (see the module doc)."""

    def __init__(self, path: Path, tls_server: ssl.SSLContext, tls_client: ssl.SSLContext,
                 sock_dir: FsPath) -> None:
        self.path = path
        self.rec = Recorder()
        self._tls_server = tls_server
        self._tls_client = tls_client
        self._sock_dir = sock_dir
        self._apps = 0

    # -- building ---------------------------------------------------------------------

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

    def app(
        self,
        codec: Any = None,
        *,
        on_error: Callable[[Connection[Any, Any], BaseException], None] | None = None,
        flushed: bool = True,
        **options: Any,
    ) -> App[Any, Any]:
        """An app with the path's options and recording handlers.

        ``on_error`` runs (as the path's kind) after the error is recorded; by
        default it replies ``error:<type>`` while the connection is writable.
        ``flushed=False`` leaves ``on_flushed`` to the check.
        """
        if self.path.idle:
            options.setdefault("idle_timeout", IDLE_TIMEOUT)
        app: App[Any, Any] = App(codec, **options) if codec is not None else App(**options)
        rec = self.rec

        def error(conn: Connection[Any, Any], exc: BaseException) -> None:
            rec.errors.append((conn.id, exc))
            if on_error is not None:
                on_error(conn, exc)
            elif not conn.shutting_down:
                conn.put(f"error:{type(exc).__name__}")

        def disconnect(conn: Connection[Any, Any]) -> None:
            rec.disconnects.append(conn.id)

        app.add_on_error(self.handler(error, "on_error"))
        app.add_on_disconnect(self.handler(disconnect, "on_disconnect"))
        if flushed and self.path.flushed:

            def on_flushed(conn: Connection[Any, Any]) -> None:
                rec.flushed[conn.id] += 1

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
                if stream == "unix":
                    self._apps += 1
                    start.setdefault("uds", str(self._sock_dir / f"s{self._apps}"))
                    start.setdefault("host", None)
                    start.setdefault("port", None)
                else:
                    start.setdefault("host", "127.0.0.1")
                    if stream == "tls":
                        start.setdefault("ssl", self._tls_server)
                server = await stack.enter_async_context(app.start(**start))
                served = Served(server, self)
            try:
                yield served
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
            client = MemoryClient(await self.test_server.connect())
        else:
            address: tuple[str, int] | str = self.server.addresses[0]
            tls = self.harness._tls_client if self.harness.path.stream == "tls" else None
            client = await SocketClient.connect(address, tls, small_buffers=small_buffers)
        self.clients.append(client)
        return client
