"""Watching connections from outside the app: the access log, metrics, the control socket.

The core calls a :class:`ConnectionObserver` (``App.observer``) at four
points of a connection's life: once it is set up (``connection_opened``),
for every error reported to ``on_error`` (``connection_error``), after each
``on_input`` call (``message_handled``, with the seconds it took), and once
it has ended (``connection_closed``, with a :class:`ClosedConnectionInfo`);
a connection refused during its setup (``pre_connect``, PROXY header, TLS,
``setup_timeout``) is reported by ``connection_rejected`` instead. The
observer never changes the user's handlers, and without one the core pays
nothing.

This module holds the protocol, the info record, and the observers that
``tcpkit run`` uses: :class:`AccessLog` (``--access-log``) and
:class:`Recorder` (counts for ``--metrics`` and ``--control``).
"""

from __future__ import annotations

import bisect
import dataclasses
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from .stats import ServerStats

if TYPE_CHECKING:
    from .connection import Connection

__all__ = [
    "CLOSE_REASONS",
    "LATENCY_BUCKETS",
    "AccessLog",
    "ClosedConnectionInfo",
    "ConnectionObserver",
    "ForwardingStats",
    "Observers",
    "Recorder",
    "peer_of",
]

CLOSE_REASONS = (
    "eof",
    "shutdown",
    "close",
    "idle-timeout",
    "error",
    "server-shutdown",
    "aborted",
)
"""Why a connection ended, as :attr:`ClosedConnectionInfo.reason` says it:

* ``eof``: the client closed (or half-closed) its side first;
* ``shutdown`` / ``close``: the app called ``conn.shutdown()`` / ``conn.close()``;
* ``idle-timeout``: ``idle_timeout`` passed without input;
* ``error``: an error ended it (a reset, a codec or handler error with
  ``shutdown_on_error``, a full write buffer); ``error`` names its type;
* ``server-shutdown``: the server was stopping (a drain, a reload);
* ``aborted``: the server aborted it (a drain timeout, a second signal).
"""

REJECT_REASONS = ("rejected", "setup-timeout", "setup-failed")
"""Why a connection was refused during its setup (``connection_rejected``)."""

LATENCY_BUCKETS: tuple[float, ...] = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
"""Upper bounds (seconds) of the handler-latency histogram; one more bucket is +Inf."""


def peer_of(remote_ip: str | None, remote_port: int | None, remote_addr: Any = None) -> str:
    """``1.2.3.4:5678``, ``[::1]:5678``, or ``(unix)``: how log lines name a client."""
    if remote_ip is None:
        return str(remote_addr) if remote_addr else "(unix)"
    if ":" in remote_ip:
        return f"[{remote_ip}]:{remote_port}"
    return f"{remote_ip}:{remote_port}"


@dataclass(frozen=True)
class ClosedConnectionInfo:
    """What is known about a connection once it has ended.

    Attributes:
        server: the server's name (``App(name=...)``).
        id: the connection id (``conn.id``).
        remote_ip: the client's address (after PROXY), ``None`` on a Unix socket.
        remote_port: the client's port.
        peer: ``remote_ip:remote_port`` as log lines write it.
        duration: seconds from the end of its setup to its end.
        bytes_in: bytes read from the client.
        bytes_out: bytes handed to the OS for the client.
        messages_in: messages decoded and handled.
        messages_out: messages sent.
        reason: why it ended, one of :data:`CLOSE_REASONS`.
        error: the type name of the error that ended it, if any.
    """

    server: str
    id: int
    remote_ip: str | None
    remote_port: int | None
    peer: str
    duration: float
    bytes_in: int
    bytes_out: int
    messages_in: int
    messages_out: int
    reason: str
    error: str | None = None

    def as_extra(self) -> dict[str, Any]:
        """The fields for a log record's ``extra`` (``conn_id`` for ``id``)."""
        fields = dataclasses.asdict(self)
        fields["conn_id"] = fields.pop("id")
        return fields


class ConnectionObserver(Protocol):
    """What the core tells an observer (``App.observer``). Every method must not block."""

    times_handlers: bool
    """Whether ``message_handled`` wants the time of each ``on_input`` call (two clock
    reads per message: an observer that does not use them says ``False``)."""

    def connection_opened(self, conn: Connection[Any, Any]) -> None:
        """``conn`` completed its setup (before ``on_connect``)."""

    def connection_error(self, conn: Connection[Any, Any], exc: BaseException) -> None:
        """``exc`` is being reported to ``on_error`` (it counts in ``stats.errors``)."""

    def message_handled(self, seconds: float) -> None:
        """An ``on_input`` call returned after ``seconds``."""

    def connection_closed(self, info: ClosedConnectionInfo) -> None:
        """A connection that was set up has ended (after ``on_disconnect``)."""

    def connection_rejected(
        self, conn: Connection[Any, Any], reason: str, exc: BaseException | None
    ) -> None:
        """A connection was refused during its setup; ``reason`` is one of
        ``rejected`` (by ``pre_connect``), ``setup-timeout``, ``setup-failed``."""


class ForwardingStats(ServerStats):
    """One connection's own counts; every change is also made to the server's stats.

    The core counts into the ``ServerStats`` object it is given; a connection
    with an observer gets one of these, so the server-wide counts stay exact
    and the connection's own are there for :class:`ClosedConnectionInfo`.
    """

    def __init__(self, parent: ServerStats) -> None:  # pyright: ignore[reportMissingSuperCall]
        own = self.__dict__
        own["_parent"] = parent
        for field in dataclasses.fields(ServerStats):
            own[field.name] = 0

    def __setattr__(self, name: str, value: Any) -> None:
        own = self.__dict__  # (the instance dict directly: this runs for every count)
        parent = own["_parent"]
        setattr(parent, name, getattr(parent, name) + value - own[name])
        own[name] = value


class Observers:
    """Several observers as one (each is called in turn)."""

    def __init__(self, observers: Sequence[ConnectionObserver]) -> None:
        self.observers = tuple(observers)
        self.times_handlers = any(o.times_handlers for o in self.observers)
        self._timers = tuple(o for o in self.observers if o.times_handlers)

    def connection_opened(self, conn: Connection[Any, Any]) -> None:
        for observer in self.observers:
            observer.connection_opened(conn)

    def connection_error(self, conn: Connection[Any, Any], exc: BaseException) -> None:
        for observer in self.observers:
            observer.connection_error(conn, exc)

    def message_handled(self, seconds: float) -> None:
        for observer in self._timers:
            observer.message_handled(seconds)

    def connection_closed(self, info: ClosedConnectionInfo) -> None:
        for observer in self.observers:
            observer.connection_closed(info)

    def connection_rejected(
        self, conn: Connection[Any, Any], reason: str, exc: BaseException | None
    ) -> None:
        for observer in self.observers:
            observer.connection_rejected(conn, reason, exc)


class AccessLog:
    """``--access-log``: one INFO line per closed connection on ``tcpkit.access``.

    The line starts like every connection log line (``NAME #ID PEER:``) and
    the record's ``extra`` carries the same values as
    :class:`ClosedConnectionInfo` (``conn_id``, ``peer``, ``remote_ip``,
    ``remote_port``, ``duration``, ``bytes_in``, ``bytes_out``,
    ``messages_in``, ``messages_out``, ``reason``, ``error``, ``server``) for
    JSON formatters. Opened connections are logged at DEBUG.
    """

    times_handlers = False

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self.logger = logger or logging.getLogger("tcpkit.access")

    def connection_opened(self, conn: Connection[Any, Any]) -> None:
        if self.logger.isEnabledFor(logging.DEBUG):
            peer = peer_of(conn.remote_ip, conn.remote_port, conn.remote_addr)
            self.logger.debug(
                "%s #%d %s: opened",
                conn.server.name,
                conn.id,
                peer,
                extra={"conn_id": conn.id, "peer": peer, "server": conn.server.name},
            )

    def connection_error(self, conn: Connection[Any, Any], exc: BaseException) -> None:
        pass

    def message_handled(self, seconds: float) -> None:
        pass

    def connection_closed(self, info: ClosedConnectionInfo) -> None:
        reason = info.reason if info.error is None else f"{info.reason}: {info.error}"
        self.logger.info(
            "%s #%d %s: closed (%s) after %.3f s, in %d B %d msg, out %d B %d msg",
            info.server,
            info.id,
            info.peer,
            reason,
            info.duration,
            info.bytes_in,
            info.messages_in,
            info.bytes_out,
            info.messages_out,
            extra=info.as_extra(),
        )

    def connection_rejected(
        self, conn: Connection[Any, Any], reason: str, exc: BaseException | None
    ) -> None:
        peer = peer_of(conn.remote_ip, conn.remote_port, conn.remote_addr)
        error = type(exc).__name__ if exc is not None else None
        shown = reason if error is None or reason == "setup-timeout" else f"{reason}: {error}"
        self.logger.info(
            "%s #%d %s: rejected (%s)",
            conn.server.name,
            conn.id,
            peer,
            shown,
            extra={
                "conn_id": conn.id,
                "peer": peer,
                "remote_ip": conn.remote_ip,
                "remote_port": conn.remote_port,
                "reason": reason,
                "error": error,
                "server": conn.server.name,
            },
        )


class Recorder:
    """Counts for metrics and the control socket: closes by reason, errors by kind,
    rejections by reason, the handler-latency histogram, and when each live
    connection opened. :meth:`snapshot` gives them as JSON-ready data.
    """

    times_handlers = True

    def __init__(self) -> None:
        self.closed: dict[str, int] = dict.fromkeys(CLOSE_REASONS, 0)
        self.rejected: dict[str, int] = dict.fromkeys(REJECT_REASONS, 0)
        self.errors: dict[str, int] = {}
        self.latency_counts: list[int] = [0] * (len(LATENCY_BUCKETS) + 1)
        self.latency_sum = 0.0
        self.opened: dict[int, float] = {}  # connection id -> time.monotonic() at setup

    def connection_opened(self, conn: Connection[Any, Any]) -> None:
        self.opened[conn.id] = time.monotonic()

    def connection_error(self, conn: Connection[Any, Any], exc: BaseException) -> None:
        kind = type(exc).__name__
        self.errors[kind] = self.errors.get(kind, 0) + 1

    def message_handled(self, seconds: float) -> None:
        self.latency_counts[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.latency_sum += seconds

    def connection_closed(self, info: ClosedConnectionInfo) -> None:
        self.opened.pop(info.id, None)
        self.closed[info.reason] = self.closed.get(info.reason, 0) + 1

    def connection_rejected(
        self, conn: Connection[Any, Any], reason: str, exc: BaseException | None
    ) -> None:
        self.rejected[reason] = self.rejected.get(reason, 0) + 1

    def age(self, conn_id: int) -> float | None:
        """Seconds since connection ``conn_id`` was set up (``None`` if unknown)."""
        opened = self.opened.get(conn_id)
        return None if opened is None else time.monotonic() - opened

    def snapshot(self) -> dict[str, Any]:
        """The counts as plain JSON-ready data (see :func:`merge_snapshots`)."""
        return {
            "closed": dict(self.closed),
            "rejected": dict(self.rejected),
            "errors": dict(self.errors),
            "latency": {
                "buckets": list(LATENCY_BUCKETS),
                "counts": list(self.latency_counts),
                "sum": self.latency_sum,
            },
        }


def _add_counts(into: dict[str, int], more: Any) -> None:
    if isinstance(more, dict):
        for key, value in more.items():  # pyright: ignore[reportUnknownVariableType]
            if isinstance(key, str) and isinstance(value, int):
                into[key] = into.get(key, 0) + value


def merge_snapshots(snapshots: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Add up several processes' snapshots (``stats`` plus :meth:`Recorder.snapshot`).

    Counters and the current connection count add up; the histogram's counts
    add bucket by bucket.
    """
    stats: dict[str, int] = {}
    closed: dict[str, int] = dict.fromkeys(CLOSE_REASONS, 0)
    rejected: dict[str, int] = dict.fromkeys(REJECT_REASONS, 0)
    errors: dict[str, int] = {}
    counts = [0] * (len(LATENCY_BUCKETS) + 1)
    total = 0.0
    for snap in snapshots:
        _add_counts(stats, snap.get("stats"))
        _add_counts(closed, snap.get("closed"))
        _add_counts(rejected, snap.get("rejected"))
        _add_counts(errors, snap.get("errors"))
        latency: Any = snap.get("latency") or {}
        got: Any = latency.get("counts") or []
        if isinstance(got, list) and len(got) == len(counts):  # pyright: ignore[reportUnknownArgumentType]
            for i, value in enumerate(got):  # pyright: ignore[reportUnknownVariableType, reportUnknownArgumentType]
                if isinstance(value, int):
                    counts[i] += value
        value_sum: Any = latency.get("sum", 0.0)
        if isinstance(value_sum, (int, float)):
            total += float(value_sum)
    return {
        "stats": stats,
        "closed": closed,
        "rejected": rejected,
        "errors": errors,
        "latency": {"buckets": list(LATENCY_BUCKETS), "counts": counts, "sum": total},
    }
