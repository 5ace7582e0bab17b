"""Watching a running server from outside its handlers: :class:`Observer`.

An observer is told, at a few points of every connection's life:

* ``connection_made``: it completed its setup (PROXY header, TLS,
  ``pre_connect``); ``on_connect`` is next;
* ``connection_error``: an error is being reported to ``on_error`` (it counts
  in ``server.stats.errors``);
* ``message_handled``: an ``on_input`` call returned, after so many seconds
  (only for observers whose ``times_handlers`` is true: the clock is read
  only for them);
* ``connection_closed``: it has ended (after ``on_disconnect``); the
  connection tells why (``conn.close_reason``) and what it carried
  (``conn.counts``);
* ``connection_rejected``: a connection failed its setup, or ``pre_connect``
  refused it (a :class:`Rejection`);
* ``unhandled_error``: tcpkit could only log an exception raised by app code
  (a handler's that reached the default ``on_error``, or one raised by
  ``pre_connect``, ``on_error``, ``on_disconnect``, ``on_stopped`` or an
  acceptor).

Tests use one to raise the app's exceptions again (``tcpkit.testing``); the
access log, metrics and the control socket of ``tcpkit run`` are observers
(:mod:`tcpkit.observe`). Pass them to ``app.start(observers=[...])`` (or
``serve``, ``run``). Observers are called synchronously, in the server's
event loop, and must not block; what they raise is logged and otherwise
ignored.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .connection import Connection

__all__ = ["CLOSE_REASONS", "REJECT_REASONS", "Observer", "Observers", "Rejection", "peer_of"]

logger = logging.getLogger("tcpkit.server")

CLOSE_REASONS = (
    "eof",
    "shutdown",
    "close",
    "idle-timeout",
    "message-timeout",
    "send-timeout",
    "max-lifetime",
    "error",
    "server-shutdown",
    "aborted",
)
"""Why a connection ended, as ``conn.close_reason`` says it:

* ``eof``: the client closed (or half-closed) its side first;
* ``shutdown`` / ``close``: the app called ``conn.shutdown()`` / ``conn.close()``;
* ``idle-timeout``, ``message-timeout``, ``send-timeout``: that time limit
  passed (``idle_timeout``...); ``max-lifetime``: the connection reached
  ``max_lifetime``;
* ``error``: an error ended it (a reset, a codec or handler error with
  ``shutdown_on_error``, a full write buffer); ``conn.close_error`` names its type;
* ``server-shutdown``: the server was stopping (a drain, a reload);
* ``aborted``: the server aborted it (a drain timeout, a second signal).
"""

REJECT_REASONS = ("rejected", "setup-timeout", "setup-failed", "untrusted-proxy", "per-ip-limit")
"""Why a connection was refused during its setup (:attr:`Rejection.reason`):

* ``rejected``: ``pre_connect`` refused it;
* ``setup-timeout``: its setup took over ``setup_timeout``;
* ``setup-failed``: its PROXY header or TLS handshake failed, or it went away;
* ``untrusted-proxy``: it came from a peer outside the PROXY allowlist
  (``proxy_protocol=[...]``), and was closed unread;
* ``per-ip-limit``: its client already had ``max_connections_per_ip`` open.
"""


def peer_of(remote_addr: Any) -> str:
    """``1.2.3.4:5678``, ``[::1]:5678``, a socket path, or ``(unix)``: how log lines name a peer."""
    if isinstance(remote_addr, tuple):
        ip, port = remote_addr[0], remote_addr[1]  # pyright: ignore[reportUnknownVariableType]
        return f"[{ip}]:{port}" if ":" in str(ip) else f"{ip}:{port}"  # pyright: ignore[reportUnknownArgumentType]
    return str(remote_addr) if remote_addr else "(unix)"


@dataclass(frozen=True)
class Rejection:
    """A connection refused during its setup.

    Attributes:
        server: the server's name.
        id: the id the connection would have had.
        remote_addr: the peer that connected (before any PROXY header).
        reason: one of :data:`REJECT_REASONS`.
        error: what failed, if anything did.
    """

    server: str
    id: int
    remote_addr: Any
    reason: str
    error: BaseException | None = None

    @property
    def peer(self) -> str:
        """The peer as log lines write it."""
        return peer_of(self.remote_addr)


class Observer:
    """Hooks into a running server (see the module doc); every method does nothing here.

    Subclass it and override what you need.
    """

    times_handlers: bool = False
    """Whether :meth:`message_handled` is wanted (two clock reads per message)."""

    def connection_made(self, conn: Connection[Any, Any]) -> None:
        """``conn`` completed its setup (PROXY, TLS, ``pre_connect``); ``on_connect`` is next."""

    def connection_error(self, conn: Connection[Any, Any], exc: BaseException) -> None:
        """``exc`` is being reported to ``on_error`` for ``conn``."""

    def message_handled(self, seconds: float) -> None:
        """An ``on_input`` call ended (returned or raised) after ``seconds`` (if
        :attr:`times_handlers`; an ``async def``: until its coroutine ended)."""

    def connection_closed(self, conn: Connection[Any, Any]) -> None:
        """``conn`` has ended (after ``on_disconnect``)."""

    def connection_rejected(self, rejection: Rejection) -> None:
        """A connection failed its setup, or was refused by ``pre_connect``."""

    def unhandled_error(
        self, exc: BaseException, where: str, conn: Connection[Any, Any] | None
    ) -> None:
        """tcpkit logged ``exc``, raised by app code at ``where`` (e.g. ``"on_error"``)."""


class Observers(Observer):
    """Several observers as one; one that raises is logged, the others are still told."""

    def __init__(self, observers: Sequence[Observer] = ()) -> None:
        self._observers = tuple(observers)
        self._timers = tuple(o for o in self._observers if o.times_handlers)
        self.times_handlers = bool(self._timers)

    def __bool__(self) -> bool:
        return bool(self._observers)

    def _each(self, notify: Callable[[Observer], None], observers: Sequence[Observer]) -> None:
        for observer in observers:
            try:
                notify(observer)
            except Exception:
                logger.exception("observer %r raised", observer)

    def connection_made(self, conn: Connection[Any, Any]) -> None:
        self._each(lambda o: o.connection_made(conn), self._observers)

    def connection_error(self, conn: Connection[Any, Any], exc: BaseException) -> None:
        self._each(lambda o: o.connection_error(conn, exc), self._observers)

    def message_handled(self, seconds: float) -> None:
        self._each(lambda o: o.message_handled(seconds), self._timers)

    def connection_closed(self, conn: Connection[Any, Any]) -> None:
        self._each(lambda o: o.connection_closed(conn), self._observers)

    def connection_rejected(self, rejection: Rejection) -> None:
        self._each(lambda o: o.connection_rejected(rejection), self._observers)

    def unhandled_error(
        self, exc: BaseException, where: str, conn: Connection[Any, Any] | None
    ) -> None:
        self._each(lambda o: o.unhandled_error(exc, where, conn), self._observers)
