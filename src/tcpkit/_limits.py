"""Admission limits of a server that count per client: ``max_connections_per_ip``.

A connection is counted under its client's address once its setup has read
a PROXY header (so behind a proxy the real client is counted, not the
proxy), and uncounted when it ends. One connection too many is closed at
once, counted in ``server.stats.rejected`` (and ``rejected_per_ip``), and
logged once per burst rather than once per connection: a client that keeps
reconnecting cannot flood the log.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable

logger = logging.getLogger("tcpkit.server")

__all__ = ["BurstLog", "PerIpLimit"]


class PerIpLimit:
    """Open connections per client address, up to a limit."""

    __slots__ = ("_limit", "_open")

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._open: dict[str, int] = {}

    @property
    def limit(self) -> int:
        return self._limit

    def admit(self, ip: str) -> bool:
        """Count one more connection from ``ip``; ``False`` (not counted) if over the limit."""
        count = self._open.get(ip, 0)
        if count >= self._limit:
            return False
        self._open[ip] = count + 1
        return True

    def release(self, ip: str) -> None:
        """One connection from ``ip`` has ended."""
        count = self._open[ip] - 1
        if count:
            self._open[ip] = count
        else:
            del self._open[ip]


class BurstLog:
    """Logs one kind of event once per burst (WARNING), not once per occurrence.

    The first event after a quiet :attr:`WINDOW` is logged with its message;
    the ones that follow within the window are only counted, and the count is
    logged with the next event logged ("N more KIND in the last S s"). A
    client that keeps reconnecting cannot flood the log; whoever logs still
    counts every event in ``server.stats``.
    """

    __slots__ = ("_clock", "_kind", "_logged_at", "_name", "_suppressed")

    WINDOW = 10.0
    """Seconds during which events after a logged one are counted, not logged."""

    def __init__(self, name: str, kind: str, clock: Callable[[], float] = time.monotonic) -> None:
        self._name = name  # the server's
        self._kind = kind  # what the count line counts ("refusals of ...")
        self._clock = clock
        self._logged_at = -math.inf
        self._suppressed = 0

    def log(self, message: str) -> None:
        """One more event; ``message`` describes it (logged if it starts a burst)."""
        now = self._clock()
        if now - self._logged_at < self.WINDOW:
            self._suppressed += 1
            return
        if self._suppressed:
            logger.warning(
                "%s: %d more %s in the last %.0f s",
                self._name,
                self._suppressed,
                self._kind,
                now - self._logged_at,
            )
        logger.warning(
            "%s: %s; more in the next %.0f s are counted, not logged",
            self._name,
            message,
            self.WINDOW,
        )
        self._logged_at = now
        self._suppressed = 0
