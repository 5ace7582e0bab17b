"""Reloading without a refused connect: the socket handover, the code check, ``--reload``.

SIGHUP to ``tcpkit run`` (no ``--workers``) is a graceful reload in place:

1. the new code is checked first, in a child process (``python -m tcpkit
   _check APP``): if it does not import, the reload is refused, logged, and
   the old code goes on serving;
2. the server drains: its listeners close, but this module keeps a duplicate
   of every listening socket (:class:`Handover`), so the kernel still queues
   new connections in their backlog instead of refusing them; connections
   are shut down gracefully (queued output delivered, bounded by
   ``--drain-timeout``);
3. the process re-executes itself (same command line, same pid) with the
   sockets passed as systemd's socket activation passes them
   (``LISTEN_FDS``, ``LISTEN_PID``, ``LISTEN_FDNAMES``), and the new image
   accepts the connections that waited.

``--reload`` (development) runs the same reload whenever a ``.py`` file
changes under the watched directories (needs ``watchfiles``:
``pip install 'tcpkit[reload]'``).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from ._systemd import LISTEN_FDS_START

__all__ = ["CHECK_COMMAND", "Handover", "check_app", "reload_on_changes"]

logger = logging.getLogger("tcpkit.server")

CHECK_COMMAND = "_check"
"""``python -m tcpkit _check APP [--factory]``: exit 0 if the app loads (internal)."""

RELOAD_SIGNALS = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
"""Blocked across the re-exec; the new image unblocks them once it handles them."""

_CHECK_TIMEOUT = 60.0


class Handover:
    """Duplicates of the listening sockets, kept open across a drain and a re-exec.

    Each socket is kept under a name (``LISTEN_FDNAMES``): the app's listeners
    under their own names, the control socket as ``tcpkit-control`` and the
    metrics endpoint as ``tcpkit-metrics``.
    """

    def __init__(self) -> None:
        self._kept: list[tuple[int, str]] = []

    def keep(self, sock: socket.socket, name: str) -> None:
        """Keep a duplicate of ``sock`` (close-on-exec until :meth:`exec`)."""
        self._kept.append((os.dup(sock.fileno()), name))

    @property
    def names(self) -> list[str]:
        """The names of the kept sockets, in order."""
        return [name for _, name in self._kept]

    def close(self) -> None:
        """Close every kept duplicate (after a final stop)."""
        kept, self._kept = self._kept, []
        for fd, _ in kept:
            with contextlib.suppress(OSError):
                os.close(fd)

    def exec(self, argv: Sequence[str] | None = None) -> NoReturn:
        """Re-execute this process (same pid) with the kept sockets as fds 3, 4, ...

        ``argv`` defaults to the command line this process was started with
        (``sys.orig_argv``). SIGINT, SIGTERM and SIGHUP stay blocked across
        the exec (a signal that comes meanwhile waits, it does not kill); the
        new image unblocks them once it handles them.

        Raises:
            OSError: the exec failed (the sockets are closed then).
        """
        args = list(argv if argv is not None else sys.orig_argv)
        count = len(self._kept)
        # Move the descriptors out of the way, then to 3, 4, ... (inheritable).
        high = [
            fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, LISTEN_FDS_START + count) for fd, _ in self._kept
        ]
        for fd, _ in self._kept:
            os.close(fd)
        for i, fd in enumerate(high):
            target = LISTEN_FDS_START + i
            os.dup2(fd, target, inheritable=True)
            os.close(fd)
        env = dict(os.environ)
        env["LISTEN_FDS"] = str(count)
        env["LISTEN_PID"] = str(os.getpid())
        env["LISTEN_FDNAMES"] = ":".join(self.names)
        for handler in logging.getLogger().handlers + logging.getLogger("tcpkit").handlers:
            with contextlib.suppress(Exception):
                handler.flush()
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        signal.pthread_sigmask(signal.SIG_BLOCK, RELOAD_SIGNALS)
        try:
            os.execve(sys.executable, args, env)
        except OSError:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, RELOAD_SIGNALS)
            for i in range(count):
                with contextlib.suppress(OSError):
                    os.close(LISTEN_FDS_START + i)
            raise


def block_signals() -> None:
    """Hold SIGINT/SIGTERM/SIGHUP back until :func:`unblock_signals` (they stay pending).

    From binding the sockets (a client, or a test, may connect from then on)
    until the server watches for them: one sent meanwhile then stops the
    server gracefully instead of interrupting its start with a traceback.
    """
    signal.pthread_sigmask(signal.SIG_BLOCK, RELOAD_SIGNALS)


def unblock_signals() -> None:
    """Let SIGINT/SIGTERM/SIGHUP in again (blocked by :meth:`Handover.exec` across a reload)."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, RELOAD_SIGNALS)


def check_app(app: str, factory: bool) -> str | None:
    """Load ``app`` in a child process; ``None`` if it loads, else why not (one line).

    The child is ``python -m tcpkit _check``, started in the current
    directory with the current environment, so it imports what a re-executed
    process would import.
    """
    command = [sys.executable, "-m", "tcpkit", CHECK_COMMAND, app]
    if factory:
        command.append("--factory")
    try:
        done = subprocess.run(
            command,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=_CHECK_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return f"loading the app took over {_CHECK_TIMEOUT:g} s"
    except OSError as exc:
        return f"cannot start {sys.executable}: {exc}"
    if done.returncode == 0:
        return None
    lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
    return lines[-1].removeprefix("tcpkit: error: ") if lines else f"exit status {done.returncode}"


def _relative(path: str) -> str:
    """``path`` relative to the current directory (pure string work, no I/O)."""
    cwd = os.getcwd() + os.sep
    return path[len(cwd) :] if path.startswith(cwd) else path


def watched_directories(app: str, extra: Sequence[str]) -> list[str]:
    """What ``--reload`` watches: ``--reload-dir``s, else the app file's directory or cwd."""
    if extra:
        return [os.path.abspath(d) for d in extra]
    module_part = app.partition(":")[0]
    if module_part.endswith(".py") or "/" in module_part or os.sep in module_part:
        return [os.path.dirname(os.path.abspath(module_part))]
    return [os.getcwd()]


async def reload_on_changes(
    app: str, extra: Sequence[str], request_reload: Callable[[str], object], log: logging.Logger
) -> None:
    """``--reload``: call ``request_reload(why)`` for each batch of changed ``.py`` files.

    It watches :func:`watched_directories` (logged once on ``log``) forever.

    Raises:
        ImportError: watchfiles is not installed.
    """
    from watchfiles import PythonFilter, awatch

    directories = watched_directories(app, extra)
    log.info("--reload: watching %s for changes to .py files", ", ".join(directories))
    async for changes in awatch(*directories, watch_filter=PythonFilter(), debounce=200):
        paths = sorted({_relative(path) for _, path in changes})
        request_reload(", ".join(paths[:3]) + (" ..." if len(paths) > 3 else "") + " changed")
