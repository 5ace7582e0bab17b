"""The echo servers under test, one per process.

``python -m benchmarks.servers NAME [--tls CERT KEY | --bulk | --resp]``
binds 127.0.0.1 on a port the OS picks, prints ``PORT <n>`` on stdout, and
serves until killed:

- by default, a line echo: every line back;
- ``--tls CERT KEY``: the same over TLS (the certificate and its key, PEM);
- ``--bulk``: messages of any size echoed. tcpkit frames them with
  ``LengthPrefixed`` (a 4-byte length, then the payload) and echoes each
  message; the hand-written servers write back what they read;
- ``--resp`` (tcpkit only): ``examples/resp.py``, the Redis-protocol server,
  taken from the source tree tcpkit is imported from (so ``--baseline`` runs
  that tree's example).

Each reference server is written the idiomatic way for its library; none of
them is tuned. ``tcpkit-*`` is the five-line tcpkit app (a plain ``def``
handler calling ``conn.put``); ``tcpkit-send-*`` is the ``async def``
variant that awaits ``conn.send``; ``tcpkit-poll-*`` is the first with
busy polling on (``App(busy_poll=100e-6)``), to show what polling contributes.
Every variant sets ``busy_poll`` explicitly, so a ``--baseline`` tree whose
default differs runs the same server.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import resource
import socket
import ssl
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MAX_LINE = 65536
MAX_BULK = 1 << 20
POLL_WINDOW = 100e-6  # the tcpkit-poll-* servers: App(busy_poll=POLL_WINDOW)
BACKLOG = 4096
ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Mode:
    """What a server speaks: lines (over TLS with ``ssl``), bulk messages, or RESP."""

    bulk: bool = False
    resp: bool = False
    ssl: ssl.SSLContext | None = None

    def lines_only(self, name: str) -> None:
        if self.bulk or self.resp or self.ssl is not None:
            raise SystemExit(f"{name} only echoes lines (no --tls, --bulk or --resp)")


def announce(port: int) -> None:
    sys.stdout.write(f"PORT {port}\n")
    sys.stdout.flush()


def raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass


# -- tcpkit ------------------------------------------------------------------


def tcpkit_app(send: bool, busy_poll: bool, mode: Mode) -> Any:
    """The five-line echo app (``send``: the ``async def`` style), as ``mode`` says."""
    from tcpkit import App, Connection
    from tcpkit.codecs import LengthPrefixed, Lines

    if mode.resp:
        return resp_app()
    codec: Any = LengthPrefixed(max_length=MAX_BULK) if mode.bulk else Lines()
    app: App[Any, Any] = App(codec, busy_poll=POLL_WINDOW if busy_poll else 0)
    if send:

        @app.on_input
        async def echo_send(conn: Connection[Any, Any], message: Any) -> None:
            await conn.send(message)

    else:

        @app.on_input
        def echo(conn: Connection[Any, Any], message: Any) -> None:
            conn.put(message)

    return app


def resp_app() -> Any:
    """``examples/resp.py``'s app, from the tree tcpkit comes from (else this one's)."""
    import tcpkit

    path = Path(tcpkit.__file__).resolve().parents[2] / "examples" / "resp.py"
    if not path.exists():
        path = ROOT / "examples" / "resp.py"
    spec = importlib.util.spec_from_file_location("bench_resp_example", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module.make_app()


def run_tcpkit(backend: str, use_uvloop: bool, send: bool, busy_poll: bool, mode: Mode) -> None:
    import anyio

    app = tcpkit_app(send, busy_poll, mode)

    async def main() -> None:
        async with app.start(host="127.0.0.1", port=0, backlog=BACKLOG, ssl=mode.ssl) as server:
            announce(server.port)
            await anyio.sleep_forever()

    options = {"use_uvloop": True} if use_uvloop else {}
    anyio.run(main, backend=backend, backend_options=options)


# -- anyio streams (the hand-written anyio server) ---------------------------


def run_anyio(backend: str, use_uvloop: bool, mode: Mode) -> None:
    import anyio
    from anyio.streams.buffered import BufferedByteReceiveStream

    mode.lines_only("anyio-*")

    async def handle(stream: anyio.abc.SocketStream) -> None:
        buffered = BufferedByteReceiveStream(stream)
        async with stream:
            try:
                while True:
                    line = await buffered.receive_until(b"\n", MAX_LINE)
                    await stream.send(line + b"\n")
            except (anyio.EndOfStream, anyio.IncompleteRead, anyio.BrokenResourceError):
                pass
            except anyio.DelimiterNotFound:
                pass

    async def main() -> None:
        listener = await anyio.create_tcp_listener(
            local_host="127.0.0.1", local_port=0, backlog=BACKLOG
        )
        announce(listener.extra(anyio.abc.SocketAttribute.local_port))
        await listener.serve(handle)

    options = {"use_uvloop": True} if use_uvloop else {}
    anyio.run(main, backend=backend, backend_options=options)


# -- asyncio -----------------------------------------------------------------


def run_asyncio_streams(mode: Mode) -> None:
    mode.lines_only("asyncio-streams")

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                writer.write(line)
                await writer.drain()
        except (ConnectionError, ValueError):
            pass
        finally:
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=BACKLOG, limit=MAX_LINE)
        announce(server.sockets[0].getsockname()[1])
        await server.serve_forever()

    asyncio.run(main())


class EchoProtocol(asyncio.Protocol):
    """The textbook line protocol: split each read into lines, write each one."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: Any = transport
        self.buf = b""

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data
        write = self.transport.write
        start = 0
        while (end := buf.find(b"\n", start)) >= 0:
            write(buf[start : end + 1])
            start = end + 1
        self.buf = buf[start:]
        if len(self.buf) > MAX_LINE:
            self.transport.close()

    def eof_received(self) -> bool:
        return False


class BatchEchoProtocol(EchoProtocol):
    """One ``write`` per read: every complete line of the read at once."""

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data
        end = buf.rfind(b"\n")
        if end >= 0:
            self.transport.write(buf[: end + 1])
            buf = buf[end + 1 :]
        self.buf = buf
        if len(buf) > MAX_LINE:
            self.transport.close()


class ByteEchoProtocol(EchoProtocol):
    """Bulk: write back every read as it is."""

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


def run_protocol(batch: bool, use_uvloop: bool, mode: Mode) -> None:
    if batch:
        mode.lines_only("asyncio-protocol-batch")
    factory = ByteEchoProtocol if mode.bulk else BatchEchoProtocol if batch else EchoProtocol
    if mode.resp:
        raise SystemExit("the Protocol servers do not speak RESP")

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(factory, "127.0.0.1", 0, backlog=BACKLOG, ssl=mode.ssl)
        announce(server.sockets[0].getsockname()[1])
        await server.serve_forever()

    if use_uvloop:
        import uvloop

        uvloop.run(main())
    else:
        asyncio.run(main())


# -- trio ----------------------------------------------------------------------


def run_trio(mode: Mode) -> None:
    import trio

    if mode.resp:
        raise SystemExit("trio-serve-tcp does not speak RESP")

    async def handle(stream: trio.abc.Stream) -> None:
        buf = b""
        try:
            while data := await stream.receive_some(MAX_LINE):
                if mode.bulk:
                    await stream.send_all(data)
                    continue
                buf += data
                start = 0
                while (end := buf.find(b"\n", start)) >= 0:
                    await stream.send_all(buf[start : end + 1])
                    start = end + 1
                buf = buf[start:]
                if len(buf) > MAX_LINE:
                    break
        except trio.BrokenResourceError:
            pass
        finally:
            await stream.aclose()

    async def serve(task_status: Any) -> None:
        if mode.ssl is None:
            await trio.serve_tcp(
                handle, 0, host="127.0.0.1", backlog=BACKLOG, task_status=task_status
            )
        else:
            await trio.serve_ssl_over_tcp(
                handle, 0, mode.ssl, host="127.0.0.1", backlog=BACKLOG, task_status=task_status
            )

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(serve)
            listener = getattr(listeners[0], "transport_listener", listeners[0])
            sock: socket.socket = listener.socket
            announce(sock.getsockname()[1])

    trio.run(main)


SERVERS: dict[str, Callable[[Mode], None]] = {
    "tcpkit-asyncio": lambda m: run_tcpkit("asyncio", False, False, False, m),
    "tcpkit-uvloop": lambda m: run_tcpkit("asyncio", True, False, False, m),
    "tcpkit-trio": lambda m: run_tcpkit("trio", False, False, False, m),
    "tcpkit-send-asyncio": lambda m: run_tcpkit("asyncio", False, True, False, m),
    "tcpkit-send-uvloop": lambda m: run_tcpkit("asyncio", True, True, False, m),
    "tcpkit-send-trio": lambda m: run_tcpkit("trio", False, True, False, m),
    "tcpkit-poll-asyncio": lambda m: run_tcpkit("asyncio", False, False, True, m),
    "tcpkit-poll-uvloop": lambda m: run_tcpkit("asyncio", True, False, True, m),
    "tcpkit-poll-trio": lambda m: run_tcpkit("trio", False, False, True, m),
    "anyio-asyncio": lambda m: run_anyio("asyncio", False, m),
    "anyio-uvloop": lambda m: run_anyio("asyncio", True, m),
    "anyio-trio": lambda m: run_anyio("trio", False, m),
    "asyncio-streams": run_asyncio_streams,
    "asyncio-protocol": lambda m: run_protocol(False, False, m),
    "asyncio-protocol-batch": lambda m: run_protocol(True, False, m),
    "uvloop-protocol": lambda m: run_protocol(False, True, m),
    "trio-serve-tcp": run_trio,
}


def parse_mode(argv: list[str]) -> tuple[str, Mode]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.servers")
    parser.add_argument("name", choices=list(SERVERS))
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--tls", nargs=2, metavar=("CERT", "KEY"), help="line echo over TLS")
    group.add_argument("--bulk", action="store_true", help="echo messages of any size")
    group.add_argument("--resp", action="store_true", help="examples/resp.py (tcpkit only)")
    args = parser.parse_args(argv)
    context = None
    if args.tls:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(*args.tls)
    return args.name, Mode(bulk=args.bulk, resp=args.resp, ssl=context)


def main() -> None:
    name, mode = parse_mode(sys.argv[1:])
    raise_nofile()
    try:
        SERVERS[name](mode)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
