"""One client connection, as handlers see it: :class:`Connection`.

POE splits this between a client session (its HEAP) and its ReadWrite wheel;
here it is one object, ``conn``, handed to every per-connection handler. It is
the public face of three layers below it:

* :mod:`tcpkit._session`: the sans-IO turn engine (codecs, pending output,
  state, handler turns);
* :mod:`tcpkit._driver`: the one driver that runs a session over a transport
  (the connection's task, inline turns, flushing, the graceful close);
* :mod:`tcpkit._transport`: the transports (tcpkit's socket streams, or any
  anyio byte stream).

``put``/``send`` only encode and append to the pending output; the output of
every handler run for one read leaves in one write.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import anyio.abc
from anyio.abc import SocketAttribute

from ._driver import Driver, current_connection
from ._session import Session, State
from ._transport import as_transport
from .codecs.base import CodecSpec, Decoder, resolve_codec
from .exceptions import RegistrationError
from .observer import peer_of

if TYPE_CHECKING:
    from ._tasks import TaskPool
    from ._watchdog import Watchdog
    from .observer import Observer
    from .proxy import ProxyHeader
    from .server import Server
    from .settings import Handlers, Settings
    from .stats import ConnectionCounts, ServerStats

__all__ = ["Connection", "ServerContext", "current_connection"]

In = TypeVar("In")
Out = TypeVar("Out")
I2 = TypeVar("I2")
_OPEN = State.OPEN
O2 = TypeVar("O2")


@dataclass(frozen=True)
class ServerContext:
    """What a running server gives each of its connections."""

    server: Server[Any, Any]
    settings: Settings
    handlers: Handlers
    stats: ServerStats
    observer: Observer
    pool: TaskPool
    watchdog: Watchdog | None
    """Checks the connections' time limits (``None``: the app sets none)."""
    ended: Callable[[Connection[Any, Any]], None]
    """Called when a connection started with ``Connection.start`` has ended."""


class Connection(Generic[In, Out]):
    """A client connection (POE's client session, its HEAP and its wheel).

    Handlers receive it as their first argument. Its public attributes are the
    POE HEAP members: ``remote_ip``, ``remote_port``, ``remote_addr``,
    ``shutting_down``, ``got_an_error``, ``shutdown_on_error``, plus ``id``,
    ``server``, ``state`` (from ``App(state=...)``), ``args`` (the app's
    ``client_args``) and ``local_addr``.

    Subclass it and pass ``App(connection_class=...)`` to add behaviour
    (POE's SessionType); a subclass's ``__init__`` passes its arguments on.
    """

    def __init__(
        self,
        context: ServerContext,
        conn_id: int,
        stream: anyio.abc.ByteStream,
        remote_addr: Any = None,
    ) -> None:
        settings = context.settings
        self.id = conn_id
        self.server: Server[In, Out] = context.server
        self.args = settings.client_args
        self.state: Any = settings.state() if settings.state is not None else None
        self.shutdown_on_error = settings.shutdown_on_error
        self.got_an_error = False
        remote = remote_addr or stream.extra(SocketAttribute.remote_address, None)
        self.remote_addr: Any = remote
        self.local_addr: Any = stream.extra(SocketAttribute.local_address, None)
        self.remote_ip: str | None = str(remote[0]) if isinstance(remote, tuple) else None  # pyright: ignore[reportUnknownArgumentType]
        self.remote_port: int | None = int(remote[1]) if isinstance(remote, tuple) else None  # pyright: ignore[reportUnknownArgumentType]
        self._context = context
        self._stream = stream
        self._session = Session(
            self,
            settings,
            context.handlers,
            context.stats,
            context.observer,
        )
        self._driver: Driver | None = None  # once set up
        self.opened_at: float | None = None
        """``time.monotonic()`` when the setup completed (``None`` before)."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} #{self.id} {peer_of(self.remote_addr)}>"

    # -- state ------------------------------------------------------------------------

    @property
    def shutting_down(self) -> bool:
        """True from the moment a shutdown or close begins, whatever began it."""
        state = self._session.state
        return state is State.CLOSING or state is State.CLOSED

    @property
    def closed(self) -> bool:
        """True once the connection has been closed (``close()`` or the end of it)."""
        return self._session.state is State.CLOSED

    @property
    def pending_output(self) -> int:
        """Bytes queued by ``send``/``put`` and not yet handed to the OS."""
        session = self._session
        return session.out_size + session.in_flight

    @property
    def counts(self) -> ConnectionCounts:
        """What this connection carried so far: bytes and messages each way."""
        return self._session.counts

    @property
    def close_reason(self) -> str | None:
        """Why the connection began to end (:data:`tcpkit.observer.CLOSE_REASONS`), or ``None``."""
        return self._session.close_reason

    @property
    def close_error(self) -> str | None:
        """The type name of the error that ended the connection, if one did."""
        return self._session.close_error

    @property
    def input_paused(self) -> bool:
        """True between :meth:`pause_input` and :meth:`resume_input`."""
        return self._session.paused

    @property
    def stream(self) -> anyio.abc.ByteStream:
        """The byte stream in use (after ``pre_connect`` and TLS, the wrapped one)."""
        driver = self._driver
        return self._stream if driver is None else driver.transport.stream

    # -- what the setup learned (PROXY header, TLS) ------------------------------------

    @property
    def proxy(self) -> ProxyHeader | None:
        """The PROXY header this connection began with (``App(proxy_protocol=...)``), or ``None``.

        Its ``source`` is ``remote_addr``; for version 2, its TLVs are read by
        name: ``conn.proxy.alpn``, ``authority``, ``unique_id``, ``ssl``
        (what the proxy knew of the client's TLS), ``netns``. (It is the
        stream's ``extra(ProxyAttribute.header)``: a stream ``pre_connect``
        wraps must pass its inner stream's attributes on, as anyio's do.)
        """
        from .proxy import ProxyAttribute

        return self.stream.extra(ProxyAttribute.header, None)

    @property
    def peer_certificate(self) -> dict[str, Any] | None:
        """The client's TLS certificate, as ``ssl.SSLSocket.getpeercert()`` gives it.

        ``None`` without TLS, or when the client sent no certificate (the
        server's context asks for one with ``verify_mode`` ``CERT_OPTIONAL``
        or ``CERT_REQUIRED``: ``--ssl-cert-reqs``). With ``CERT_REQUIRED`` a
        client without a valid certificate never gets this far: its
        handshake fails.
        """
        from anyio.streams.tls import TLSAttribute

        return self.stream.extra(TLSAttribute.peer_certificate, None)

    @property
    def tls_version(self) -> str | None:
        """The TLS version in use (``"TLSv1.3"``), or ``None`` without TLS."""
        from anyio.streams.tls import TLSAttribute

        return self.stream.extra(TLSAttribute.tls_version, None)

    @property
    def cipher(self) -> tuple[str, str, int] | None:
        """The TLS cipher in use, as ``(name, protocol, secret bits)``, or ``None`` without TLS."""
        from anyio.streams.tls import TLSAttribute

        return self.stream.extra(TLSAttribute.cipher, None)

    # -- output -------------------------------------------------------------------------

    def put(self, message: Out) -> None:
        """Encode ``message`` and queue it for sending, without waiting (POE ``put``).

        Usable from plain ``def`` handlers. The output of a handler turn is sent
        in one write when the turn ends, or as soon as an ``async def`` handler
        waits for something.

        Raises:
            ConnectionClosed: the connection is shutting down or closed, or this
                message took the pending output past the hard limit (the
                connection is then closed and ``on_error`` sees
                :class:`~tcpkit.WriteBufferFull`).
            EncodeError: the codec cannot encode ``message``.
        """
        session = self._session
        driver = self._driver
        if session.state is not _OPEN or driver is None:
            raise session.not_writable()
        data = session.encoder.encode(message)
        session.stats.messages_out += 1
        session.counts.messages_out += 1
        if not data:
            return
        size = session.out_size + len(data)
        if size + session.in_flight > session.limit:
            closed = session.over_limit(len(data))
            driver.abort()
            raise closed
        session.out.append(data)
        session.out_size = size
        if not session.turning:  # from outside this connection's turns: nobody writes it soon
            driver.flush_soon()

    async def send(self, message: Out) -> None:
        """Encode and send ``message``; wait while the pending output is above the high mark.

        Raises:
            ConnectionClosed: the connection is shutting down or closed.
            EncodeError: the codec cannot encode ``message``.
        """
        self.put(message)
        session = self._session
        if session.out_size + session.in_flight > session.high:
            assert self._driver is not None
            await self._driver.wait_low()

    # -- control ----------------------------------------------------------------------

    def shutdown(self) -> None:
        """Shut down gracefully: deliver no more input, flush pending output, then close.

        Never blocks; safe to call more than once and from any handler.
        """
        self._session.shutdown("server-shutdown" if self.server.closing else "shutdown")
        if self._driver is not None:
            self._driver.wake()

    def close(self) -> None:
        """Close at once: pending output is discarded. Never blocks."""
        self._session.close("aborted" if self.server.closing else "close")
        if self._driver is not None:
            self._driver.abort()

    def pause_input(self) -> None:
        """Stop reading and delivering input until :meth:`resume_input`."""
        self._session.paused = True

    def resume_input(self) -> None:
        """Deliver input again after :meth:`pause_input`."""
        if self._session.paused:
            self._session.paused = False
            if self._driver is not None:
                self._driver.wake()

    def set_codec(self, codec: CodecSpec[I2, O2]) -> Connection[I2, O2]:
        """Switch both directions to ``codec`` (POE ``set_filter``).

        Every byte after the message being handled is decoded by the new codec,
        even bytes that arrived in the same read. Returns this connection, typed
        for the new codec.
        """
        resolved = resolve_codec(codec)
        self.set_input_codec(resolved)
        return self.set_output_codec(resolved)  # type: ignore[return-value]

    def set_input_codec(self, codec: CodecSpec[I2, Any]) -> Connection[I2, Out]:
        """Switch the input direction only; undecoded bytes move to the new decoder."""
        session = self._session
        decoder: Decoder[Any] = resolve_codec(codec).decoder()
        pending = session.decoder.take_pending()
        if pending:
            decoder.push(pending)
        session.decoder = decoder
        return self  # type: ignore[return-value]

    def set_output_codec(self, codec: CodecSpec[Any, O2]) -> Connection[In, O2]:
        """Switch the output direction only; messages already queued are already bytes."""
        self._session.encoder = resolve_codec(codec).encoder()
        return self  # type: ignore[return-value]

    def emit(self, event: str, *args: Any) -> bool:
        """Queue the custom event ``event`` for this connection (POE ``yield``).

        Its ``@app.on_event(event)`` handler is called with ``(conn, *args)``,
        in turn with this connection's other handlers. Returns ``False`` (and
        drops the event) if the connection has already ended.

        Raises:
            RegistrationError: no handler is registered for ``event``.
        """
        h = self._context.handlers.events.get(event)
        if h is None:
            raise RegistrationError(f"no handler registered for event {event!r}")
        if self._session.state is State.CLOSED:
            return False
        self._session.emit(h, args)
        if self._driver is not None:
            self._driver.wake()
        return True

    async def start_tls(
        self, ssl_context: ssl.SSLContext, *, handshake_timeout: float = 10.0
    ) -> None:
        """Upgrade this connection to TLS in place (STARTTLS).

        Call it from a handler after telling the client to go ahead: pending
        output is flushed first, then the handshake runs on the same socket.
        Bytes the client sent right after its STARTTLS command (already read,
        not yet decoded) are handed to TLS, not to the codec.

        Raises:
            ConnectionClosed: the connection is shutting down or closed.
            TimeoutError: the handshake took longer than ``handshake_timeout``.
            anyio.BrokenResourceError: the handshake failed.
        """
        if self._session.state is not State.OPEN or self._driver is None:
            raise self._session.not_writable()
        await self._driver.start_tls(ssl_context, handshake_timeout)

    # -- the life of a connection (called by its server) ------------------------------------

    def start(self, stream: anyio.abc.ByteStream) -> None:
        """Start this connection over ``stream`` (its set-up stream); never blocks.

        Called once by the server when the setup is done; not for handlers.
        The connection gets a task of its own only while it needs one, and
        tells the server (``ServerContext.ended``) once it has ended.
        """
        self._open(stream, self._ended_started).start()

    async def serve(self, stream: anyio.abc.ByteStream) -> None:
        """Run this connection over ``stream`` to its end, in the calling task.

        Called once by the server when the setup is done; not for handlers.
        """
        await self._open(stream, self._ended).run()

    def _open(self, stream: anyio.abc.ByteStream, on_end: Callable[[], None]) -> Driver:
        context = self._context
        self._stream = stream
        driver = self._driver = Driver(
            self,
            self._session,
            as_transport(stream),
            context.settings,
            context.stats,
            context.pool,
            context.observer,
            context.watchdog,
            on_end,
        )
        self.opened_at = time.monotonic()
        if context.observer:  # (else nothing to tell, per connection)
            context.observer.connection_made(self)
        return driver

    def _ended(self) -> None:
        driver = self._driver
        assert driver is not None
        if self._context.observer:
            self._context.observer.connection_closed(self)
        # The driver refers to this connection: let go of it, so that an ended
        # connection is freed by reference counting (not by the cycle collector).
        self._stream = driver.transport.stream
        self._driver = None

    def _ended_started(self) -> None:
        self._ended()
        self._context.ended(self)
