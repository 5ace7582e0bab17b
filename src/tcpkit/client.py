"""The client side: ``tcpkit.connect`` and its typed :class:`Channel` (POE::Component::Client::TCP).

``async with tcpkit.connect("127.0.0.1", 12345) as channel:`` opens a TCP (or
Unix, or TLS) connection and frames it with a codec, the same codecs servers
use: ``await channel.send(message)``, ``await channel.receive()``, ``async
for message in channel``. The message types follow the codec, so with the
default ``Lines()`` a type checker knows the channel carries ``str``.

A :class:`Reconnect` policy retries a failed connect with exponential
back-off, for the first connection and for :meth:`Channel.reconnect`.
"""

from __future__ import annotations

import errno
import functools
import logging
import math
import os
import ssl as _ssl
from collections import deque
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar, overload

import anyio
import anyio.abc
from anyio.streams.tls import TLSStream

from .codecs.base import NEED_DATA, Codec, CodecSpec, resolve_codec
from .codecs.lines import Lines

__all__ = ["Channel", "Reconnect", "connect", "parse_address"]

In = TypeVar("In")
Out = TypeVar("Out")
I = TypeVar("I")  # noqa: E741
O = TypeVar("O")  # noqa: E741

logger = logging.getLogger("tcpkit.client")

_READ_SIZE = 65536


@dataclass(frozen=True)
class Reconnect:
    """When and how often to retry a connection that could not be made.

    The delay before retry ``n`` is ``initial * factor ** (n - 1)``, capped at
    ``maximum``. Only failures to connect are retried (refused, unreachable,
    timed out, a name that does not resolve); a TLS certificate or handshake
    error is raised at once, since trying again cannot fix it.

    Args:
        attempts: connection attempts in all, the first one included; ``None``
            tries for ever.
        initial: seconds to wait after the first failure.
        maximum: the longest wait between two attempts.
        factor: how much the wait grows after each failure.

    Raises:
        ValueError: ``attempts`` is below 1, a delay is negative, ``maximum`` is
            below ``initial``, or ``factor`` is below 1.
    """

    attempts: int | None = 5
    initial: float = 0.1
    maximum: float = 5.0
    factor: float = 2.0

    def __post_init__(self) -> None:
        if self.attempts is not None and self.attempts < 1:
            raise ValueError("attempts must be None or at least 1")
        if self.initial < 0 or self.maximum < self.initial:
            raise ValueError("delays must satisfy 0 <= initial <= maximum")
        if self.factor < 1:
            raise ValueError("factor must be at least 1")

    def delays(self) -> Iterator[float]:
        """The waits between attempts, in order (endless if ``attempts`` is ``None``)."""
        delay = self.initial
        count = math.inf if self.attempts is None else self.attempts - 1
        done = 0
        while done < count:
            yield min(delay, self.maximum)
            delay = min(delay * self.factor, self.maximum)
            done += 1


class Channel(anyio.abc.ObjectReceiveStream[In], anyio.abc.ObjectSendStream[Out]):
    """A byte stream framed by a codec: typed messages in both directions.

    ``receive`` returns ``In`` messages decoded from the stream and ``send``
    takes ``Out`` messages to encode, as a :class:`~tcpkit.Codec` ``[In, Out]``
    types them. It is an anyio object stream, so ``async for message in
    channel`` reads until the peer closes, and ``async with channel`` closes it.

    :func:`connect` makes one; any ``anyio.abc.ByteStream`` can be wrapped too
    (``Channel(stream, Lines())``), e.g. in a custom acceptor.

    Args:
        stream: the byte stream to frame.
        codec: its framing: a codec, a codec class, or ``(class, kwargs)``.
        opener: how :meth:`reconnect` opens a new stream (:func:`connect` sets it).
        reconnect: the back-off :meth:`reconnect` retries with.

    Raises:
        TypeError: ``codec`` is not a codec.
    """

    def __init__(
        self,
        stream: anyio.abc.ByteStream,
        codec: CodecSpec[In, Out],
        *,
        opener: Callable[[], Awaitable[anyio.abc.ByteStream]] | None = None,
        reconnect: Reconnect | None = None,
    ) -> None:
        self._codec: Codec[In, Out] = resolve_codec(codec)
        self._opener = opener
        self._reconnect = reconnect
        self._use(stream)

    def _use(self, stream: anyio.abc.ByteStream) -> None:
        self._stream = stream
        self._decoder = self._codec.decoder()
        self._encoder = self._codec.encoder()
        self._eof = False
        self._eof_messages: deque[In] = deque()

    @property
    def stream(self) -> anyio.abc.ByteStream:
        """The byte stream underneath (a new one after :meth:`reconnect`)."""
        return self._stream

    @property
    def codec(self) -> Codec[In, Out]:
        """The channel's codec."""
        return self._codec

    @property
    def extra_attributes(self) -> Mapping[Any, Callable[[], Any]]:
        attributes: Mapping[Any, Callable[[], Any]] = self._stream.extra_attributes  # pyright: ignore[reportUnknownMemberType, reportUnknownVariableType]
        return attributes

    async def send(self, item: Out) -> None:
        """Encode ``item`` and send it.

        Raises:
            EncodeError: the codec cannot encode ``item``.
            anyio.BrokenResourceError: the connection was lost.
            anyio.ClosedResourceError: the channel was closed (or sent EOF).
        """
        data = self._encoder.encode(item)
        if data:
            await self._stream.send(data)

    async def send_eof(self) -> None:
        """Half-close: the peer reads EOF, and this channel can still receive.

        Raises:
            anyio.ClosedResourceError: the channel was closed.
            NotImplementedError: the stream cannot half-close (anyio's TLS
                streams cannot).
        """
        await self._stream.send_eof()

    async def receive(self) -> In:
        """Return the next message from the peer.

        Raises:
            anyio.EndOfStream: the peer closed the connection and every message
                was received.
            FrameError: the peer's bytes do not decode (bad or oversized input,
                or a stream that ended in the middle of a frame).
            anyio.BrokenResourceError: the connection was lost.
            anyio.ClosedResourceError: the channel was closed.
        """
        decoder = self._decoder
        while True:
            message = decoder.next_message()
            if message is not NEED_DATA:
                return message
            if self._eof_messages:
                return self._eof_messages.popleft()
            if self._eof:
                raise anyio.EndOfStream
            try:
                data = await self._stream.receive(_READ_SIZE)
            except anyio.EndOfStream:
                self._eof = True
                self._eof_messages.extend(decoder.eof())
                continue
            decoder.push(data)

    async def aclose(self) -> None:
        """Close the connection (safe to call more than once)."""
        await self._stream.aclose()

    async def reconnect(self) -> None:
        """Close the connection and open a new one to the same place.

        The new connection starts with fresh codec state; messages not yet
        received from the old one are lost. The :class:`Reconnect` policy given
        to :func:`connect` applies. Do not call it while another task is
        receiving or sending on this channel.

        Raises:
            RuntimeError: the channel was not made by :func:`connect`.
            OSError: every attempt failed (the last error is raised).
        """
        if self._opener is None:
            raise RuntimeError("only a channel made by tcpkit.connect() can reconnect")
        with anyio.CancelScope(shield=True):
            try:
                await self._stream.aclose()
            except (OSError, anyio.BrokenResourceError):
                pass
        self._use(await _open_with_retry(self._opener, self._reconnect))

    def __repr__(self) -> str:
        remote = self._stream.extra(anyio.abc.SocketAttribute.remote_address, None)
        return f"<Channel {self._codec!r} to {remote!r}>"


def parse_address(address: str, default_port: int | None = None) -> tuple[str, int]:
    """Split ``"HOST:PORT"`` (``"[v6]:PORT"`` for IPv6) into ``(host, port)``.

    Raises:
        ValueError: there is no port (and no ``default_port``), or it is not a
            number in 0..65535.
    """
    host, sep, port_text = address.rpartition(":")
    if address.startswith("[") and "]" in address:
        close = address.index("]")
        host = address[1:close]
        rest = address[close + 1 :]
        if rest and not rest.startswith(":"):
            raise ValueError(f"bad address {address!r}: expected [HOST]:PORT")
        port_text, sep = rest[1:], rest[:1]
    elif not sep or ":" in host:
        if default_port is None:
            raise ValueError(f"bad address {address!r}: expected HOST:PORT")
        return address, default_port
    if not port_text:
        if default_port is None:
            raise ValueError(f"bad address {address!r}: no port")
        return host, default_port
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"bad address {address!r}: the port is not a number") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"bad address {address!r}: the port is not in 0..65535")
    return host, port


@overload
def connect(
    host: str | None = None,
    port: int | None = None,
    *,
    ssl: _ssl.SSLContext | bool | None = None,
    timeout: float | None = None,
    uds: str | None = None,
    reconnect: Reconnect | None = None,
    server_hostname: str | None = None,
) -> AbstractAsyncContextManager[Channel[str, str]]: ...


@overload
def connect(
    host: str | None = None,
    port: int | None = None,
    *,
    codec: CodecSpec[I, O],
    ssl: _ssl.SSLContext | bool | None = None,
    timeout: float | None = None,
    uds: str | None = None,
    reconnect: Reconnect | None = None,
    server_hostname: str | None = None,
) -> AbstractAsyncContextManager[Channel[I, O]]: ...


def connect(
    host: str | None = None,
    port: int | None = None,
    *,
    codec: CodecSpec[Any, Any] | None = None,
    ssl: _ssl.SSLContext | bool | None = None,
    timeout: float | None = None,
    uds: str | None = None,
    reconnect: Reconnect | None = None,
    server_hostname: str | None = None,
) -> AbstractAsyncContextManager[Channel[Any, Any]]:
    """Connect to a server; ``async with`` it to get a typed :class:`Channel`.

    ``async with tcpkit.connect("127.0.0.1", 12345) as channel:`` connects,
    and closes the connection when the block ends. ``host`` may carry the
    port (``"127.0.0.1:12345"``, ``"[::1]:12345"``) when ``port`` is not given.

    Args:
        host: the server's host name or address.
        port: its TCP port.
        codec: the framing (default :class:`~tcpkit.Lines`, so the channel
            carries ``str``): a codec, a codec class, or ``(class, kwargs)``.
        ssl: ``True`` for TLS with the system's trusted certificates, an
            ``ssl.SSLContext`` for anything else, ``None``/``False`` for plain TCP.
        timeout: seconds allowed for each connection attempt, TLS handshake
            included; ``None`` for the system's own limits.
        uds: connect to this Unix socket instead of ``host``/``port``.
        reconnect: retry a failed connect with back-off (see :class:`Reconnect`);
            it also applies to :meth:`Channel.reconnect`.
        server_hostname: the name to check the server's certificate against
            (default ``host``).

    Raises:
        ValueError: no address, both an address and ``uds``, or a bad ``"HOST:PORT"``.
        TypeError: ``codec`` is not a codec.
        OSError: the connection failed (``ConnectionRefusedError``, a name that
            does not resolve, ``ssl.SSLError``...); with ``reconnect``, once
            every attempt failed.
        TimeoutError: an attempt took longer than ``timeout``.
    """
    resolved: Codec[Any, Any] = resolve_codec(codec) if codec is not None else Lines()
    opener = _opener(host, port, uds, _ssl_context(ssl), server_hostname, timeout)
    return _connected(opener, resolved, reconnect)


@asynccontextmanager
async def _connected(
    opener: Callable[[], Awaitable[anyio.abc.ByteStream]],
    codec: Codec[In, Out],
    reconnect: Reconnect | None,
) -> AsyncGenerator[Channel[In, Out], None]:
    stream = await _open_with_retry(opener, reconnect)
    channel = Channel(stream, codec, opener=opener, reconnect=reconnect)
    try:
        yield channel
    finally:
        with anyio.CancelScope(shield=True):
            try:
                await channel.aclose()
            except (OSError, anyio.BrokenResourceError):
                pass


def _ssl_context(ssl: _ssl.SSLContext | bool | None) -> _ssl.SSLContext | None:
    if ssl is None or ssl is False:
        return None
    if ssl is True:
        return _ssl.create_default_context()
    return ssl


def _opener(
    host: str | None,
    port: int | None,
    uds: str | None,
    context: _ssl.SSLContext | None,
    server_hostname: str | None,
    timeout: float | None,
) -> Callable[[], Awaitable[anyio.abc.ByteStream]]:
    """A function that makes one connection attempt (validated up front)."""
    dial: Callable[[], Awaitable[anyio.abc.ByteStream]]
    if uds is not None:
        if host is not None or port is not None:
            raise ValueError("give either host/port or uds, not both")
        where = f"unix:{uds}"
        dial = functools.partial(_dial_unix, uds, context, server_hostname)
    else:
        if host is None:
            raise ValueError("no address: give host and port, or uds")
        if port is None:
            host, port = parse_address(host)
        where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        dial = functools.partial(_dial_tcp, host, port, context, server_hostname)
    limit = math.inf if timeout is None else timeout

    async def attempt() -> anyio.abc.ByteStream:
        try:
            with anyio.fail_after(limit):
                return await dial()
        except TimeoutError:
            raise TimeoutError(f"connecting to {where} timed out after {timeout} s") from None
        except (anyio.EndOfStream, anyio.BrokenResourceError) as exc:  # during the TLS handshake
            raise ConnectionResetError(
                errno.ECONNRESET,
                f"cannot connect to {where}: the connection closed during the TLS handshake",
            ) from exc
        except OSError as exc:
            if isinstance(exc, _ssl.SSLError):
                raise
            raise _connect_error(exc, where) from exc

    return attempt


async def _dial_tcp(
    host: str, port: int, context: _ssl.SSLContext | None, server_hostname: str | None
) -> anyio.abc.ByteStream:
    """Connect to ``host``:``port``, with TLS if ``context`` is given."""
    if context is None:
        return await anyio.connect_tcp(host, port)
    return await anyio.connect_tcp(
        host,
        port,
        ssl_context=context,
        tls_hostname=server_hostname or host,
        tls_standard_compatible=False,
    )


async def _dial_unix(
    path: str, context: _ssl.SSLContext | None, server_hostname: str | None
) -> anyio.abc.ByteStream:
    """Connect to the Unix socket ``path``, with TLS if ``context`` is given."""
    unix = await anyio.connect_unix(path)
    if context is None:
        return unix
    try:
        return await TLSStream.wrap(
            unix,
            hostname=server_hostname,
            ssl_context=context,
            standard_compatible=False,
        )
    except BaseException:
        with anyio.CancelScope(shield=True):
            await unix.aclose()
        raise


def _connect_error(exc: OSError, where: str) -> OSError:
    """The same kind of error as the real cause, saying where: "cannot connect to H:P: ..."."""
    cause: OSError = exc
    inner: BaseException | None = exc.__cause__
    if exc.errno is None and inner is not None:
        # anyio: OSError("All connection attempts failed") from the real error(s)
        group: Any = getattr(inner, "exceptions", None)
        if group:
            inner = next((e for e in group if isinstance(e, OSError)), None)
        if isinstance(inner, OSError):
            cause = inner
    code = cause.errno
    if code is None:
        return OSError(f"cannot connect to {where}: {cause}")
    reason = os.strerror(code) if code > 0 else (cause.strerror or str(cause))
    return type(cause)(code, f"cannot connect to {where}: {reason}")


async def _open_with_retry(
    opener: Callable[[], Awaitable[anyio.abc.ByteStream]], policy: Reconnect | None
) -> anyio.abc.ByteStream:
    if policy is None:
        return await opener()
    delays = policy.delays()
    while True:
        try:
            return await opener()
        except _ssl.SSLError:
            raise
        except OSError as exc:
            delay = next(delays, None)
            if delay is None:
                raise
            logger.info("%s; retrying in %.2f s", exc, delay)
            await anyio.sleep(delay)
