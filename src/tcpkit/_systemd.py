"""systemd's protocols, without libsystemd: socket activation and ``sd_notify``.

* Socket activation: a process started with ``LISTEN_FDS=n`` and
  ``LISTEN_PID`` equal to its pid has inherited ``n`` listening sockets as
  file descriptors 3, 4, ... (``LISTEN_FDNAMES`` names them, colon-separated).
  :func:`listen_fds` reads and then removes these variables, so that child
  processes do not take the sockets for theirs (``sd_listen_fds(1)``).
* Notification: with ``NOTIFY_SOCKET`` set (a path, or ``@name`` for an
  abstract socket), a service reports its state in datagrams of
  ``KEY=VALUE`` lines: ``READY=1``, ``STOPPING=1``, ``RELOADING=1``,
  ``STATUS=...``, ``WATCHDOG=1`` (every ``WATCHDOG_USEC / 2`` when set).

tcpkit's own reload (SIGHUP without ``--workers``) re-executes the process
with its sockets passed the same way, so the new image starts exactly as
under socket activation.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import MutableMapping

import anyio

__all__ = ["LISTEN_FDS_START", "Notifier", "listen_fds", "listening_socket"]

logger = logging.getLogger("tcpkit.server")

LISTEN_FDS_START = 3
"""The first inherited descriptor (``SD_LISTEN_FDS_START``)."""


def listen_fds(environ: MutableMapping[str, str] | None = None) -> list[tuple[int, str]]:
    """The ``(fd, name)`` pairs passed by socket activation, if they are for this process.

    Removes ``LISTEN_FDS``, ``LISTEN_PID`` and ``LISTEN_FDNAMES`` from
    ``environ`` (default ``os.environ``) and marks the descriptors
    close-on-exec. A missing name is ``"unknown"``, as systemd says it.

    Raises:
        ValueError: ``LISTEN_FDS`` or ``LISTEN_PID`` is not a number.
    """
    env: MutableMapping[str, str] = os.environ if environ is None else environ
    count_text = env.get("LISTEN_FDS")
    pid_text = env.get("LISTEN_PID")
    names_text = env.get("LISTEN_FDNAMES", "")
    for key in ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"):
        env.pop(key, None)
    if not count_text:
        return []
    count, pid = _listen_numbers(count_text, pid_text)
    if pid is not None and pid != os.getpid():
        return []  # meant for another process (the variables leaked to a child)
    return _inherited(count, names_text.split(":") if names_text else [])


def _listen_numbers(count_text: str, pid_text: str | None) -> tuple[int, int | None]:
    """``LISTEN_FDS`` and ``LISTEN_PID`` as numbers (the pid ``None`` when not set).

    Raises:
        ValueError: one of them is not a number.
    """
    try:
        return int(count_text), int(pid_text) if pid_text else None
    except ValueError:
        raise ValueError(
            f"LISTEN_FDS={count_text!r} LISTEN_PID={pid_text!r}: expected numbers"
        ) from None


def _inherited(count: int, names: list[str]) -> list[tuple[int, str]]:
    """The open descriptors of the ``count`` passed, made close-on-exec, with their names."""
    out: list[tuple[int, str]] = []
    for i in range(max(count, 0)):
        fd = LISTEN_FDS_START + i
        try:
            os.set_inheritable(fd, False)
        except OSError:
            continue  # not open: nothing to serve there
        out.append((fd, names[i] if i < len(names) and names[i] else "unknown"))
    return out


def listening_socket(fd: int, what: str) -> socket.socket:
    """A socket object for the inherited descriptor ``fd``, checked to be listening.

    Raises:
        ValueError: ``fd`` is not open, not a socket, not a stream socket, or
            not listening; the message starts with ``what`` (``--fd 3``).
    """
    try:
        os.fstat(fd)
    except OSError:
        raise ValueError(f"{what}: file descriptor {fd} is not open") from None
    try:
        sock = socket.socket(fileno=fd)
    except OSError as exc:
        raise ValueError(f"{what}: file descriptor {fd} is not a socket ({exc})") from None
    try:
        if sock.type != socket.SOCK_STREAM:
            raise ValueError(f"{what}: file descriptor {fd} is not a stream (TCP or Unix) socket")
        if not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
            raise ValueError(f"{what}: the socket on file descriptor {fd} is not listening")
    except BaseException:
        sock.detach()  # not ours to close
        raise
    sock.setblocking(False)
    return sock


class Notifier:
    """Sends ``sd_notify`` datagrams to ``NOTIFY_SOCKET`` (does nothing without it)."""

    def __init__(self, environ: MutableMapping[str, str] | None = None) -> None:
        env: MutableMapping[str, str] = os.environ if environ is None else environ
        path = env.get("NOTIFY_SOCKET", "")
        self.address: str | None = None
        if path.startswith("@"):
            self.address = "\0" + path[1:]
        elif path.startswith("/"):
            self.address = path
        self.watchdog_interval: float | None = None
        """Seconds between ``WATCHDOG=1`` pings (half of ``WATCHDOG_USEC``), or ``None``."""
        usec, wpid = env.get("WATCHDOG_USEC", ""), env.get("WATCHDOG_PID", "")
        try:
            if usec and int(usec) > 0 and (not wpid or int(wpid) == os.getpid()):
                self.watchdog_interval = int(usec) / 2e6
        except ValueError:
            logger.warning("ignoring WATCHDOG_USEC=%r WATCHDOG_PID=%r", usec, wpid)

    @property
    def enabled(self) -> bool:
        """Whether a notify socket was given."""
        return self.address is not None

    def notify(self, *lines: str) -> bool:
        """Send ``lines`` (``KEY=VALUE``) as one datagram; ``False`` if it was not sent."""
        if self.address is None:
            return False
        data = "\n".join(lines).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.setblocking(False)
                sock.sendto(data, self.address)
        except OSError as exc:
            logger.debug("sd_notify to %r failed: %s", self.address, exc)
            return False
        return True

    def ready(self, status: str) -> None:
        """``READY=1`` with a status line."""
        self.notify("READY=1", f"STATUS={status}", f"MAINPID={os.getpid()}")

    def stopping(self, status: str) -> None:
        """``STOPPING=1`` with a status line."""
        self.notify("STOPPING=1", f"STATUS={status}")

    def reloading(self, status: str) -> None:
        """``RELOADING=1`` (with ``MONOTONIC_USEC``, as ``Type=notify-reload`` wants)."""
        usec = int(_monotonic() * 1e6)
        self.notify("RELOADING=1", f"MONOTONIC_USEC={usec}", f"STATUS={status}")

    async def watchdog(self) -> None:
        """Send ``WATCHDOG=1`` every ``watchdog_interval`` seconds, forever (if it is set)."""
        interval = self.watchdog_interval
        if interval is None or self.address is None:
            return
        while True:
            self.notify("WATCHDOG=1")
            await anyio.sleep(interval)


def _monotonic() -> float:
    """``CLOCK_MONOTONIC`` in seconds (what systemd's ``MONOTONIC_USEC`` is measured on)."""
    import time

    return time.clock_gettime(time.CLOCK_MONOTONIC)
