"""Server counters (``server.stats``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

__all__ = ["ConnectionCounts", "ServerStats"]


@dataclass
class ServerStats:
    """Counts kept by a running server.

    Attributes:
        current: sockets open now, from accept to close (setup included).
        total: sockets accepted since the server started.
        rejected: connections refused: by ``pre_connect``, a failed setup, or
            ``max_connections_per_ip``.
        rejected_per_ip: of those, the ones over ``max_connections_per_ip``.
        bytes_in: bytes read from clients.
        bytes_out: bytes handed to the OS for clients.
        messages_in: messages decoded and delivered to ``on_input``.
        messages_out: messages encoded by ``send``/``put``/``broadcast``.
        errors: errors reported to ``on_error`` (handler, codec and socket errors).
        polled_reads: reads that arrived while the event loop was busy polling
            for input instead of sleeping (``App(busy_poll=...)``): each saved
            a sleep and a wake-up.
        idle_timeouts: connections closed by ``idle_timeout``.
        message_timeouts: connections closed by ``message_timeout``.
        send_timeouts: connections closed by ``send_timeout``.
        lifetimes_ended: connections shut down by ``max_lifetime``.
    """

    current: int = 0
    total: int = 0
    rejected: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    messages_in: int = 0
    messages_out: int = 0
    errors: int = 0
    polled_reads: int = 0
    rejected_per_ip: int = 0
    idle_timeouts: int = 0
    message_timeouts: int = 0
    send_timeouts: int = 0
    lifetimes_ended: int = 0

    def as_dict(self) -> dict[str, int]:
        """Return the counters as a plain dict (a snapshot)."""
        return asdict(self)


@dataclass(slots=True)
class ConnectionCounts:
    """What one connection carried (``conn.counts``).

    Attributes:
        bytes_in: bytes read from the client.
        bytes_out: bytes handed to the OS for the client.
        messages_in: messages decoded and delivered to ``on_input``.
        messages_out: messages encoded by ``send``/``put``/``broadcast``.
    """

    bytes_in: int = 0
    bytes_out: int = 0
    messages_in: int = 0
    messages_out: int = 0
