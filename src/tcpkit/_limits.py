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
from typing import Any

import anyio

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
    """Logs an event once per burst: the first one, then a count when a quiet spell ends it."""

    __slots__ = ("_level", "_logger", "_quiet", "_suppressed", "_until")

    def __init__(self, logger: logging.Logger, level: int = logging.WARNING, quiet: float = 10.0):
        self._logger = logger
        self._level = level
        self._quiet = quiet  # seconds without the event that end a burst
        self._until = -1.0
        self._suppressed = 0

    def log(self, message: str, *args: Any) -> None:
        now = anyio.current_time()
        if now < self._until:
            self._suppressed += 1
        else:
            if self._suppressed:
                self._logger.log(self._level, "(%d more like it before)", self._suppressed)
                self._suppressed = 0
            self._logger.log(self._level, message, *args)
        self._until = now + self._quiet
