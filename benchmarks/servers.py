"""The line-echo servers under test, one per process.

``python -m benchmarks.servers NAME`` binds 127.0.0.1 on a port the OS picks,
prints ``PORT <n>`` on stdout, and echoes every line until killed. Each
reference server is written the idiomatic way for its library; none of them
is tuned. ``tcpkit-*`` is the five-line tcpkit app (a plain ``def`` handler
calling ``conn.put``); ``tcpkit-send-*`` is the ``async def`` variant that
awaits ``conn.send``; ``tcpkit-nopoll-*`` is the first with busy polling off
(``App(busy_poll=0)``), to show what polling contributes.
"""

from __future__ import annotations

import asyncio
import resource
import socket
import sys
from collections.abc import Callable
from typing import Any

MAX_LINE = 65536
BACKLOG = 4096


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


def tcpkit_app(send: bool, busy_poll: bool = True) -> Any:
    from tcpkit import App, Connection

    app: App[str, str] = App() if busy_poll else App(busy_poll=0)
    if send:

        @app.on_input
        async def echo_send(conn: Connection[str, str], line: str) -> None:
            await conn.send(line)

    else:

        @app.on_input
        def echo(conn: Connection[str, str], line: str) -> None:
            conn.put(line)

    return app


def run_tcpkit(backend: str, use_uvloop: bool, send: bool, busy_poll: bool = True) -> None:
    import anyio

    app = tcpkit_app(send, busy_poll)

    async def main() -> None:
        async with app.start(host="127.0.0.1", port=0, backlog=BACKLOG) as server:
            announce(server.port)
            await anyio.sleep_forever()

    options = {"use_uvloop": True} if use_uvloop else {}
    anyio.run(main, backend=backend, backend_options=options)


# -- anyio streams (the hand-written anyio server) ---------------------------


def run_anyio(backend: str, use_uvloop: bool) -> None:
    import anyio
    from anyio.streams.buffered import BufferedByteReceiveStream

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


def run_asyncio_streams() -> None:
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


def run_protocol(factory: Callable[[], asyncio.Protocol], use_uvloop: bool) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(factory, "127.0.0.1", 0, backlog=BACKLOG)
        announce(server.sockets[0].getsockname()[1])
        await server.serve_forever()

    if use_uvloop:
        import uvloop

        uvloop.run(main())
    else:
        asyncio.run(main())


# -- trio ----------------------------------------------------------------------


def run_trio() -> None:
    import trio

    async def handle(stream: trio.SocketStream) -> None:
        buf = b""
        try:
            while data := await stream.receive_some(MAX_LINE):
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

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(
                lambda task_status: trio.serve_tcp(
                    handle, 0, host="127.0.0.1", backlog=BACKLOG, task_status=task_status
                )
            )
            sock: socket.socket = listeners[0].socket  # type: ignore[assignment]
            announce(sock.getsockname()[1])

    trio.run(main)


SERVERS: dict[str, Callable[[], None]] = {
    "tcpkit-asyncio": lambda: run_tcpkit("asyncio", False, False),
    "tcpkit-uvloop": lambda: run_tcpkit("asyncio", True, False),
    "tcpkit-trio": lambda: run_tcpkit("trio", False, False),
    "tcpkit-send-asyncio": lambda: run_tcpkit("asyncio", False, True),
    "tcpkit-send-uvloop": lambda: run_tcpkit("asyncio", True, True),
    "tcpkit-send-trio": lambda: run_tcpkit("trio", False, True),
    "tcpkit-nopoll-asyncio": lambda: run_tcpkit("asyncio", False, False, busy_poll=False),
    "tcpkit-nopoll-uvloop": lambda: run_tcpkit("asyncio", True, False, busy_poll=False),
    "tcpkit-nopoll-trio": lambda: run_tcpkit("trio", False, False, busy_poll=False),
    "anyio-asyncio": lambda: run_anyio("asyncio", False),
    "anyio-uvloop": lambda: run_anyio("asyncio", True),
    "anyio-trio": lambda: run_anyio("trio", False),
    "asyncio-streams": run_asyncio_streams,
    "asyncio-protocol": lambda: run_protocol(EchoProtocol, False),
    "asyncio-protocol-batch": lambda: run_protocol(BatchEchoProtocol, False),
    "uvloop-protocol": lambda: run_protocol(EchoProtocol, True),
    "trio-serve-tcp": run_trio,
}


def main() -> None:
    if len(sys.argv) != 2 or sys.argv[1] not in SERVERS:
        sys.exit(f"usage: python -m benchmarks.servers {{{','.join(SERVERS)}}}")
    raise_nofile()
    try:
        SERVERS[sys.argv[1]]()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
