"""The ``tcpkit`` command (also ``python -m tcpkit``): ``run``, ``connect`` and ``ctl``.

User errors (a bad app path, a missing attribute, a port in use, a bad flag
or ``TCPKIT_*`` value, a missing optional package) end with one line on
stderr and a non-zero exit, no traceback. An exception raised while
importing the user's module is the user's bug: it is shown with its
traceback, then one summary line.

``tcpkit run`` exits 0 after a graceful stop, 1 when a second signal forced
it (or a ``--workers`` worker could not start), 2 for a usage error.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import socket
import ssl
import sys
import threading
import traceback
from collections.abc import Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NoReturn

import anyio
import anyio.lowlevel
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from .client import Channel, connect, parse_address
from .codecs import Codec, Json, Lines, Raw
from .exceptions import FrameError, IncompleteFrame, ServerError
from .importer import AppImportError, ModuleRaised
from .runconfig import ConfigError, RunConfig, add_run_arguments

if TYPE_CHECKING:
    from .reload import Handover

__all__ = ["main"]

EXIT_USAGE = 2
EXIT_ERROR = 1

logger = logging.getLogger("tcpkit.server")

_OWNED = "tcpkit-listener"  # LISTEN_FDNAMES name of a listener tcpkit bound itself
_CONTROL = "tcpkit-control"
_METRICS = "tcpkit-metrics"


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``tcpkit run: error: ... (see --help)``."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        ours = version("tcpkit")
    except PackageNotFoundError:  # pragma: no cover (running from a source tree)
        ours = "unknown"
    import platform

    anyio_version = getattr(anyio, "__version__", None)
    if anyio_version is None:
        try:
            anyio_version = version("anyio")
        except PackageNotFoundError:  # pragma: no cover
            anyio_version = "unknown"
    return f"tcpkit {ours} (Python {platform.python_version()}, anyio {anyio_version})"


def _parser() -> tuple[argparse.ArgumentParser, argparse.ArgumentParser]:
    """The ``tcpkit`` parser and its ``run`` subparser."""
    parser = _Parser(prog="tcpkit", description="Run and try tcpkit TCP servers.")
    parser.add_argument(
        "--version", action="version", version=_version(), help="show the version and exit"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = sub.add_parser(
        "run",
        help="serve an app",
        description=(
            "Serve a tcpkit App. Every option also reads TCPKIT_<OPTION> from the "
            "environment (--max-connections: TCPKIT_MAX_CONNECTIONS; the app: TCPKIT_APP); "
            "a flag given on the command line wins over its variable. SIGINT/SIGTERM "
            "drain and stop (a second one aborts), SIGHUP reloads gracefully."
        ),
    )
    add_run_arguments(run)
    _add_connect_command(sub.add_parser)
    _add_ctl_command(sub.add_parser)
    return parser, run


def _add_seconds(parser: argparse.ArgumentParser, flag: str, default: float, help: str) -> None:
    """Add ``flag SECONDS`` (a float) with its ``default``."""
    parser.add_argument(flag, type=float, default=default, metavar="SECONDS", help=help)


def _add_connect_command(add_parser: Callable[..., argparse.ArgumentParser]) -> None:
    """``tcpkit connect`` and its options (``add_parser``: the subparsers' method)."""
    talk = add_parser(
        "connect",
        help="talk to a server: a netcat that speaks codecs",
        description=(
            "Connect to a server, send stdin as messages and print the messages "
            "received, one per line. Ends when the server closes, or when stdin "
            "ends (EOF is passed on, then replies are awaited for --wait seconds). "
            "A closed stdout (as with '| head') ends it quietly."
        ),
    )
    talk.add_argument(
        "address",
        nargs="?",
        metavar="HOST:PORT",
        help="e.g. 127.0.0.1:12345, [::1]:12345, or HOST PORT as two arguments",
    )
    talk.add_argument("port", nargs="?", metavar="PORT", help="the port, given apart (nc style)")
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
        "--cafile",
        default=None,
        metavar="FILE",
        help="trust the CA certificate(s) in FILE (PEM), e.g. a self-signed "
        "server's certificate; implies --tls",
    )
    talk.add_argument(
        "--insecure", action="store_true", help="with --tls: do not verify the certificate"
    )
    _add_seconds(talk, "--timeout", 10.0, "how long connecting may take (default 10)")
    _add_seconds(
        talk,
        "--wait",
        2.0,
        "after stdin ends, how long to wait for the server to close (default 2)",
    )


def _add_ctl_command(add_parser: Callable[..., argparse.ArgumentParser]) -> None:
    """``tcpkit ctl`` and its options (``add_parser``: the subparsers' method)."""
    ctl = add_parser(
        "ctl",
        help="send a command to a server's control socket (run --control PATH)",
        description=(
            "Send one command to the control socket of 'tcpkit run --control PATH' and "
            "print its JSON answer. Commands: stats, connections, drain, set-max N|none, "
            "kick ID, reload, help. Exits 0 if the command succeeded, 1 if not."
        ),
    )
    ctl.add_argument("path", metavar="PATH", help="the control socket (run --control PATH)")
    ctl.add_argument("words", nargs="+", metavar="COMMAND", help="the command and its argument")
    _add_seconds(ctl, "--timeout", 10.0, "how long to wait for the answer (default 10)")
    ctl.add_argument("--pretty", action="store_true", help="indent the JSON answer")


def _fail(message: str) -> int:
    print(f"tcpkit: error: {message}", file=sys.stderr, flush=True)
    return EXIT_ERROR


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``tcpkit`` command; returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    from .reload import CHECK_COMMAND
    from .workers import WORKER_COMMAND

    if argv[:1] == [WORKER_COMMAND]:  # a worker process of ``run --workers`` (not for users)
        from .workers import worker_main

        return worker_main(argv[1:])
    if argv[:1] == [CHECK_COMMAND]:  # does the app load? (before a reload; not for users)
        return _check(argv[1:])
    parser, run_parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "run":
        return _run(run_parser, args)
    if args.command == "connect":
        return _connect(args)
    if args.command == "ctl":
        return _ctl(args)
    return EXIT_USAGE  # pragma: no cover (argparse requires a known command)


def _check(argv: Sequence[str]) -> int:
    from .runconfig import load_app

    if not argv:
        return _fail("usage: tcpkit _check APP [--factory]")
    try:
        load_app(RunConfig(app=argv[0], factory="--factory" in argv[1:]))
    except ModuleRaised as exc:
        cause = exc.__cause__
        assert cause is not None
        traceback.print_exception(type(cause), cause, cause.__traceback__)
        return _fail(f"{exc}: {type(cause).__name__}: {cause}")
    except AppImportError as exc:
        return _fail(str(exc))
    return 0


# -- tcpkit run ------------------------------------------------------------------


@dataclass
class _Listening:
    """The sockets a ``tcpkit run`` process serves, and the files it must remove at the end."""

    app: list[tuple[socket.socket, str]] = field(default_factory=list[tuple[socket.socket, str]])
    control: socket.socket | None = None
    metrics: socket.socket | None = None
    owned_files: list[tuple[str, int]] = field(default_factory=list[tuple[str, int]])

    def all(self) -> list[socket.socket]:
        out = [sock for sock, _ in self.app]
        out += [sock for sock in (self.control, self.metrics) if sock is not None]
        return out

    def close(self) -> None:
        for sock in self.all():
            sock.close()

    def adopt(self, sock: socket.socket, name: str) -> None:
        """Take an inherited socket for what its ``LISTEN_FDNAMES`` name says it is."""
        if name == _CONTROL:
            self.control = sock
            self.own(sock)
        elif name == _METRICS:
            self.metrics = sock
        else:
            self.app.append((sock, name))
            if name == _OWNED:
                self.own(sock)

    def own(self, sock: socket.socket) -> None:
        """Remember to remove ``sock``'s Unix socket file at the final stop."""
        if sock.family != socket.AF_UNIX:
            return
        path = sock.getsockname()
        if isinstance(path, bytes):
            path = os.fsdecode(path)
        if isinstance(path, str) and path and not path.startswith("\0"):
            with contextlib.suppress(OSError):
                self.owned_files.append((path, os.stat(path).st_ino))

    def remove_files(self) -> None:
        for path, inode in self.owned_files:
            with contextlib.suppress(OSError):
                if os.stat(path).st_ino == inode:  # not replaced by another server since
                    os.unlink(path)


def _open_sockets(config: RunConfig, inherited: list[tuple[int, str]]) -> _Listening:
    """Bind or adopt every socket: inherited (systemd, a reload, ``--fd``) else bound here.

    Raises:
        ConfigError: a bad ``--fd``.
        ServerError: an address could not be bound.
    """
    from . import _binding
    from ._systemd import listening_socket

    out = _Listening()
    try:
        for fd, name in inherited:
            out.adopt(listening_socket(fd, f"LISTEN_FDS socket {fd} ({name})"), name)
        for fd in config.fd:
            out.app.append((listening_socket(fd, f"--fd {fd}"), f"fd{fd}"))
        if not out.app:
            _bind_app_sockets(config, out)
        _bind_operation_sockets(config, out)
    except ValueError as exc:
        out.close()
        raise ConfigError(str(exc)) from None
    except _binding.BindError as exc:
        out.close()
        raise ServerError(str(exc)) from exc
    except BaseException:
        out.close()
        raise
    return out


def _bind_app_sockets(config: RunConfig, out: _Listening) -> None:
    """Bind the app's sockets (``--host``, ``--port``, ``--uds``) into ``out``.

    Raises:
        BindError: an address could not be bound.
    """
    from . import _binding

    socks = _binding.open_sockets(
        config.listen_host,
        config.listen_port,
        config.uds,
        uds_mode=config.uds_mode,
        reuse_port=config.reuse_port,
        backlog=config.backlog,
    )
    for sock in socks:
        out.app.append((sock, _OWNED))
        out.own(sock)


def _bind_operation_sockets(config: RunConfig, out: _Listening) -> None:
    """Bind ``--control`` and ``--metrics`` into ``out``, unless they were inherited.

    Raises:
        BindError: an address could not be bound.
        ValueError: a bad ``--metrics`` address.
    """
    from . import _binding

    if config.control is not None and out.control is None:
        from .control import bind_control

        out.control = bind_control(config.control)
        out.own(out.control)
    if config.metrics is not None and out.metrics is None:
        host, port = parse_address(config.metrics)
        [out.metrics] = _binding.open_sockets(host, port, backlog=64)


def _prepare(run_parser: argparse.ArgumentParser, args: argparse.Namespace) -> RunConfig:
    """Settings, logging, and the optional packages they need.

    Raises:
        ConfigError: a bad setting.
        ServerError: a missing backend.
        ImportError: a missing optional package (with its pip line).
    """
    from .logconfig import configure_logging
    from .runner import require_backend

    config = RunConfig.from_args(run_parser, args)
    configure_logging(config.log_level, config.log_config)
    require_backend(config.backend, config.uvloop)
    if config.metrics is not None:
        from .metrics import require_prometheus

        require_prometheus()
    if config.reload:
        try:
            import watchfiles  # noqa: F401  # pyright: ignore[reportUnusedImport]
        except ImportError as exc:
            raise ImportError(
                f"--reload needs watchfiles, which cannot be imported ({exc}): "
                "pip install 'tcpkit[reload]'"
            ) from None
    return config


def _run(run_parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    from ._systemd import Notifier, listen_fds
    from .runconfig import load_app, server_ssl_context

    try:
        config = _prepare(run_parser, args)
    except (ConfigError, ServerError, ImportError, ValueError) as exc:
        return _fail(str(exc))
    try:
        app = load_app(config)
        context = server_ssl_context(config)
        inherited = listen_fds()
        listening = _open_sockets_held(config, inherited)
    except ModuleRaised as exc:
        cause = exc.__cause__
        assert cause is not None
        traceback.print_exception(type(cause), cause, cause.__traceback__)
        return _fail(f"{exc}: {type(cause).__name__}: {cause}")
    except (AppImportError, ConfigError, ServerError, ValueError) as exc:
        return _fail(str(exc))
    notifier = Notifier()
    try:
        if config.workers is not None:
            return _supervise(config, app.name, listening, notifier, tls=context is not None)
        return _serve_single(config, app, context, listening, notifier)
    finally:
        listening.remove_files()


def _open_sockets_held(config: RunConfig, inherited: list[tuple[int, str]]) -> _Listening:
    """:func:`_open_sockets`; a single server holds its stop signals back from then on.

    Clients (and tests) may connect once the sockets are bound; a SIGINT that
    comes before the server watches for it (``ServingProcess``) then stops it
    gracefully, instead of interrupting its start (see ``block_signals``). A
    supervisor watches for signals its own way.
    """
    from .reload import block_signals, unblock_signals

    if config.workers is not None:
        return _open_sockets(config, inherited)
    block_signals()
    try:
        return _open_sockets(config, inherited)
    except BaseException:
        unblock_signals()
        raise


def _serve_single(
    config: RunConfig,
    app: Any,
    context: ssl.SSLContext | None,
    listening: _Listening,
    notifier: Any,
) -> int:
    from .process import ServingProcess, Sockets

    handover = _handover(listening)
    process = ServingProcess(
        config,
        app,
        context,
        Sockets(
            [sock for sock, _ in listening.app],
            control=listening.control,
            metrics=listening.metrics,
        ),
        notifier=notifier,
        handover=handover,
    )
    try:
        outcome = anyio.run(
            process.run, backend=config.backend, backend_options=config.backend_options
        )
    except ServerError as exc:
        handover.close()
        return _fail(str(exc))
    except KeyboardInterrupt:  # a Ctrl-C before the signal handler was installed
        handover.close()
        return 130
    if outcome.reload:
        return _reexec(handover)
    handover.close()
    return outcome.code


def _handover(listening: _Listening) -> Handover:
    """What a reload passes on: every listening socket, named for what it serves."""
    from .reload import Handover

    handover = Handover()
    for sock, name in listening.app:
        handover.keep(sock, name)
    if listening.control is not None:
        handover.keep(listening.control, _CONTROL)
    if listening.metrics is not None:
        handover.keep(listening.metrics, _METRICS)
    return handover


def _reexec(handover: Handover) -> int:
    """Reload: re-execute this process with the sockets; returns only if that failed."""
    logger.info(
        "re-executing %s (pid %d) with %d socket(s)",
        sys.executable,
        os.getpid(),
        len(handover.names),
    )
    try:
        handover.exec()
    except OSError as exc:
        handover.close()
        return _fail(f"reload failed: cannot re-execute {sys.executable}: {exc}")


def _supervise(
    config: RunConfig,
    name: str,
    listening: _Listening,
    notifier: Any,
    *,
    tls: bool,
) -> int:
    """``--workers N``: serve in N worker processes (see :mod:`tcpkit.workers`)."""
    from . import _binding
    from .workers import Supervisor

    if os.name != "posix":  # pragma: no cover
        listening.close()
        return _fail("--workers needs a POSIX system (Linux, macOS, BSD)")
    socks = [sock for sock, _ in listening.app]
    addresses = ", ".join(_binding.describe_sockets(socks))
    where = (
        f"{'tls' if tls else 'tcp'} {addresses}" if not addresses.startswith("unix:") else addresses
    )

    def announce() -> None:
        logger.info(
            "%s (%s) running on %s [backend %s] [workers %d] (Press CTRL+C to quit)",
            name,
            config.app,
            where,
            config.backend_name,
            config.workers,
        )

    supervisor = Supervisor(
        config,
        config.workers or 1,
        [sock.fileno() for sock in socks],
        control=listening.control,
        metrics=listening.metrics,
        notifier=notifier,
        announce=announce,
    )
    try:
        return anyio.run(supervisor.run, backend="asyncio")
    except ServerError as exc:
        return _fail(str(exc))
    except KeyboardInterrupt:  # a Ctrl-C before the signal handler was installed
        return 130
    finally:
        listening.close()


# -- tcpkit ctl ---------------------------------------------------------------


def _ctl(args: argparse.Namespace) -> int:
    from .control import request_sync

    line = " ".join(args.words)
    try:
        reply = request_sync(args.path, line, timeout=args.timeout)
    except FileNotFoundError:
        return _fail(f"no control socket at {args.path!r} (is the server running with --control?)")
    except (OSError, ValueError) as exc:
        return _fail(f"{args.path}: {exc}")
    text = json.dumps(reply, indent=2 if args.pretty else None, ensure_ascii=False)
    print(text, flush=True)
    if not reply.get("ok"):
        print(f"tcpkit: error: {reply.get('error')}", file=sys.stderr)
        return EXIT_ERROR
    return 0


# -- tcpkit connect ------------------------------------------------------------

_LINE_LIMIT = 1024 * 1024  # a longer stdin line is sent in pieces of this size


def _connect(args: argparse.Namespace) -> int:
    """``tcpkit connect``: stdin to messages, messages to stdout; returns the exit status."""
    try:
        _check_connect_flags(args)
        host, port = _connect_address(args)
        context = _client_tls(args)
    except ValueError as exc:
        return _fail(str(exc))
    codec = _connect_codec(args.codec)

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


def _check_connect_flags(args: argparse.Namespace) -> None:
    """Refuse ``connect`` flags that do not go together (``--cafile`` implies ``--tls``).

    Raises:
        ValueError: with the one-line reason.
    """
    if args.uds is not None and args.port is not None:
        raise ValueError("give either HOST PORT or --uds PATH, not both")
    if (args.address is None) == (args.uds is None):
        raise ValueError("give either HOST:PORT (or HOST PORT) or --uds PATH")
    tls = args.tls or args.cafile is not None
    if args.insecure and not tls:
        raise ValueError("--insecure needs --tls")
    if args.insecure and args.cafile is not None:
        raise ValueError("--insecure and --cafile contradict each other")
    if args.wait < 0 or args.timeout <= 0:
        raise ValueError("--wait must be >= 0 and --timeout > 0")


def _connect_address(args: argparse.Namespace) -> tuple[str | None, int | None]:
    """The host and port to connect to: ``HOST:PORT``, ``HOST PORT``, or none (``--uds``).

    Raises:
        ValueError: a bad address or port.
    """
    if args.address is None:
        return None, None
    if args.port is None:
        return parse_address(args.address)
    if not args.port.isdigit() or not 0 <= int(args.port) <= 65535:  # HOST PORT, as nc
        raise ValueError(f"bad port {args.port!r}: expected a number in 0..65535")
    return args.address.strip("[]"), int(args.port)


def _client_tls(args: argparse.Namespace) -> ssl.SSLContext | None:
    """The TLS context of ``--tls``/``--cafile``/``--insecure`` (``None`` for plain TCP).

    Raises:
        ValueError: the ``--cafile`` cannot be loaded.
    """
    if not args.tls and args.cafile is None:
        return None
    try:
        context = ssl.create_default_context(cafile=args.cafile)
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"--cafile {args.cafile!r}: {exc}") from None
    if args.insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _connect_codec(mode: str) -> Codec[Any, Any]:
    """The codec of ``--codec``: ``lines`` (bytes both ways), ``raw`` or ``json-lines``."""
    if mode == "raw":
        return Raw()
    if mode == "json-lines":
        return Lines() | Json()
    return Lines(encoding=None)  # bytes both ways: any encoding passes through


class _StdoutClosed(Exception):
    """Whoever reads our stdout has gone (``tcpkit connect ... | head``)."""


def _stdout_closed() -> int:
    """End quietly after a broken stdout pipe: exit 0, no "Exception ignored" at exit."""
    with contextlib.suppress(OSError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    return 0


async def _talk(channel: Channel[Any, Any], mode: str, wait: float) -> int:
    """Pump stdin to ``channel`` and ``channel`` to stdout until one side ends."""
    status = 0
    send, receive = anyio.create_memory_object_stream[bytes](1)
    free = threading.Semaphore(1)  # the stream's one slot: the reader thread waits for it
    reader = threading.Thread(
        target=_read_stdin,
        args=(send, free, anyio.lowlevel.current_token()),
        name="tcpkit connect stdin",
        daemon=True,  # a read blocked on a terminal must not keep the process alive
    )
    reader.start()

    async def from_stdin() -> None:
        async with receive:
            await _send_stdin(channel, receive, free, mode)
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
        except _StdoutClosed:
            status = _stdout_closed()
        except (anyio.BrokenResourceError, OSError) as exc:
            status = _fail(f"connection lost: {exc or type(exc).__name__}")
        tg.cancel_scope.cancel()
    return status


def _read_stdin(send: MemoryObjectSendStream[bytes], free: threading.Semaphore, token: Any) -> None:
    """In a thread: hand stdin's bytes to the event loop; ``b""`` is EOF.

    ``os.read`` on the descriptor, not ``sys.stdin``: a daemon thread blocked in a
    buffered read can abort the interpreter at exit. The thread waits for the
    stream's free slot itself and hands a chunk over with a plain call: a
    coroutine sent to a loop that is ending would be reported as never awaited.
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
        free.acquire()
        try:
            anyio.from_thread.run_sync(send.send_nowait, chunk, token=token)
        except Exception:  # the event loop has ended, or nobody reads any more
            return
        if not chunk:
            return


async def _send_stdin(
    channel: Channel[Any, Any],
    chunks: MemoryObjectReceiveStream[bytes],
    free: threading.Semaphore,
    mode: str,
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
            free.release()
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
        try:
            if mode == "raw":
                out.write(message)
            elif mode == "json-lines":
                out.write(json.dumps(message, ensure_ascii=False).encode() + b"\n")
            else:
                out.write(message + b"\n")
            out.flush()
        except BrokenPipeError:
            raise _StdoutClosed from None
