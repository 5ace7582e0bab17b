"""The server process of the chaos soak (``test_chaos_soak.py``).

Usage: ``python chaos_server.py BACKEND CERTFILE KEYFILE``. One echo app runs as
four servers in this process, because each abuse needs options of its own:

* ``main``: plain TCP with every time limit and a small line limit (valid
  clients, slow readers, resets, trickles, floods, clients that never read,
  idle ones, and lines that make the handler raise);
* ``tls``: the same over TLS (valid TLS clients, garbage instead of a ClientHello);
* ``proxy``: a PROXY allowlist that 127.0.0.1 is not on (spoofed headers);
* ``perip``: PROXY trusted, ``max_connections_per_ip=3`` (one client over its limit).

It prints one JSON line on stdout when listening (``{"ports": {...}}``), then
answers each command read on stdin with one JSON line:

* ``report``: every server's ``stats``, the close reasons and close errors an
  :class:`~tcpkit.observer.Observer` saw, the rejections by reason, and the
  log records at ERROR (or carrying a traceback);
* ``settle``: a ``gc.collect()`` first, then the report (the test reads this
  process's descriptors and RSS from ``/proc`` right after);
* ``quit`` (or end of input): every server shuts down; a last report, exit 0.
"""

from __future__ import annotations

import gc
import json
import logging
import ssl
import sys
from collections import Counter
from contextlib import AsyncExitStack
from typing import Any

import anyio

from tcpkit import (
    App,
    Connection,
    ConnectionClosed,
    ConnectionTimeout,
    FrameError,
    Lines,
    Server,
)
from tcpkit.observer import Observer, Rejection

logger = logging.getLogger("chaos_server")

MAX_LINE = 4096
"""The line limit (the soak's valid lines stay under it; its floods go far past it)."""

LIMITS: dict[str, Any] = {
    "idle_timeout": 3.0,
    # Shorter than idle_timeout, so that a client that stops reading is a send timeout
    # (its connection makes no progress either way: both limits apply to it).
    "send_timeout": 1.5,
    "message_timeout": 1.5,
    "setup_timeout": 5.0,
    # A small high mark: a client that never reads blocks its handler quickly.
    "write_buffer": (64 * 1024, 16 * 1024, 4 * 1024 * 1024),
}


class Ledger(Observer):
    """Why each connection of one server ended, or why it was refused."""

    def __init__(self) -> None:
        self.closed: Counter[str] = Counter()
        self.close_errors: Counter[str] = Counter()
        self.rejected: Counter[str] = Counter()
        self.unhandled: list[str] = []

    def connection_closed(self, conn: Connection[Any, Any]) -> None:
        self.closed[conn.close_reason or "none"] += 1
        if conn.close_error:
            self.close_errors[conn.close_error] += 1

    def connection_rejected(self, rejection: Rejection) -> None:
        self.rejected[rejection.reason] += 1

    def unhandled_error(
        self, exc: BaseException, where: str, conn: Connection[Any, Any] | None
    ) -> None:
        self.unhandled.append(f"{where}: {exc!r}")


class Problems(logging.Handler):
    """Every log record at ERROR or above, or carrying a traceback."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.seen: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.ERROR or record.exc_info:
            self.seen.append(f"{record.name} {record.levelname}: {self.format(record)}")


app: App[str, str] = App(name="main", codec=Lines(max_length=MAX_LINE), **LIMITS)


RAISE = "raise"
"""The line that makes the handler raise :class:`ChaosError` (the connection then ends)."""


class ChaosError(Exception):
    """What the handler raises when told to."""


@app.on_input
async def echo(conn: Connection[str, str], line: str) -> None:
    if line == RAISE:
        raise ChaosError(f"#{conn.id} was told to raise")
    try:
        await conn.send(line)
    except ConnectionClosed:
        pass  # a send timeout (or a reset) ended the connection while this send waited


EXPECTED = (ChaosError, ConnectionTimeout, FrameError, OSError)
"""The errors the soak causes on purpose (the observer counts them, by type)."""


@app.on_error
def on_error(conn: Connection[str, str], exc: Exception) -> None:
    """Quiet about the errors the soak causes (anything else is a problem: logged at ERROR);
    the connection then shuts down (``shutdown_on_error``)."""
    if not isinstance(exc, EXPECTED):
        logger.error("%s: unexpected %r", conn, exc)


SERVERS: dict[str, dict[str, Any]] = {
    "main": {},
    "tls": {},
    "proxy": {"proxy_protocol": ["192.0.2.0/24"]},  # 127.0.0.1 is an untrusted peer
    "perip": {"proxy_protocol": True, "max_connections_per_ip": 3},
}


def report(
    servers: dict[str, Server[str, str]], ledgers: dict[str, Ledger], problems: Problems
) -> str:
    return json.dumps(
        {
            "heap": {"objects": len(gc.get_objects()), "blocks": sys.getallocatedblocks()},
            "servers": {
                name: {
                    "stats": server.stats.as_dict(),
                    "closed": dict(ledgers[name].closed),
                    "close_errors": dict(ledgers[name].close_errors),
                    "rejected": dict(ledgers[name].rejected),
                    "unhandled": ledgers[name].unhandled,
                }
                for name, server in servers.items()
            },
            "problems": problems.seen,
        }
    )


async def main(certfile: str, keyfile: str, problems: Problems) -> None:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certfile, keyfile)
    ledgers = {name: Ledger() for name in SERVERS}
    servers: dict[str, Server[str, str]] = {}
    async with AsyncExitStack() as stack:
        for name, options in SERVERS.items():
            settings = app.settings.replace(name=name, **options)
            servers[name] = await stack.enter_async_context(
                app.start(
                    "127.0.0.1",
                    0,
                    ssl=context if name == "tls" else None,
                    settings=settings,
                    observers=[ledgers[name]],
                )
            )
        print(json.dumps({"ports": {n: s.port for n, s in servers.items()}}), flush=True)
        while True:
            command = (await anyio.to_thread.run_sync(sys.stdin.readline)).strip()
            if command in ("", "quit"):
                break
            if command == "settle":
                gc.collect()
            print(report(servers, ledgers, problems), flush=True)
    print(report(servers, ledgers, problems), flush=True)


if __name__ == "__main__":
    backend, certfile, keyfile = sys.argv[1:4]
    problems = Problems()
    # INFO reaches the checker (a traceback logged at any level is a problem); only
    # WARNING and above reach stderr.
    logging.basicConfig(level=logging.INFO, format="%(name)s %(levelname)s %(message)s")
    logging.getLogger().handlers[0].setLevel(logging.WARNING)
    logging.getLogger().addHandler(problems)
    anyio.run(
        main,
        certfile,
        keyfile,
        problems,
        backend="trio" if backend == "trio" else "asyncio",
        backend_options={"use_uvloop": True} if backend == "uvloop" else {},
    )
