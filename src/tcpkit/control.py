"""The control socket: ``tcpkit run --control PATH`` and ``tcpkit ctl PATH COMMAND``.

An owner-only (``0600``) Unix socket that takes one command per line and
answers each with one line of JSON, ``{"ok": true, ...}`` or ``{"ok": false,
"error": "..."}`` (HAProxy's runtime API, for a tcpkit server). Any line
client works too: ``socat - UNIX-CONNECT:PATH``.

=================  =============================================================
``stats``          ``server.stats`` (counts), the connection limit, whether it
                   is closing, closes by reason, errors by kind, rejections,
                   the handler-latency histogram
``connections``    the live connections: id, peer, age, queued output
``drain``          stop accepting (the listeners close); connections go on
                   until they end, then the process exits 0
``set-max N``      ``server.set_max_connections(N)`` (``none``: unlimited,
                   ``0``: pause accepting; waiting clients stay in the backlog)
``kick ID``        shut connection ``ID`` down gracefully (under ``--workers``,
                   ``WORKER:ID`` as ``connections`` lists it)
``reload``         the same as SIGHUP: a graceful reload
``help``           the commands
=================  =============================================================

Under ``--workers`` the supervisor's control socket answers for all workers:
``stats`` adds their counts up (and lists each), ``connections`` lists every
worker's, ``set-max`` applies to each worker, ``drain`` and ``reload`` act on
all of them.
"""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import anyio

from .app import App
from .connection import Connection

__all__ = ["COMMANDS", "ControlError", "Handler", "control_app", "request", "request_sync"]

logger = logging.getLogger("tcpkit.control")

COMMANDS = {
    "stats": "counts of the server (summed over workers)",
    "connections": "the live connections: id, peer, age in seconds, queued bytes",
    "drain": "stop accepting; exit once the last connection has ended",
    "set-max": "set-max N|none: the connection limit (per worker); 0 pauses accepting",
    "kick": "kick ID: shut connection ID down gracefully (WORKER:ID under --workers)",
    "reload": "a graceful reload, as SIGHUP",
    "help": "this list",
}

_MAX_LINE = 4096


class ControlError(Exception):
    """A command that cannot be carried out (the reply's ``error``)."""


Handler = Callable[[str, list[str]], Awaitable[dict[str, Any]]]
"""``handler(command, arguments) -> reply``; raises :class:`ControlError` to refuse."""


def control_app(handler: Handler, name: str = "control") -> App[str, str]:
    """An App that answers control commands on a line protocol with ``handler``."""
    from .codecs import Lines

    app: App[str, str] = App(Lines(max_length=_MAX_LINE), name=name, busy_poll=None)

    @app.on_input
    async def command(conn: Connection[str, str], line: str) -> None:
        words = line.split()
        if not words:
            return
        verb, args = words[0].lower(), words[1:]
        try:
            if verb == "help":
                reply: dict[str, Any] = {"commands": COMMANDS}
            elif verb not in COMMANDS:
                raise ControlError(f"unknown command {verb!r}; try 'help'")
            else:
                reply = await handler(verb, args)
        except ControlError as exc:
            reply = {"ok": False, "error": str(exc)}
        except Exception as exc:  # a bug must not kill the control socket
            logger.exception("control command %r failed", line, exc_info=exc)
            reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        else:
            reply = {"ok": True, **reply}
        logger.info("control: %s -> %s", line.strip(), "ok" if reply["ok"] else reply["error"])
        await conn.send(json.dumps(reply, separators=(",", ":"), default=str))

    return app


def parse_limit(args: list[str]) -> int | None:
    """The argument of ``set-max``: a whole number >= 0 or ``none``.

    Raises:
        ControlError: a missing or bad argument.
    """
    if len(args) != 1:
        raise ControlError("usage: set-max N (a whole number >= 0, or none)")
    if args[0].lower() in ("none", "unlimited"):
        return None
    try:
        value = int(args[0])
    except ValueError:
        raise ControlError(f"set-max: expected a whole number or none, got {args[0]!r}") from None
    if value < 0:
        raise ControlError(f"set-max: must be >= 0, got {value}")
    return value


def bind_control(path: str) -> socket.socket:
    """Bind the control socket at ``path``, readable and writable by its owner only.

    Raises:
        OSError: (a ``BindError``) the path is in use or cannot be bound.
    """
    from ._binding import bind_unix

    return bind_unix(path, mode=0o600, backlog=16)


async def request(path: str, line: str) -> dict[str, Any]:
    """Send one command to the control socket at ``path``; return its JSON reply.

    Bound it in time with ``anyio.fail_after``.

    Raises:
        OSError: cannot connect, or the connection ended without a reply.
        ValueError: the reply is not a JSON object.
    """
    stream = await anyio.connect_unix(path)
    async with stream:
        await stream.send(line.encode() + b"\n")
        data = b""
        while b"\n" not in data:
            try:
                chunk = await stream.receive()
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                raise OSError(f"{path}: the server closed without answering") from None
            data += chunk
            if len(data) > 64 * 1024 * 1024:
                raise ValueError(f"{path}: reply too long")
    reply: Any = json.loads(data.split(b"\n", 1)[0])
    if not isinstance(reply, dict):
        raise ValueError(f"{path}: the reply is not a JSON object")
    return reply  # pyright: ignore[reportUnknownVariableType]


def request_sync(path: str, line: str, timeout: float = 10.0) -> dict[str, Any]:
    """:func:`request` without an event loop (blocking; used by ``tcpkit ctl``)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(path)
        sock.sendall(line.encode() + b"\n")
        data = b""
        while b"\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                raise OSError(f"{path}: the server closed without answering")
            data += chunk
    reply: Any = json.loads(data.split(b"\n", 1)[0])
    if not isinstance(reply, dict):
        raise ValueError(f"{path}: the reply is not a JSON object")
    return reply  # pyright: ignore[reportUnknownVariableType]
