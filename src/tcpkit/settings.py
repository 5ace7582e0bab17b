"""What an app runs with: its options (:class:`Settings`) and its handlers (:class:`Handlers`).

Both are frozen. ``App(...)`` builds its :class:`Settings` once, validating
every range here and nowhere else; the CLI and the ``--workers`` supervisor
derive theirs with :meth:`Settings.replace` and pass them to
``app.serve(settings=...)``: nothing mutates an app after it is built. The
handlers are snapshotted into :class:`Handlers` when the app starts serving
(registration is closed from then on).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .codecs.base import Codec
from .codecs.lines import Lines
from .connection import Connection
from .handlers import Handler

if TYPE_CHECKING:
    from .proxy import ProxyTrust

__all__ = ["Handlers", "Settings", "WriteBuffer"]


@dataclass(frozen=True)
class WriteBuffer:
    """Write-buffer marks, in bytes (``App(write_buffer=(high, low, limit))``).

    ``await conn.send()`` waits while the pending output is above ``high``,
    until it drops to ``low``. ``limit`` is the hard limit: past it the
    connection is closed with :class:`~tcpkit.WriteBufferFull`.
    """

    high: int = 1024 * 1024
    low: int = 256 * 1024
    limit: int = 64 * 1024 * 1024

    def __post_init__(self) -> None:
        if not 0 <= self.low <= self.high <= self.limit:
            raise ValueError(f"write_buffer must satisfy 0 <= low <= high <= limit, got {self!r}")


@dataclass(frozen=True)
class Settings:
    """Every option of an :class:`~tcpkit.App`, validated once (see ``App`` for each).

    Build a variant with :meth:`replace`; it validates the same way.

    Raises:
        ValueError: a value is out of its range, or an entry of the
            ``proxy_protocol`` allowlist is not a network (it is named).
        TypeError: ``state`` is not callable, ``connection_class`` is not a
            :class:`~tcpkit.Connection` subclass, ``proxy_protocol`` is a
            single string, or ``tcp_keepalive`` is not whole seconds.
    """

    input_codec: Codec[Any, Any] = field(default_factory=Lines)
    output_codec: Codec[Any, Any] = field(default_factory=Lines)
    name: str = "tcpkit"
    max_connections: int | None = None
    state: Callable[[], Any] | None = None
    client_args: tuple[Any, ...] = ()
    listener_args: tuple[Any, ...] = ()
    connection_class: type[Connection[Any, Any]] = Connection
    shutdown_on_error: bool = True
    idle_timeout: float | None = None
    message_timeout: float | None = None
    send_timeout: float | None = None
    max_lifetime: float | None = None
    max_connections_per_ip: int | None = None
    write_buffer: WriteBuffer = WriteBuffer()
    setup_timeout: float | None = 10.0
    proxy_protocol: bool | Sequence[str] = False
    """``True`` (trust a header from any peer), ``False``, or an allowlist of
    networks (kept as a tuple, normalised: ``("10.0.0.0/8", "127.0.0.1/32")``)."""
    busy_poll: float | None = None
    """Busy polling's limit in seconds (``None``: off, the default)."""
    tcp_nodelay: bool = True
    """Send small writes at once (``TCP_NODELAY``) on accepted TCP sockets."""
    tcp_keepalive: int | None = None
    """Seconds of silence before TCP keepalive probes start (``None``: off, the OS default)."""
    read_size: int = 65536
    """The most one read from a socket takes."""
    linger: float = 2.0
    """After a graceful close, how long at most to read and drop client input so
    that the client gets our last bytes instead of a reset."""
    linger_quiet: float = 0.1
    """Lingering stops earlier once the client has sent nothing for this long."""
    _proxy_trust: ProxyTrust | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _check_ranges(self)
        _check_kinds(self)
        _check_proxy(self)
        _check_tcp(self)

    @property
    def proxy_trust(self) -> ProxyTrust | None:
        """The PROXY allowlist, parsed (``None`` when every peer is trusted, or PROXY is off)."""
        return self._proxy_trust

    @property
    def watched(self) -> bool:
        """Whether connections have a time limit that the server's watchdog checks."""
        return any(
            t is not None
            for t in (self.idle_timeout, self.message_timeout, self.send_timeout, self.max_lifetime)
        )

    def replace(self, **changes: Any) -> Settings:
        """A copy with ``changes`` applied (validated like the original).

        Raises:
            ValueError: a value is out of its range.
            TypeError: an unknown option, or a value of the wrong kind.
        """
        return dataclasses.replace(self, **changes)


_TIMEOUTS = ("idle_timeout", "message_timeout", "send_timeout", "max_lifetime", "setup_timeout")


def _check_ranges(settings: Settings) -> None:
    _check_limits(settings)
    for name in _TIMEOUTS:
        value = getattr(settings, name)
        if value is not None and value <= 0:
            raise ValueError(f"{name} must be None or > 0")
    if settings.busy_poll is not None and not 0 <= settings.busy_poll <= 1:
        raise ValueError("busy_poll must be between 0 and 1 (seconds), or None")
    if settings.read_size < 1 or settings.linger < 0 or settings.linger_quiet < 0:
        raise ValueError("read_size must be >= 1, linger and linger_quiet >= 0")


def _check_limits(settings: Settings) -> None:
    if settings.max_connections is not None and settings.max_connections < 0:
        raise ValueError("max_connections must be None or >= 0")
    if settings.max_connections_per_ip is not None and settings.max_connections_per_ip < 1:
        raise ValueError("max_connections_per_ip must be None or >= 1")


def _check_kinds(settings: Settings) -> None:
    cls: Any = settings.connection_class  # (checked at run time: callers may not be typed)
    if not (isinstance(cls, type) and issubclass(cls, Connection)):
        raise TypeError("connection_class must be a subclass of tcpkit.Connection")
    if settings.state is not None and not callable(settings.state):
        raise TypeError("state must be a zero-argument factory (a class or a function)")


TCP_KEEPALIVE_MAX = 32767
"""The longest keepalive idle time and interval Linux takes, in seconds."""


def _check_proxy(settings: Settings) -> None:
    """Parse an allowlist once (a bad entry is named) and keep it normalised."""
    value: Any = settings.proxy_protocol
    if isinstance(value, bool):
        return
    from .proxy import ProxyTrust

    trust = ProxyTrust(value)  # (TypeError for a lone string, ValueError naming a bad entry)
    object.__setattr__(settings, "proxy_protocol", trust.entries)
    object.__setattr__(settings, "_proxy_trust", trust)


def _check_tcp(settings: Settings) -> None:
    keepalive: Any = settings.tcp_keepalive
    if keepalive is None:
        return
    if isinstance(keepalive, bool) or not isinstance(keepalive, int):
        raise TypeError(f"tcp_keepalive must be None or whole seconds, got {keepalive!r}")
    if not 1 <= keepalive <= TCP_KEEPALIVE_MAX:
        raise ValueError(
            f"tcp_keepalive must be None or between 1 and {TCP_KEEPALIVE_MAX} seconds, "
            f"got {keepalive}"
        )


@dataclass(frozen=True)
class Handlers:
    """The handlers registered on an app, snapshotted when it starts serving."""

    pre_connect: Handler | None = None
    on_connect: Handler | None = None
    on_input: Handler | None = None
    on_disconnect: Handler | None = None
    on_error: Handler | None = None
    on_flushed: Handler | None = None
    events: Mapping[str, Handler] = field(default_factory=dict[str, Handler])
    acceptor: Handler | None = None
    on_started: Handler | None = None
    on_stopped: Handler | None = None
    on_listen_error: Handler | None = None
