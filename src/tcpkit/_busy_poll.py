"""Busy polling: the event loop keeps polling for a moment after input instead of sleeping.

A request-response client sends its next message a round trip after our
reply. If the event loop goes to sleep in between (``epoll_wait`` with a
timeout, the thread blocks, the CPU idles), waking it again costs far more
than the wait itself: on a virtual machine, where an idle CPU halts and a
wake-up is an inter-processor interrupt through the hypervisor, it measured
30-40 µs of CPU and latency per message, several times the work of handling
the message. So after a read, tcpkit keeps the loop polling (``epoll_wait``
with a zero timeout, other tasks running as usual) for up to a *window*; the
next message is then picked up at once, with no sleep and no wake-up.

The window adapts to the traffic, like Linux's ``haltpoll`` CPU-idle
governor: the gap between two reads tells whether polling longer would have
caught the second one. A gap within the window: the poll paid off. A gap
longer than the window but within the limit (``App(busy_poll=...)``): the
window doubles. A longer gap: the window halves, down to nothing, so a
server whose clients are sparse does not poll at all. The CPU a server burns
polling is at most one window per read, and none once input stops.

Only the fast listeners' streams (:mod:`tcpkit._asyncio_stream`,
:mod:`tcpkit._trio_stream`) call :meth:`BusyPoller.kick`, on every read that
brings bytes.
"""

from __future__ import annotations

import asyncio
import time
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING

import anyio

from .stats import ServerStats

if TYPE_CHECKING:
    import trio

__all__ = ["BusyPoller", "busy_poller"]

_now = time.perf_counter  # real time: a test's fake clock must not stretch a poll
_START = 10e-6
"""The window a poll starts with when the traffic asks for one (then it doubles)."""


class BusyPoller(ABC):
    """Keeps the loop polling for input for a while after each read (see the module doc)."""

    __slots__ = ("_last", "_limit", "_running", "_stats", "_until", "_window")

    def __init__(self, limit: float, stats: ServerStats) -> None:
        self._limit = limit
        self._stats = stats  # counts polled_reads
        self._window = 0.0  # the current window; starts closed, the traffic opens it
        self._last = 0.0  # when the last read came
        self._until = 0.0  # poll until then
        self._running = False

    @property
    def window(self) -> float:
        """The current window in seconds (0: the loop sleeps as soon as it is idle)."""
        return self._window

    def polling(self) -> bool:
        """Whether the loop should be polling now (the window after the last read is open)."""
        return self._running and _now() < self._until

    def kick(self) -> None:
        """Input arrived: adapt the window to the gap since the last read, then poll."""
        now = _now()
        gap = now - self._last
        self._last = now
        window = self._window
        if gap > window:  # the loop went to sleep before this read came
            if gap <= self._limit:  # polling longer would have caught it
                window = self._window = min(max(window * 2, _START), self._limit)
            elif window:  # nothing came for longer than we would poll: poll less
                window = self._window = window / 2 if window > _START else 0.0
        else:
            self._stats.polled_reads += 1
        if window and self._running:
            self._until = now + window
            self._poll()

    @abstractmethod
    def _poll(self) -> None:
        """Make sure the loop polls until ``_until``."""

    @abstractmethod
    async def run(self) -> None:
        """Poll while this runs (start it in the server's task group; cancel it to stop)."""


class _AsyncioBusyPoller(BusyPoller):
    """A callback that re-schedules itself: a ready callback makes the loop poll, not sleep.

    (asyncio has no idle callback: while the loop is busy anyway, this costs
    one cheap callback per loop iteration.)
    """

    __slots__ = ("_loop", "_spinning")

    def __init__(self, limit: float, stats: ServerStats) -> None:
        super().__init__(limit, stats)
        self._loop = asyncio.get_running_loop()
        self._spinning = False

    def _poll(self) -> None:
        if not self._spinning:
            self._spinning = True
            self._loop.call_soon(self._spin)

    def _spin(self) -> None:
        if self._running and _now() < self._until:
            self._loop.call_soon(self._spin)
        else:
            self._spinning = False

    async def run(self) -> None:
        self._running = True
        try:
            await anyio.sleep_forever()
        finally:
            self._running = False


class _TrioBusyPoller(BusyPoller):
    """A task that runs whenever trio's loop would sleep, and so makes it poll instead.

    ``trio.testing.wait_all_tasks_blocked()`` (a public trio API, despite the
    module's name) makes the scheduler poll with a zero timeout when nothing
    is runnable, and wakes the task only if that poll found nothing: while
    other tasks run, polling costs nothing at all.
    """

    __slots__ = ("_parked",)

    def __init__(self, limit: float, stats: ServerStats) -> None:
        super().__init__(limit, stats)
        self._parked: trio.lowlevel.Task | None = None

    def _poll(self) -> None:
        task = self._parked
        if task is not None:
            import trio

            self._parked = None
            trio.lowlevel.reschedule(task)

    async def run(self) -> None:
        import trio
        import trio.testing

        def abort(_: object) -> trio.lowlevel.Abort:
            self._parked = None
            return trio.lowlevel.Abort.SUCCEEDED

        self._running = True
        try:
            while True:
                if _now() < self._until:
                    await trio.testing.wait_all_tasks_blocked()
                else:
                    self._parked = trio.lowlevel.current_task()
                    await trio.lowlevel.wait_task_rescheduled(abort)
        finally:
            self._running = False
            self._parked = None


def busy_poller(limit: float | None, stats: ServerStats) -> BusyPoller | None:
    """A :class:`BusyPoller` for the running backend, or ``None`` if ``limit`` is 0 or ``None``."""
    if not limit:
        return None
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return _TrioBusyPoller(limit, stats)
    return _AsyncioBusyPoller(limit, stats)
