"""One client interface over the four stream kinds of the matrix.

:class:`PathClient` speaks raw bytes, so every check reads what a real client
would: ``send``, ``recv_lines``, ``recv_exactly``, ``recv_until_closed``,
``send_eof`` (half-close), ``reset`` (an abortive close) and ``aclose``.
:class:`SocketClient` runs over TCP, TLS (over TCP) and Unix sockets;
:class:`MemoryClient` over ``tcpkit.testing``'s in-memory ``TestClient``.
Every wait is bounded by :data:`TIMEOUT` so that a hang fails fast.
"""

from __future__ import annotations

import socket
import ssl
import struct
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

import anyio
import anyio.abc

from tcpkit.testing import TestClient

T = TypeVar("T")

TIMEOUT = 5.0
"""Seconds any client wait may take before the check fails."""
KNOWN_FAILURE_TIMEOUT = 0.25
"""The same for a check known to fail on its path (an xfail): waits that never end cost less.

(A fixed path answers on loopback well within it; were it slower, the check
would report XFAIL instead of XPASS, never a false failure.)"""


@dataclass(frozen=True)
class Ending:
    """How the server ended the connection, as the client saw it."""

    data: bytes
    """The bytes received before the end (not yet consumed by other reads)."""
    reset: bool
    """A reset (or a broken stream), not a clean EOF."""


class PathClient(ABC):
    """A raw-bytes client; ``received`` counts every byte that arrived."""

    def __init__(self, timeout: float = TIMEOUT) -> None:
        self.buffer = bytearray()
        self.received = 0
        self.ended: Ending | None = None
        self.timeout = timeout

    @contextmanager
    def _deadline(self, what: str) -> Iterator[None]:
        """Like ``anyio.fail_after(self.timeout)``, saying what was awaited and what came."""
        with anyio.move_on_after(self.timeout) as scope:
            yield
        if scope.cancelled_caught:
            raise TimeoutError(
                f"{what}: nothing more within {self.timeout} s; "
                f"received {self.received} bytes, unread {bytes(self.buffer[:300])!r}"
            )

    # -- what each transport provides ----------------------------------------------

    @abstractmethod
    async def _receive(self) -> bytes:
        """Some bytes; raises ``anyio.EndOfStream`` at EOF, another exception on a reset."""

    @abstractmethod
    async def send(self, data: bytes) -> None:
        """Send ``data`` (one write)."""

    @abstractmethod
    async def send_eof(self) -> None:
        """Half-close: the server reads EOF, this client can still receive."""

    @abstractmethod
    async def reset(self) -> None:
        """Close abortively (``SO_LINGER`` 0: a TCP reset)."""

    @abstractmethod
    async def aclose(self) -> None:
        """Close normally."""

    @abstractmethod
    async def wait_unread(self) -> None:
        """Wait until bytes from the server are waiting to be read (not reading them)."""

    # -- reading ------------------------------------------------------------------------

    async def _fill(self) -> bool:
        """Read once more into the buffer; False once the server ended the stream."""
        if self.ended is not None:
            return False
        try:
            data = await self._receive()
        except anyio.EndOfStream:
            self.ended = Ending(b"", reset=False)
            return False
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError, ssl.SSLError):
            self.ended = Ending(b"", reset=True)
            return False
        self.received += len(data)
        self.buffer += data
        return True

    async def send_lines(self, *lines: str) -> None:
        """Send every line (CRLF-terminated) in one write."""
        await self.send("".join(f"{line}\r\n" for line in lines).encode())

    async def recv_lines(self, count: int) -> list[str]:
        """The next ``count`` lines, without terminators.

        Raises:
            EOFError: the server ended the stream first.
        """
        with self._deadline(f"waiting for {count} lines"):
            while self.buffer.count(b"\n") < count:
                if not await self._fill():
                    raise EOFError(f"ended ({self.ended}) with {bytes(self.buffer)!r} buffered")
        lines: list[str] = []
        for _ in range(count):
            line, _, rest = bytes(self.buffer).partition(b"\n")
            self.buffer[:] = rest
            lines.append(line.removesuffix(b"\r").decode())
        return lines

    async def recv_exactly(self, size: int) -> bytes:
        """The next ``size`` bytes.

        Raises:
            EOFError: the server ended the stream first.
        """
        with self._deadline(f"waiting for {size} bytes"):
            while len(self.buffer) < size:
                if not await self._fill():
                    raise EOFError(f"ended ({self.ended}) with {bytes(self.buffer)!r} buffered")
        data = bytes(self.buffer[:size])
        del self.buffer[:size]
        return data

    async def recv_until_closed(self) -> Ending:
        """Every byte until the server ends the stream, and how it ended."""
        with self._deadline("waiting for the server to close"):
            while await self._fill():
                pass
        assert self.ended is not None
        data = bytes(self.buffer)
        self.buffer.clear()
        return Ending(data, self.ended.reset)

    async def recv_lines_until_closed(self) -> tuple[list[str], Ending]:
        """Every complete line until the end, and the end itself."""
        ending = await self.recv_until_closed()
        *lines, rest = ending.data.split(b"\n")
        return [line.removesuffix(b"\r").decode() for line in lines], Ending(rest, ending.reset)


# -- sockets -----------------------------------------------------------------------------


class RawSocketStream(anyio.abc.ByteStream):
    """A byte stream straight on a non-blocking socket, the same on every backend.

    Unlike anyio's socket streams, nothing reads ahead: bytes the client has
    not asked for stay in the kernel (a Unix socket closed with unread bytes
    resets its peer, as ``SO_LINGER`` 0 does for TCP).
    """

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    async def receive(self, max_bytes: int = 65536) -> bytes:
        while True:
            try:
                data = self.sock.recv(max_bytes)
            except BlockingIOError:
                await anyio.wait_readable(self.sock)
                continue
            except OSError as exc:
                raise anyio.BrokenResourceError from exc
            if not data:
                raise anyio.EndOfStream
            return data

    async def send(self, item: bytes) -> None:
        view = memoryview(item)
        while view:
            try:
                sent = self.sock.send(view)
            except BlockingIOError:
                await anyio.wait_writable(self.sock)
                continue
            except OSError as exc:
                raise anyio.BrokenResourceError from exc
            view = view[sent:]

    async def send_eof(self) -> None:
        self.sock.shutdown(socket.SHUT_WR)

    async def aclose(self) -> None:
        self.sock.close()


class TlsClientStream(anyio.abc.ByteStream):
    """TLS over a :class:`RawSocketStream`, with a real half-close.

    anyio's ``TLSStream`` cannot half-close; here ``send_eof`` sends TLS's
    ``close_notify`` and then a TCP FIN, after which the client can still
    read (TLS 1.3 allows the server to go on writing). ``send_ragged_eof``
    is a bare FIN, as a client that shuts down the socket under TLS sends.
    """

    def __init__(self, raw: RawSocketStream, context: ssl.SSLContext) -> None:
        self.raw = raw
        self._in = ssl.MemoryBIO()
        self._out = ssl.MemoryBIO()
        self._ssl = context.wrap_bio(self._in, self._out, server_hostname="127.0.0.1")

    async def _flush(self) -> None:
        data = self._out.read()
        if data:
            await self.raw.send(data)

    async def _run(self, func: Callable[[], T]) -> T:
        while True:
            try:
                result = func()
            except ssl.SSLWantReadError:
                await self._flush()
                try:
                    self._in.write(await self.raw.receive())
                except anyio.EndOfStream:
                    self._in.write_eof()
            else:
                await self._flush()
                return result

    async def handshake(self) -> None:
        await self._run(self._ssl.do_handshake)

    async def receive(self, max_bytes: int = 65536) -> bytes:
        try:
            data = await self._run(lambda: self._ssl.read(max_bytes))
        except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
            data = b""
        except ssl.SSLError as exc:
            if "UNEXPECTED_EOF" not in str(exc):
                raise anyio.BrokenResourceError from exc
            data = b""
        if not data:
            raise anyio.EndOfStream  # the server closes without close_notify: still an EOF
        return data

    async def send(self, item: bytes) -> None:
        await self._run(lambda: self._ssl.write(item))

    async def send_eof(self) -> None:
        try:
            self._ssl.unwrap()  # writes close_notify; would then wait for the server's
        except ssl.SSLWantReadError:
            pass
        await self._flush()
        await self.raw.send_eof()

    async def aclose(self) -> None:
        await self.raw.aclose()


class SocketClient(PathClient):
    """A client over TCP, TLS over TCP, or a Unix socket."""

    def __init__(
        self, stream: anyio.abc.ByteStream, raw: RawSocketStream, timeout: float = TIMEOUT
    ) -> None:
        super().__init__(timeout)
        self.stream = stream
        self.raw = raw  # the socket under TLS (the same stream without TLS)

    @classmethod
    async def connect(
        cls,
        address: tuple[str, int] | str,
        tls: ssl.SSLContext | None = None,
        *,
        small_buffers: bool = False,
        timeout: float = TIMEOUT,
    ) -> SocketClient:
        """Connect to ``address`` (``(host, port)`` or a Unix socket path).

        ``small_buffers`` shrinks the client's receive buffer first, so that a
        client that does not read backs up the server soon.
        """
        family = socket.AF_UNIX if isinstance(address, str) else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            if small_buffers:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect(address)  # loopback: the kernel completes it without the server
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        raw = RawSocketStream(sock)
        stream: anyio.abc.ByteStream = raw
        if tls is not None:
            stream = TlsClientStream(raw, tls)
            try:
                with anyio.fail_after(timeout):
                    await stream.handshake()
            except BaseException:
                sock.close()
                raise
        return cls(stream, raw, timeout)

    async def _receive(self) -> bytes:
        return await self.stream.receive()

    async def send(self, data: bytes) -> None:
        with self._deadline(f"sending {len(data)} bytes"):
            await self.stream.send(data)

    async def send_eof(self) -> None:
        await self.stream.send_eof()  # under TLS: close_notify, then the FIN

    async def send_ragged_eof(self) -> None:
        """A bare TCP half-close, under TLS too (no ``close_notify``)."""
        await self.raw.send_eof()

    async def reset(self) -> None:
        sock = self.raw.sock
        if sock.family != socket.AF_UNIX:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()

    async def aclose(self) -> None:
        self.raw.sock.close()

    async def wait_unread(self) -> None:
        with self._deadline("waiting for bytes to read"):
            await anyio.wait_readable(self.raw.sock)


# -- the in-memory transport ----------------------------------------------------------------


class MemoryClient(PathClient):
    """A client over ``tcpkit.testing``'s in-memory streams (its ``TestClient``, in bytes)."""

    def __init__(self, client: TestClient[object, object], timeout: float = TIMEOUT) -> None:
        super().__init__(timeout)
        self.client = client

    async def _receive(self) -> bytes:
        return await self.client.receive_bytes(timeout=None)

    async def send(self, data: bytes) -> None:
        with self._deadline(f"sending {len(data)} bytes"):
            await self.client.send_bytes(data)

    async def send_eof(self) -> None:
        await self.client.send_eof()

    async def reset(self) -> None:
        await self.client.reset()

    async def aclose(self) -> None:
        await self.client.aclose()

    async def wait_unread(self) -> None:
        # Reading into our own buffer leaves the bytes unread for the checks.
        with self._deadline("waiting for bytes to read"):
            if not self.buffer:
                await self._fill()
