"""The ``tcpkit`` command (also ``python -m tcpkit``): a thin layer over ``App.serve``.

User errors (a bad app path, a missing attribute, a port in use) end with one
line on stderr and a non-zero exit, no traceback. An exception raised while
importing the user's module is the user's bug: it is shown with its
traceback, then one summary line.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import ssl
import sys
import threading
import traceback
from collections.abc import Sequence
from contextlib import AsyncExitStack
from typing import Any

import anyio
import anyio.lowlevel
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from .app import App
from .client import Channel, connect, parse_address
from .codecs import Codec, Json, Lines, Raw
from .exceptions import FrameError, IncompleteFrame, ServerError
from .importer import AppImportError, ModuleRaised, import_from_string
from .server import Server
from .workers import WORKER_COMMAND

__all__ = ["main"]

EXIT_USAGE = 2
EXIT_ERROR = 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tcpkit", description="Run and try tcpkit TCP servers.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = sub.add_parser("run", help="serve an app", description="Serve a tcpkit App.")
    run.add_argument("app", help='the app: "module:attr" or "path/to/file.py:attr"')
    run.add_argument(
        "--host",
        action="append",
        default=None,
        help="address or host name to bind; repeat for several (default 127.0.0.1)",
    )
    run.add_argument("--port", type=int, default=None, help="TCP port (default 12345)")
    run.add_argument("--uds", default=None, help="listen on this Unix socket path")
    run.add_argument("--backend", choices=("asyncio", "trio"), default="asyncio")
    run.add_argument("--uvloop", action="store_true", help="use uvloop (asyncio backend)")
    run.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="serve with N worker processes under a supervisor that restarts them",
    )
    run.add_argument("--max-connections", type=int, default=None, metavar="N")
    run.add_argument("--ssl-certfile", default=None, metavar="FILE")
    run.add_argument("--ssl-keyfile", default=None, metavar="FILE")
    run.add_argument("--proxy-protocol", action="store_true", help="expect PROXY v1/v2 headers")
    run.add_argument(
        "--busy-poll",
        type=float,
        default=None,
        metavar="SECONDS",
        help="after a read, poll for input up to this long instead of sleeping "
        "(adaptive; default: the app's, 0.0001; 0 turns it off)",
    )
    run.add_argument(
        "--drain-timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="on SIGINT/SIGTERM, how long to flush before aborting (default 30)",
    )
    run.add_argument(
        "--log-level",
        default="info",
        choices=("critical", "error", "warning", "info", "debug"),
    )
    run.add_argument(
        "--factory", action="store_true", help="APP names a zero-argument callable returning an App"
    )
    talk = sub.add_parser(
        "connect",
        help="talk to a server: a netcat that speaks codecs",
        description=(
            "Connect to a server, send stdin as messages and print the messages "
            "received, one per line. Ends when the server closes, or when stdin "
            "ends (EOF is passed on, then replies are awaited for --wait seconds)."
        ),
    )
    talk.add_argument("address", nargs="?", metavar="HOST:PORT", help="e.g. 127.0.0.1:12345")
    talk.add_argument("--uds", default=None, metavar="PATH", help="connect to a Unix socket")
    talk.add_argument(
        "--codec",
        choices=("lines", "raw", "json-lines"),
        default="lines",
        help="lines (default): one message per line; raw: bytes as they come; "
        "json-lines: one JSON value per line",
    )
    talk.add_argument("--tls", action="store_true", help="use TLS")
    talk.add_argument(
        "--insecure", action="store_true", help="with --tls: do not verify the certificate"
    )
    talk.add_argument(
        "--timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="how long connecting may take (default 10)",
    )
    talk.add_argument(
        "--wait",
        type=float,
        default=2.0,
        metavar="SECONDS",
        help="after stdin ends, how long to wait for the server to close (default 2)",
    )
    return parser


def _fail(message: str) -> int:
    print(f"tcpkit: error: {message}", file=sys.stderr)
    return EXIT_ERROR


def _load_app(spec: str, factory: bool) -> App[Any, Any]:
    obj = import_from_string(spec)
    if factory:
        if not callable(obj):
            raise AppImportError(f"{spec!r} is not callable (--factory)")
        obj = obj()
    if not isinstance(obj, App):
        hint = " (use --factory for a function that returns an App)" if callable(obj) else ""
        raise AppImportError(f"{spec!r} is not a tcpkit App but {type(obj).__name__}{hint}")
    return obj  # pyright: ignore[reportUnknownVariableType]


def _ssl_context(certfile: str | None, keyfile: str | None) -> ssl.SSLContext | None:
    if certfile is None and keyfile is None:
        return None
    if certfile is None:
        raise AppImportError("--ssl-keyfile needs --ssl-certfile")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(certfile, keyfile)
    except (OSError, ssl.SSLError) as exc:
        raise AppImportError(f"cannot load the TLS certificate/key: {exc}") from None
    return context


def _run(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if args.uvloop and args.backend != "asyncio":
        return _fail("--uvloop needs --backend asyncio")
    if args.workers is not None and args.workers < 1:
        return _fail("--workers must be at least 1")
    try:
        app = _load_app(args.app, args.factory)
        context = _ssl_context(args.ssl_certfile, args.ssl_keyfile)
    except ModuleRaised as exc:
        cause = exc.__cause__
        assert cause is not None
        traceback.print_exception(type(cause), cause, cause.__traceback__)
        return _fail(f"{exc}: {type(cause).__name__}: {cause}")
    except AppImportError as exc:
        return _fail(str(exc))
    changes: dict[str, Any] = {}
    if args.max_connections is not None:
        changes["max_connections"] = args.max_connections
    if args.proxy_protocol:
        changes["proxy_protocol"] = True
    if args.busy_poll is not None:
        changes["busy_poll"] = args.busy_poll
    try:
        settings = app.settings.replace(**changes)
    except (ValueError, TypeError) as exc:
        return _fail(f"--{str(exc).replace('_', '-')}")  # names the flag
    hosts: list[str] | None = args.host
    host: str | list[str] = "127.0.0.1" if not hosts else hosts[0] if len(hosts) == 1 else hosts
    port: int | None = args.port
    if port is None:
        port = None if args.uds and not hosts else 12345
    backend_name = "asyncio+uvloop" if args.uvloop else args.backend
    options = {"use_uvloop": True} if args.uvloop else {}
    if args.workers is not None:
        return _supervise(args, app, host, port, backend_name, tls=context is not None)

    class _Started:
        """A task status that prints the startup line once every listener is bound."""

        def started(self, value: Server[Any, Any] | None = None) -> None:
            assert value is not None
            where = ", ".join(value.describe_addresses())
            if value.port is not None:  # "tcp 127.0.0.1:12345"; a Unix socket alone is "unix:..."
                where = f"{'tls' if context is not None else 'tcp'} {where}"
            print(
                f"tcpkit: {app.name} ({args.app}) running on {where} "
                f"[backend {backend_name}] (Press CTRL+C to quit)",
                flush=True,
            )

    async def main() -> None:
        await app.serve(
            host,
            port,
            uds=args.uds,
            ssl=context,
            settings=settings,
            handle_signals=True,
            drain_timeout=args.drain_timeout,
            task_status=_Started(),
        )

    try:
        anyio.run(main, backend=args.backend, backend_options=options)
    except ServerError as exc:
        return _fail(str(exc))
    except KeyboardInterrupt:  # a Ctrl-C before the signal handler was installed
        return 130
    return 0


def _supervise(
    args: argparse.Namespace,
    app: App[Any, Any],
    host: str | list[str],
    port: int | None,
    backend_name: str,
    *,
    tls: bool,
) -> int:
    """``--workers N``: bind here, serve in N worker processes (see :mod:`tcpkit.workers`)."""
    from .workers import WorkerSettings, supervise

    settings = WorkerSettings(
        app=args.app,
        factory=args.factory,
        backend=args.backend,
        use_uvloop=args.uvloop,
        max_connections=args.max_connections,
        proxy_protocol=args.proxy_protocol,
        busy_poll=args.busy_poll,
        ssl_certfile=args.ssl_certfile,
        ssl_keyfile=args.ssl_keyfile,
        drain_timeout=args.drain_timeout,
        log_level=args.log_level,
    )

    def announce(addresses: list[str]) -> None:
        print(
            f"tcpkit: {app.name} ({args.app}) running on {'tls' if tls else 'tcp'} "
            f"{', '.join(addresses)} [backend {backend_name}] [workers {args.workers}] "
            "(Press CTRL+C to quit)",
            flush=True,
        )

    try:
        return supervise(
            settings, args.workers, host=host, port=port, uds=args.uds, announce=announce
        )
    except ServerError as exc:
        return _fail(str(exc))
    except KeyboardInterrupt:  # a Ctrl-C before the signal handler was installed
        return 130


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``tcpkit`` command; returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == [WORKER_COMMAND]:  # a worker process of ``run --workers`` (not for users)
        from .workers import worker_main

        return worker_main(argv[1:])
    args = _parser().parse_args(argv)
    if args.command == "run":
        return _run(args)
    if args.command == "connect":
        return _connect(args)
    return EXIT_USAGE  # pragma: no cover (argparse requires a known command)


# -- tcpkit connect ------------------------------------------------------------

_LINE_LIMIT = 1024 * 1024  # a longer stdin line is sent in pieces of this size


def _connect(args: argparse.Namespace) -> int:
    """``tcpkit connect``: stdin to messages, messages to stdout; returns the exit status."""
    if (args.address is None) == (args.uds is None):
        return _fail("give either HOST:PORT or --uds PATH")
    if args.insecure and not args.tls:
        return _fail("--insecure needs --tls")
    if args.wait < 0 or args.timeout <= 0:
        return _fail("--wait must be >= 0 and --timeout > 0")
    host: str | None = None
    port: int | None = None
    if args.address is not None:
        try:
            host, port = parse_address(args.address)
        except ValueError as exc:
            return _fail(str(exc))
    context: ssl.SSLContext | None = None
    if args.tls:
        context = ssl.create_default_context()
        if args.insecure:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
    codec: Codec[Any, Any]
    if args.codec == "raw":
        codec = Raw()
    elif args.codec == "json-lines":
        codec = Lines() | Json()
    else:
        codec = Lines(encoding=None)  # bytes both ways: any encoding passes through

    async def session() -> int:
        async with AsyncExitStack() as stack:
            try:
                channel = await stack.enter_async_context(
                    connect(
                        host, port, codec=codec, ssl=context, timeout=args.timeout, uds=args.uds
                    )
                )
            except OSError as exc:  # TimeoutError and ssl.SSLError included
                return _fail(str(exc))
            return await _talk(channel, args.codec, args.wait)
        return EXIT_ERROR  # pragma: no cover (the stack does not swallow exceptions)

    try:
        return anyio.run(session)
    except KeyboardInterrupt:
        return 130


async def _talk(channel: Channel[Any, Any], mode: str, wait: float) -> int:
    """Pump stdin to ``channel`` and ``channel`` to stdout until one side ends."""
    status = 0
    send, receive = anyio.create_memory_object_stream[bytes](1)
    reader = threading.Thread(
        target=_read_stdin,
        args=(send, anyio.lowlevel.current_token()),
        name="tcpkit connect stdin",
        daemon=True,  # a read blocked on a terminal must not keep the process alive
    )
    reader.start()

    async def from_stdin() -> None:
        async with receive:
            await _send_stdin(channel, receive, mode)
        try:
            await channel.send_eof()
        except NotImplementedError:
            pass  # anyio's TLS streams cannot half-close: just wait for the replies
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            return
        await anyio.sleep(wait)  # the replies still coming; the server's close ends it sooner
        tg.cancel_scope.cancel()

    async with anyio.create_task_group() as tg:
        tg.start_soon(from_stdin)
        try:
            await _print_messages(channel, mode)
        except (anyio.BrokenResourceError, OSError) as exc:
            status = _fail(f"connection lost: {exc or type(exc).__name__}")
        tg.cancel_scope.cancel()
    return status


def _read_stdin(send: MemoryObjectSendStream[bytes], token: Any) -> None:
    """In a thread: hand stdin's bytes to the event loop; ``b""`` is EOF.

    ``os.read`` on the descriptor, not ``sys.stdin``: a daemon thread blocked in a
    buffered read can abort the interpreter at exit.
    """
    try:
        fd = sys.stdin.fileno()
    except (AttributeError, OSError, ValueError):
        fd = -1
    while True:
        try:
            chunk = os.read(fd, 65536) if fd >= 0 else b""
        except OSError:
            chunk = b""
        try:
            anyio.from_thread.run(send.send, chunk, token=token)
        except Exception:  # the event loop has ended, or nobody reads any more
            return
        if not chunk:
            return


async def _send_stdin(
    channel: Channel[Any, Any], chunks: MemoryObjectReceiveStream[bytes], mode: str
) -> None:
    """Send stdin as messages: lines (``lines``, ``json-lines``) or chunks (``raw``)."""
    buffer = bytearray()
    number = 0

    async def send_line(line: bytes) -> None:
        nonlocal number
        number += 1
        if mode == "lines":
            await channel.send(line)
            return
        if not line.strip():
            return
        try:
            value = json.loads(line)
        except ValueError as exc:
            print(f"tcpkit: skipping stdin line {number}: not JSON ({exc})", file=sys.stderr)
            return
        await channel.send(value)

    try:
        async for chunk in chunks:
            if not chunk:
                break
            if mode == "raw":
                await channel.send(chunk)
                continue
            buffer += chunk
            while (end := buffer.find(b"\n")) >= 0:
                line = bytes(buffer[:end])
                del buffer[: end + 1]
                await send_line(line.removesuffix(b"\r"))
            while len(buffer) >= _LINE_LIMIT:
                await send_line(bytes(buffer[:_LINE_LIMIT]))
                del buffer[:_LINE_LIMIT]
        if buffer:
            await send_line(bytes(buffer))  # a last line with no newline
    except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
        return  # the server went away: its close ends the session


async def _print_messages(channel: Channel[Any, Any], mode: str) -> None:
    """Write every message to stdout (one per line, ``raw`` as it comes) until EOF."""
    out = sys.stdout.buffer
    while True:
        try:
            message = await channel.receive()
        except anyio.EndOfStream:
            return
        except IncompleteFrame as exc:
            print(f"tcpkit: {exc}", file=sys.stderr)
            return
        except FrameError as exc:  # bad or oversized input: the codec skipped it
            print(f"tcpkit: skipping a message: {exc}", file=sys.stderr)
            continue
        if mode == "raw":
            out.write(message)
        elif mode == "json-lines":
            out.write(json.dumps(message, ensure_ascii=False).encode() + b"\n")
        else:
            out.write(message + b"\n")
        out.flush()
