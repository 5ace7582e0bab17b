"""The observers of ``tcpkit run``: the access log, and the counts behind metrics and control.

:class:`AccessLog` (``--access-log``) writes one line per closed connection;
:class:`Recorder` (``--metrics``, ``--control``) counts closes by reason,
errors by kind, rejections by reason, and the handler-latency histogram.
Both are :class:`tcpkit.Observer` objects (see :mod:`tcpkit.observer` for
when the core calls them); :class:`ClosedConnectionInfo` is what is known
of a connection once it has ended.
"""

from __future__ import annotations

import bisect
import dataclasses
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .observer import CLOSE_REASONS, REJECT_REASONS, Observer, Rejection, peer_of

if TYPE_CHECKING:
    from .connection import Connection

__all__ = [
    "LATENCY_BUCKETS",
    "AccessLog",
    "ClosedConnectionInfo",
    "Recorder",
    "merge_snapshots",
]

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

    @classmethod
    def of(cls, conn: Connection[Any, Any]) -> ClosedConnectionInfo:
        """What ``conn`` tells once it has ended."""
        counts = conn.counts
        opened = conn.opened_at
        return cls(
            server=conn.server.name,
            id=conn.id,
            remote_ip=conn.remote_ip,
            remote_port=conn.remote_port,
            peer=peer_of(conn.remote_addr),
            duration=time.monotonic() - opened if opened is not None else 0.0,
            bytes_in=counts.bytes_in,
            bytes_out=counts.bytes_out,
            messages_in=counts.messages_in,
            messages_out=counts.messages_out,
            reason=conn.close_reason or "close",
            error=conn.close_error,
        )

    def as_extra(self) -> dict[str, Any]:
        """The fields for a log record's ``extra`` (``conn_id`` for ``id``)."""
        fields = dataclasses.asdict(self)
        fields["conn_id"] = fields.pop("id")
        return fields


class AccessLog(Observer):
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

    def connection_made(self, conn: Connection[Any, Any]) -> None:
        if self.logger.isEnabledFor(logging.DEBUG):
            peer = peer_of(conn.remote_addr)
            self.logger.debug(
                "%s #%d %s: opened",
                conn.server.name,
                conn.id,
                peer,
                extra={"conn_id": conn.id, "peer": peer, "server": conn.server.name},
            )

    def connection_closed(self, conn: Connection[Any, Any]) -> None:
        info = ClosedConnectionInfo.of(conn)
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

    def connection_rejected(self, rejection: Rejection) -> None:
        reason = rejection.reason
        error = type(rejection.error).__name__ if rejection.error is not None else None
        plain = error is None or reason in ("setup-timeout", "untrusted-proxy")  # (says it all)
        shown = reason if plain else f"{reason}: {error}"
        self.logger.info(
            "%s #%d %s: rejected (%s)",
            rejection.server,
            rejection.id,
            rejection.peer,
            shown,
            extra={
                "conn_id": rejection.id,
                "peer": rejection.peer,
                "reason": reason,
                "error": error,
                "server": rejection.server,
            },
        )


class Recorder(Observer):
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

    def connection_made(self, conn: Connection[Any, Any]) -> None:
        self.opened[conn.id] = time.monotonic()

    def connection_error(self, conn: Connection[Any, Any], exc: BaseException) -> None:
        kind = type(exc).__name__
        self.errors[kind] = self.errors.get(kind, 0) + 1

    def message_handled(self, seconds: float) -> None:
        self.latency_counts[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.latency_sum += seconds

    def connection_closed(self, conn: Connection[Any, Any]) -> None:
        self.opened.pop(conn.id, None)
        reason = conn.close_reason or "close"
        self.closed[reason] = self.closed.get(reason, 0) + 1

    def connection_rejected(self, rejection: Rejection) -> None:
        self.rejected[rejection.reason] = self.rejected.get(rejection.reason, 0) + 1

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
