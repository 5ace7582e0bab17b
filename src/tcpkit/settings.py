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
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .codecs.base import Codec
from .codecs.lines import Lines
from .connection import Connection
from .handlers import Handler

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
        ValueError: a value is out of its range.
        TypeError: ``state`` is not callable, or ``connection_class`` is not a
            :class:`~tcpkit.Connection` subclass.
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
    proxy_protocol: bool = False
    busy_poll: float | None = 100e-6
    read_size: int = 65536
    """The most one read from a socket takes."""
    linger: float = 2.0
    """After a graceful close, how long at most to read and drop client input so
    that the client gets our last bytes instead of a reset."""
    linger_quiet: float = 0.1
    """Lingering stops earlier once the client has sent nothing for this long."""

    def __post_init__(self) -> None:
        _check_ranges(self)
        _check_kinds(self)

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
