"""The ``tcpkit`` command (also ``python -m tcpkit``): a thin layer over ``App.serve``.

User errors (a bad app path, a missing attribute, a port in use) end with one
line on stderr and a non-zero exit, no traceback. An exception raised while
importing the user's module is the user's bug: it is shown with its
traceback, then one summary line.
"""

from __future__ import annotations

import argparse
import logging
import ssl
import sys
import traceback
from collections.abc import Sequence
from typing import Any

import anyio

from .app import App
from .exceptions import ServerError
from .importer import AppImportError, ModuleRaised, import_from_string
from .server import Server

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
    if args.max_connections is not None:
        if args.max_connections < 0:
            return _fail("--max-connections must be >= 0")
        app.max_connections = args.max_connections
    if args.proxy_protocol:
        app.proxy_protocol = True
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
            where = ", ".join(value._describe_addresses())  # pyright: ignore[reportPrivateUsage]
            scheme = "tls" if context is not None else "tcp"
            print(
                f"tcpkit: {app.name} ({args.app}) running on {scheme} {where} "
                f"[backend {backend_name}] (Press CTRL+C to quit)",
                flush=True,
            )

    async def main() -> None:
        await app.serve(
            host,
            port,
            uds=args.uds,
            ssl=context,
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
    args = _parser().parse_args(argv)
    if args.command == "run":
        return _run(args)
    return EXIT_USAGE  # pragma: no cover (argparse requires a known command)
