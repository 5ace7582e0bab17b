"""Watching a running server from outside its handlers: :class:`Observer`.

An observer is told when a connection is set up, rejected or closed, and
when tcpkit could only log an exception (a handler's that reached the default
``on_error``, or one raised by ``pre_connect``, ``on_error``,
``on_disconnect``, ``on_stopped`` or an acceptor). Tests use one to raise
those exceptions again (``tcpkit.testing``); access logs and metrics are
observers too. Pass them to ``app.start(observers=[...])`` (or ``serve``,
``run``).

Observers are called synchronously, in the server's event loop, and must
not block; what they raise is logged and otherwise ignored.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .connection import Connection

__all__ = ["Observer", "Observers"]

logger = logging.getLogger("tcpkit.server")


class Observer:
    """Hooks into a running server; every method does nothing until overridden."""

    def connection_made(self, conn: Connection[Any, Any]) -> None:
        """``conn`` completed its setup (PROXY, TLS, ``pre_connect``); ``on_connect`` is next."""

    def connection_rejected(self, remote_addr: Any, exc: BaseException | None) -> None:
        """A connection from ``remote_addr`` failed its setup (``exc``), or was refused."""

    def connection_closed(self, conn: Connection[Any, Any]) -> None:
        """``conn`` has ended (after ``on_disconnect``)."""

    def unhandled_error(
        self, exc: BaseException, where: str, conn: Connection[Any, Any] | None
    ) -> None:
        """tcpkit logged ``exc``, raised by app code at ``where`` (e.g. ``"on_error"``)."""


class Observers(Observer):
    """Several observers as one; one that raises is logged, the others are still told."""

    def __init__(self, observers: Sequence[Observer] = ()) -> None:
        self._observers = tuple(observers)

    def __bool__(self) -> bool:
        return bool(self._observers)

    def _each(self, notify: Callable[[Observer], None]) -> None:
        for observer in self._observers:
            try:
                notify(observer)
            except Exception:
                logger.exception("observer %r raised", observer)

    def connection_made(self, conn: Connection[Any, Any]) -> None:
        self._each(lambda o: o.connection_made(conn))

    def connection_rejected(self, remote_addr: Any, exc: BaseException | None) -> None:
        self._each(lambda o: o.connection_rejected(remote_addr, exc))

    def connection_closed(self, conn: Connection[Any, Any]) -> None:
        self._each(lambda o: o.connection_closed(conn))

    def unhandled_error(
        self, exc: BaseException, where: str, conn: Connection[Any, Any] | None
    ) -> None:
        self._each(lambda o: o.unhandled_error(exc, where, conn))
