"""The time limits of every connection, checked by one task per server.

``idle_timeout``, ``message_timeout``, ``send_timeout`` and ``max_lifetime``
cost a connection nothing per read or write: it keeps counts anyway (bytes
and messages each way, see ``conn.counts``), and the watchdog compares them
with what they were at its last look, a few times per shortest limit. So a
limit fires up to one look late: within a quarter of the limit, and at most
a second, after it is due (``Watchdog.interval``).

* **idle**: neither a byte read nor a byte taken by the OS since the limit
  (a download the client reads is progress; a handler still running is not
  idle);
* **message**: a message has been in progress (its decoder holds part of
  it, ``Decoder.in_progress``) with no message completed since the limit,
  counted only while the server waits for input (not while a handler runs,
  output drains to a slow reader, or input is paused: lines the server has
  not read yet are not slow);
* **send**: output is pending and the OS has taken none of it since the
  limit (a client that stopped reading);
* **lifetime**: the connection is older than the limit.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio

from .exceptions import ConnectionTimeout, IdleTimeout, MessageTimeout, SendTimeout

if TYPE_CHECKING:
    from ._driver import Driver
    from .settings import Settings
    from .stats import ServerStats

__all__ = ["Watchdog"]

_LONGEST_LOOK = 1.0
_SHORTEST_LOOK = 0.01


class _Watch:
    """What the watchdog saw of one connection at its last look."""

    __slots__ = (
        "bytes_in",
        "input_at",
        "message_since",
        "messages_in",
        "output_at",
        "stalled_since",
        "started_at",
        "taken",
    )

    def __init__(self, now: float) -> None:
        self.bytes_in = self.taken = self.messages_in = 0
        self.started_at = now  # (max_lifetime)
        self.input_at = self.output_at = now  # when input (output) last made progress
        self.stalled_since: float | None = None  # since when pending output makes none
        self.message_since: float | None = None  # since when a message is in progress


class Watchdog:
    """Checks the time limits of every connection of a server (see the module doc)."""

    def __init__(self, settings: Settings, stats: ServerStats) -> None:
        self._idle = settings.idle_timeout
        self._message = settings.message_timeout
        self._send = settings.send_timeout
        self._lifetime = settings.max_lifetime
        self._stats = stats
        limits = [t for t in (self._idle, self._message, self._send, self._lifetime) if t]
        self.interval = min(max(min(limits, default=_LONGEST_LOOK) / 4, _SHORTEST_LOOK), 1.0)
        self._watches: dict[Driver, _Watch] = {}

    def add(self, driver: Driver) -> None:
        """Watch ``driver``'s connection from now on."""
        self._watches[driver] = _Watch(anyio.current_time())

    def remove(self, driver: Driver) -> None:
        self._watches.pop(driver, None)

    async def run(self) -> None:
        """Look at every connection every :attr:`interval` seconds, until cancelled."""
        while True:
            await anyio.sleep(self.interval)
            now = anyio.current_time()
            for driver, watch in list(self._watches.items()):
                self._look(driver, watch, now)

    def _look(self, driver: Driver, watch: _Watch, now: float) -> None:
        bytes_in, taken, messages_in, pending = driver.progress()
        if bytes_in != watch.bytes_in:
            watch.bytes_in, watch.input_at = bytes_in, now
        if taken != watch.taken:
            watch.taken, watch.output_at = taken, now
            watch.stalled_since = None
        if not pending:
            watch.stalled_since = None
        elif watch.stalled_since is None:
            watch.stalled_since = now
        if not driver.message_in_progress or not driver.reading:
            watch.message_since = None  # (the server is not reading: not the client's delay)
        elif watch.message_since is None or messages_in != watch.messages_in:
            watch.message_since = now
        watch.messages_in = messages_in
        if self._lifetime is not None and now - watch.started_at >= self._lifetime:
            self.remove(driver)
            self._stats.lifetimes_ended += 1
            driver.end_of_life(self._lifetime)
            return
        expired = self._expired(driver, watch, now)
        if expired is not None:
            self.remove(driver)
            driver.time_out(expired, stuck=watch.stalled_since is not None)

    def _expired(self, driver: Driver, watch: _Watch, now: float) -> ConnectionTimeout | None:
        """The limit ``driver``'s connection has overrun, if any (counted in the stats)."""
        stats = self._stats
        stalled = watch.stalled_since
        if self._send is not None and stalled is not None and now - stalled >= self._send:
            stats.send_timeouts += 1
            return SendTimeout(self._send)
        last = max(watch.input_at, watch.output_at)
        if self._idle is not None and not driver.handler_running and now - last >= self._idle:
            stats.idle_timeouts += 1
            return IdleTimeout(self._idle)
        since = watch.message_since
        if self._message is not None and since is not None and now - since >= self._message:
            stats.message_timeouts += 1
            return MessageTimeout(self._message)
        return None
