"""The App: handlers and settings of a server (POE::Component::Server::TCP->new).

Handlers are registered with decorators, each a thin wrapper over an ``add_*``
method that returns the function unchanged. Registration is frozen once the
app serves. Running is delegated to :mod:`tcpkit.server` and
:mod:`tcpkit.runner`; the app itself knows no backend.
"""

from __future__ import annotations

import inspect
import ssl as _ssl
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Generic, TypeAlias, TypeVar, Union, overload

import anyio.abc
from typing_extensions import TypedDict, Unpack

from .codecs.base import Codec, CodecSpec, resolve_codec
from .codecs.lines import Lines
from .connection import Connection
from .exceptions import RegistrationError
from .handlers import Handler, handler
from .settings import Handlers, Settings, WriteBuffer

if TYPE_CHECKING:
    import socket

    from .observer import Observer
    from .server import ListenConfig, Server

__all__ = ["App", "AppOptions"]

In = TypeVar("In")
Out = TypeVar("Out")
I = TypeVar("I")  # noqa: E741
O = TypeVar("O")  # noqa: E741
F = TypeVar("F", bound=Callable[..., Any])

_Ret: TypeAlias = Awaitable[Any] | Any
"""What a handler returns: ``None`` from a ``def``, an awaitable from an ``async def``."""

ConnectHandler: TypeAlias = Callable[..., _Ret]
DisconnectHandler: TypeAlias = Callable[[Connection[In, Out]], _Ret]
InputHandler: TypeAlias = Callable[[Connection[In, Out], In], _Ret]
ErrorHandler: TypeAlias = Callable[[Connection[In, Out], Exception], _Ret]
PreConnectHandler: TypeAlias = Callable[
    [Connection[In, Out], anyio.abc.ByteStream],
    Union[Awaitable["bool | anyio.abc.ByteStream | None"], "bool | anyio.abc.ByteStream | None"],
]
AcceptorHandler: TypeAlias = Callable[[anyio.abc.ByteStream, Any], _Ret]
ServerHandler: TypeAlias = Callable[..., _Ret]


class _Default(str):
    """The default host: a plain ``str``, told apart from an explicit one by identity."""


class _DefaultPort(int):
    """A default port: a plain ``int``, told apart from an explicit one by identity."""


_DEFAULT_HOST: str = _Default("127.0.0.1")
_DEFAULT_PORT: int = _DefaultPort(12345)
_DEFAULT_START_PORT: int = _DefaultPort(0)


# The handlers of a default connection: a custom acceptor leaves them uncalled.
_CONNECTION_HANDLERS = (
    "pre_connect",
    "on_connect",
    "on_input",
    "on_disconnect",
    "on_error",
    "on_flushed",
)

# Names that app.include() recognises as the standard handlers.
_STANDARD = (
    "pre_connect",
    "on_connect",
    "on_input",
    "on_disconnect",
    "on_error",
    "on_flushed",
    "on_started",
    "on_stopped",
    "on_listen_error",
    "acceptor",
)


class AppOptions(TypedDict, total=False):
    """The keyword options of :class:`App` other than the codecs."""

    name: str
    max_connections: int | None
    state: Callable[[], Any] | None
    client_args: Sequence[Any]
    listener_args: Sequence[Any]
    connection_class: type[Connection[Any, Any]]
    shutdown_on_error: bool
    idle_timeout: float | None
    message_timeout: float | None
    send_timeout: float | None
    max_lifetime: float | None
    max_connections_per_ip: int | None
    write_buffer: tuple[int, int, int]
    setup_timeout: float | None
    proxy_protocol: bool | Sequence[str]
    busy_poll: float | None
    tcp_nodelay: bool
    tcp_keepalive: int | None


class App(Generic[In, Out]):
    """A TCP server's handlers and settings.

    Args:
        codec: the framing of both directions (POE ClientFilter): a
            :class:`~tcpkit.codecs.Codec` instance (a prototype: each connection
            gets fresh state), a codec class, or ``(class, kwargs)``. Default
            :class:`~tcpkit.Lines`.
        input_codec: the framing of input only (POE ClientInputFilter); overrides ``codec``.
        output_codec: the framing of output only (POE ClientOutputFilter); overrides ``codec``.
        **options: the settings below (:class:`AppOptions`).

    Keyword Args:
        name (str): the server's name in logs (POE Alias).
        max_connections (int | None): open sockets allowed at once (POE Concurrency);
            ``None`` is unlimited, ``0`` accepts nothing until raised.
        state (Callable[[], Any] | None): a zero-argument factory; its result
            is ``conn.state`` (the typed HEAP).
        client_args (Sequence[Any]): extra arguments for ``on_connect`` (POE ClientArgs).
        listener_args (Sequence[Any]): extra arguments for ``on_started``
            (POE ListenerArgs).
        connection_class (type[Connection]): the :class:`Connection` subclass
            used (POE SessionType).
        shutdown_on_error (bool): shut a connection down after ``on_error``
            (POE ClientShutdownOnError); per connection as
            ``conn.shutdown_on_error``.
        idle_timeout (float | None): seconds without progress either way (no input read, no
            output taken by the OS) after which a connection is closed, with
            :class:`~tcpkit.IdleTimeout` reported to ``on_error``; a transfer
            in progress is not idle. ``None``: no limit.
        message_timeout (float | None): once a message's first byte has arrived, seconds
            within which the whole message must arrive (a slow trickle is cut:
            :class:`~tcpkit.MessageTimeout`). Uses the decoder's
            ``in_progress``.
        send_timeout (float | None): seconds pending output may make no progress (a client
            that stopped reading) before the connection is closed with
            :class:`~tcpkit.SendTimeout`; a waiting ``send()`` then raises
            :class:`~tcpkit.ConnectionClosed`.
        max_lifetime (float | None): seconds after which a connection is shut down gracefully
            (logged; no error).
        max_connections_per_ip (int | None): open connections allowed from one client
            address (the real client's, after a PROXY header); one more is
            closed at once and counted as rejected.
        write_buffer (tuple[int, int, int]): ``(high, low, limit)`` in bytes;
            see :class:`WriteBuffer`.
        setup_timeout (float | None): seconds allowed for PROXY header, TLS handshake and
            ``pre_connect`` together; ``None`` for no limit.
        proxy_protocol (bool | Sequence[str]): expect a PROXY protocol v1/v2 header on every
            connection, from any peer (``True``: safe only when nothing but
            the proxy can reach the port), or only from the peers of an
            allowlist (``["10.0.0.0/8", "127.0.0.1", "::1"]``, ``"unix"`` for
            Unix sockets): a connection from any other peer is closed before
            a byte is read. ``conn.proxy`` is the parsed header.
        busy_poll (float | None): after a read, keep the event loop polling for input (instead
            of sleeping) for up to this many seconds, a window that adapts to
            the traffic (it closes when clients are sparse); ``0`` or ``None``
            turns it off. It saves a sleep and wake-up per request in
            request-response traffic, and costs at most one window of CPU per
            read. See the Performance page.
        tcp_nodelay (bool): set ``TCP_NODELAY`` on accepted TCP sockets (small
            writes leave at once); ``False`` lets the kernel coalesce them
            (Nagle's algorithm).
        tcp_keepalive (int | None): turn TCP keepalive on, with probes after this many
            seconds of silence, then every third of it, three times: a peer
            that vanished (power loss, a dropped NAT entry) is noticed within
            about twice this. ``None`` (default): the OS default, off.
    """

    @overload
    def __init__(
        self: App[str, str],
        codec: None = None,
        *,
        input_codec: None = None,
        output_codec: None = None,
        **options: Unpack[AppOptions],
    ) -> None: ...

    @overload
    def __init__(
        self: App[I, O],
        codec: CodecSpec[I, O],
        *,
        input_codec: None = None,
        output_codec: None = None,
        **options: Unpack[AppOptions],
    ) -> None: ...

    @overload
    def __init__(
        self: App[I, O],
        codec: None = None,
        *,
        input_codec: CodecSpec[I, Any],
        output_codec: CodecSpec[Any, O],
        **options: Unpack[AppOptions],
    ) -> None: ...

    @overload
    def __init__(
        self: App[Any, Any],
        codec: CodecSpec[Any, Any] | None = None,
        *,
        input_codec: CodecSpec[Any, Any] | None = None,
        output_codec: CodecSpec[Any, Any] | None = None,
        **options: Unpack[AppOptions],
    ) -> None: ...

    def __init__(
        self,
        codec: CodecSpec[Any, Any] | None = None,
        *,
        input_codec: CodecSpec[Any, Any] | None = None,
        output_codec: CodecSpec[Any, Any] | None = None,
        **options: Unpack[AppOptions],
    ) -> None:
        base: Codec[Any, Any] = resolve_codec(codec) if codec is not None else Lines()
        values: dict[str, Any] = dict(options)
        for name in ("client_args", "listener_args"):
            if name in values:
                values[name] = tuple(values[name])
        if "write_buffer" in values:
            values["write_buffer"] = WriteBuffer(*values["write_buffer"])
        self._settings = Settings(
            input_codec=resolve_codec(input_codec) if input_codec is not None else base,
            output_codec=resolve_codec(output_codec) if output_codec is not None else base,
            **values,
        )
        self._handlers: dict[str, Handler] = {}
        self._events: dict[str, Handler] = {}
        self._frozen: Handlers | None = None

    @property
    def settings(self) -> Settings:
        """Every option of this app, validated and frozen (see :class:`~tcpkit.Settings`).

        Run with other options by passing ``settings=app.settings.replace(...)``
        to :meth:`start`, :meth:`serve` or :meth:`run`; the app itself never changes.
        """
        return self._settings

    @property
    def name(self) -> str:
        """The server's name in logs (POE Alias)."""
        return self._settings.name

    @property
    def input_codec(self) -> Codec[In, Any]:
        """The codec of input (what ``on_input`` receives)."""
        return self._settings.input_codec

    @property
    def output_codec(self) -> Codec[Any, Out]:
        """The codec of output (what ``send``/``put`` take)."""
        return self._settings.output_codec

    def __repr__(self) -> str:
        return (
            f"<App {self.name!r} handlers={sorted(self._handlers)} events={sorted(self._events)}>"
        )

    # -- registration --------------------------------------------------------

    def _add(self, kind: str, func: Callable[..., Any]) -> None:
        if self._frozen is not None:
            raise RegistrationError(
                f"cannot register {kind}: the app is already serving "
                "(register every handler before starting it)"
            )
        if kind in self._handlers:
            raise RegistrationError(f"{kind} is already registered ({self._handlers[kind].func!r})")
        self._refuse_unused(kind)
        self._handlers[kind] = handler(func)

    def _refuse_unused(self, kind: str) -> None:
        """Refuse a handler that a custom acceptor would leave uncalled (or the acceptor)."""
        if kind == "acceptor":
            clash = [k for k in _CONNECTION_HANDLERS if k in self._handlers]
            clash += [f"on_event({name!r})" for name in self._events]
        elif "acceptor" in self._handlers and (kind in _CONNECTION_HANDLERS or kind == "on_event"):
            clash = [kind]
        else:
            return
        if clash:
            raise RegistrationError(
                f"acceptor and {', '.join(clash)} are mutually exclusive: a custom acceptor "
                "replaces the default connection handling, so they would never be called"
            )

    def add_pre_connect(self, func: PreConnectHandler[In, Out]) -> None:
        """Register the ``pre_connect`` handler (POE ClientPreConnect)."""
        self._add("pre_connect", func)

    def add_on_connect(self, func: ConnectHandler) -> None:
        """Register the ``on_connect`` handler (POE ClientConnected)."""
        self._add("on_connect", func)

    def add_on_input(self, func: InputHandler[In, Out]) -> None:
        """Register the ``on_input`` handler (POE ClientInput)."""
        self._add("on_input", func)

    def add_on_disconnect(self, func: DisconnectHandler[In, Out]) -> None:
        """Register the ``on_disconnect`` handler (POE ClientDisconnected)."""
        self._add("on_disconnect", func)

    def add_on_error(self, func: ErrorHandler[In, Out]) -> None:
        """Register the ``on_error`` handler (POE ClientError)."""
        self._add("on_error", func)

    def add_on_flushed(self, func: DisconnectHandler[In, Out]) -> None:
        """Register the ``on_flushed`` handler (POE ClientFlushed)."""
        self._add("on_flushed", func)

    def add_on_started(self, func: ServerHandler) -> None:
        """Register the ``on_started`` handler (POE Started)."""
        self._add("on_started", func)

    def add_on_stopped(self, func: ServerHandler) -> None:
        """Register the ``on_stopped`` handler (POE Stopped)."""
        self._add("on_stopped", func)

    def add_on_listen_error(self, func: ServerHandler) -> None:
        """Register the ``on_listen_error`` handler (POE Error)."""
        self._add("on_listen_error", func)

    def add_acceptor(self, func: AcceptorHandler) -> None:
        """Register a custom acceptor (POE Acceptor).

        It replaces the default connection handling, so it excludes every
        per-connection handler (``pre_connect``, ``on_connect``, ``on_input``,
        ``on_disconnect``, ``on_error``, ``on_flushed``, custom events): either
        order of registration raises :class:`~tcpkit.RegistrationError`.
        """
        self._add("acceptor", func)

    def add_on_event(self, name: str, func: Callable[..., _Ret]) -> None:
        """Register the handler of the custom event ``name`` (POE InlineStates).

        Raises:
            RegistrationError: the app is serving, or ``name`` already has a handler.
        """
        if self._frozen is not None:
            raise RegistrationError(f"cannot register event {name!r}: the app is already serving")
        if not isinstance(name, str) or not name:  # pyright: ignore[reportUnnecessaryIsInstance]
            raise TypeError("an event name must be a non-empty string")
        if name in self._events:
            raise RegistrationError(f"event {name!r} already has a handler")
        self._refuse_unused("on_event")
        self._events[name] = handler(func)

    def pre_connect(self, func: F) -> F:
        """Decorator: ``(conn, stream)`` before setup; return falsy to reject,
        ``True`` to accept, or a wrapped ``anyio.abc.ByteStream`` to use instead."""
        self.add_pre_connect(func)
        return func

    def on_connect(self, func: F) -> F:
        """Decorator: ``(conn, *client_args)`` once per connection, after ``pre_connect``."""
        self.add_on_connect(func)
        return func

    def on_input(
        self, func: Callable[[Connection[In, Out], In], _Ret]
    ) -> Callable[[Connection[In, Out], In], _Ret]:
        """Decorator: ``(conn, message)`` for every decoded message, in order."""
        self.add_on_input(func)
        return func

    def on_disconnect(self, func: F) -> F:
        """Decorator: ``(conn)`` exactly once per connection that was connected."""
        self.add_on_disconnect(func)
        return func

    def on_error(self, func: F) -> F:
        """Decorator: ``(conn, exc)`` for socket, codec and handler errors."""
        self.add_on_error(func)
        return func

    def on_flushed(self, func: F) -> F:
        """Decorator: ``(conn)`` each time all pending output was handed to the OS."""
        self.add_on_flushed(func)
        return func

    def on_started(self, func: F) -> F:
        """Decorator: ``(server, *listener_args)`` after every listener is bound."""
        self.add_on_started(func)
        return func

    def on_stopped(self, func: F) -> F:
        """Decorator: ``(server)`` once, when the server has fully stopped."""
        self.add_on_stopped(func)
        return func

    def on_listen_error(self, func: F) -> F:
        """Decorator: ``(server, exc)`` on a bind or accept failure."""
        self.add_on_listen_error(func)
        return func

    def acceptor(self, func: F) -> F:
        """Decorator: ``(stream, remote_addr)`` replaces default connection handling."""
        self.add_acceptor(func)
        return func

    def on_event(self, name: str) -> Callable[[F], F]:
        """Decorator factory: ``(conn, *args)`` when ``conn.emit(name, ...)`` or
        ``server.post(conn_id, name, ...)`` is called."""

        def register(func: F) -> F:
            self.add_on_event(name, func)
            return func

        return register

    def include(self, obj: object, events: Mapping[str, str] | Sequence[str] | None = None) -> None:
        """Register the handler methods of an object or a class in one call.

        POE's ObjectStates (an object) and PackageStates (a class). Methods named
        like the decorators (``on_connect``, ``on_input``, ``pre_connect``,
        ``acceptor``...) become those handlers. ``events`` names custom events:
        a list of method names (each event is named like its method), or a
        mapping of event name to method name. For a class, plain methods are
        called with the class as ``self`` (as Perl calls ``Package->method``).

        Raises:
            RegistrationError: a handler is already registered, or a named
                method is missing.
        """
        found = 0
        for kind in _STANDARD:
            method = _lookup(obj, kind)
            if method is not None:
                self._add(kind, method)
                found += 1
        pairs: list[tuple[str, str]]
        if events is None:
            pairs = []
        elif isinstance(events, Mapping):
            pairs = list(events.items())
        else:
            pairs = [(name, name) for name in events]
        for event, method_name in pairs:
            method = _lookup(obj, method_name)
            if method is None:
                raise RegistrationError(f"{obj!r} has no method {method_name!r}")
            self.add_on_event(event, method)
            found += 1
        if not found:
            raise RegistrationError(f"{obj!r} has no handler methods to include")

    # -- freezing and running ----------------------------------------------------

    @property
    def frozen(self) -> bool:
        """True once the app has started serving (registration is closed)."""
        return self._frozen is not None

    @property
    def handlers(self) -> Handlers:
        """The registered handlers; reading this closes registration (as serving does)."""
        if self._frozen is None:
            h = self._handlers
            self._frozen = Handlers(
                pre_connect=h.get("pre_connect"),
                on_connect=h.get("on_connect"),
                on_input=h.get("on_input"),
                on_disconnect=h.get("on_disconnect"),
                on_error=h.get("on_error"),
                on_flushed=h.get("on_flushed"),
                events=dict(self._events),
                acceptor=h.get("acceptor"),
                on_started=h.get("on_started"),
                on_stopped=h.get("on_stopped"),
                on_listen_error=h.get("on_listen_error"),
            )
        return self._frozen

    def make_server(
        self, settings: Settings | None = None, observers: Sequence[Observer] = ()
    ) -> Server[In, Out]:
        """A :class:`~tcpkit.Server` for this app, not running yet (closes registration).

        ``await server.running(...)`` runs it; :meth:`start`, :meth:`serve`
        and :meth:`run` do all of that for you.
        """
        from .server import Server

        return Server(settings or self._settings, self.handlers, observers)

    @asynccontextmanager
    async def start(
        self,
        host: str | Sequence[str] | None = _DEFAULT_HOST,
        port: int | None = _DEFAULT_START_PORT,
        *,
        uds: str | None = None,
        ssl: _ssl.SSLContext | None = None,
        reuse_port: bool = False,
        backlog: int = 1024,
        uds_mode: int | None = None,
        sockets: Sequence[socket.socket] = (),
        listeners: Sequence[anyio.abc.Listener[anyio.abc.ByteStream]] = (),
        settings: Settings | None = None,
        observers: Sequence[Observer] = (),
    ) -> AsyncGenerator[Server[In, Out], None]:
        """Bind, start serving, and yield the running :class:`~tcpkit.Server`.

        Leaving the block is ``server.shutdown(grace=0)``: listeners close,
        connections are shut down gracefully (queued output is delivered), and
        ``on_stopped`` runs. ``port`` defaults to 0 (the OS picks one; read it
        from ``server.port``). With ``uds`` alone, only the Unix socket listens;
        ``uds_mode`` (e.g. ``0o660``) sets its permissions. ``sockets`` are
        already bound, listening sockets to serve as well (the server takes
        ownership), and ``listeners`` any anyio listeners of byte streams (an
        in-memory one in tests); given alone, only they are served.
        ``settings`` replaces :attr:`settings` for this run; ``observers`` see
        it from outside (see :mod:`tcpkit.observer`).

        Raises:
            ServerError: an address could not be bound.
        """
        server = self.make_server(settings, observers)
        listen = _listen_config(
            host, port, uds, ssl, reuse_port, backlog, uds_mode, sockets, listeners
        )
        async with server.running(listen):
            yield server

    async def serve(
        self,
        host: str | Sequence[str] | None = _DEFAULT_HOST,
        port: int | None = _DEFAULT_PORT,
        *,
        uds: str | None = None,
        ssl: _ssl.SSLContext | None = None,
        reuse_port: bool = False,
        backlog: int = 1024,
        uds_mode: int | None = None,
        sockets: Sequence[socket.socket] = (),
        listeners: Sequence[anyio.abc.Listener[anyio.abc.ByteStream]] = (),
        settings: Settings | None = None,
        observers: Sequence[Observer] = (),
        handle_signals: bool = False,
        drain_timeout: float = 30.0,
        task_status: anyio.abc.TaskStatus[Server[In, Out]] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve until the server is shut down, inside an existing anyio program.

        The arguments are :meth:`start`'s, and: with ``handle_signals=True``
        (what :meth:`run` and the CLI use), SIGINT/SIGTERM start a graceful
        shutdown bounded by ``drain_timeout``; a second signal aborts at once.
        ``task_status.started(server)`` is reported once every listener is bound.

        Raises:
            ServerError: an address could not be bound.
        """
        from .runner import serve_until_stopped

        await serve_until_stopped(
            self.make_server(settings, observers),
            _listen_config(host, port, uds, ssl, reuse_port, backlog, uds_mode, sockets, listeners),
            handle_signals=handle_signals,
            drain_timeout=drain_timeout,
            task_status=task_status,
        )

    def run(
        self,
        host: str | Sequence[str] | None = _DEFAULT_HOST,
        port: int | None = _DEFAULT_PORT,
        *,
        backend: str = "asyncio",
        backend_options: dict[str, Any] | None = None,
        drain_timeout: float = 30.0,
        **options: Any,
    ) -> None:
        """Serve until SIGINT/SIGTERM; blocks. The same defaults as the CLI.

        ``backend`` is ``"asyncio"`` or ``"trio"``;
        ``backend_options={"use_uvloop": True}`` selects uvloop. The first
        signal starts a graceful shutdown (``grace=0``, flushing bounded by
        ``drain_timeout``); a second one aborts. The other keyword arguments
        are :meth:`serve`'s (``uds``, ``ssl``, ``settings``...).

        Raises:
            ServerError: an address could not be bound.
        """
        from .runner import run

        run(
            self.serve,
            backend=backend,
            backend_options=backend_options,
            host=host,
            port=port,
            drain_timeout=drain_timeout,
            **options,
        )


def _listen_config(
    host: str | Sequence[str] | None,
    port: int | None,
    uds: str | None,
    ssl: _ssl.SSLContext | None,
    reuse_port: bool,
    backlog: int,
    uds_mode: int | None,
    sockets: Sequence[socket.socket],
    listeners: Sequence[anyio.abc.Listener[anyio.abc.ByteStream]],
) -> ListenConfig:
    from .server import ListenConfig

    defaults = host is _DEFAULT_HOST and (port is _DEFAULT_PORT or port is _DEFAULT_START_PORT)
    if (uds is not None or sockets or listeners) and defaults:
        port = None  # only those, unless a TCP address was asked for
    return ListenConfig(
        host=host,
        port=port,
        uds=uds,
        ssl=ssl,
        reuse_port=reuse_port,
        backlog=backlog,
        uds_mode=uds_mode,
        sockets=tuple(sockets),
        listeners=tuple(listeners),
    )


def _lookup(obj: object, name: str) -> Callable[..., Any] | None:
    """A handler method of an object, or of a class (called with the class as self)."""
    if isinstance(obj, type):
        raw = inspect.getattr_static(obj, name, None)
        if raw is None:
            return None
        if isinstance(raw, (staticmethod, classmethod)):
            return getattr(obj, name)  # type: ignore[no-any-return]
        if callable(raw):
            return getattr(obj, name).__get__(obj, type(obj))  # type: ignore[no-any-return]
        return None
    method = getattr(obj, name, None)
    return method if callable(method) else None
