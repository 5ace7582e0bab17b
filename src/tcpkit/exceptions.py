"""tcpkit's exceptions, all rooted at :class:`TcpkitError`.

The tree::

    TcpkitError
    ├── FrameError              the peer sent bytes a codec cannot accept
    │   ├── FrameTooLarge       a frame or line is over the codec's limit
    │   ├── MalformedFrame      the bytes break the codec's grammar
    │   └── IncompleteFrame     the stream ended in the middle of a frame
    ├── EncodeError             our own code asked a codec to encode something it cannot
    ├── ConnectionClosed        send/put on a connection that is shutting down or closed
    ├── WriteBufferFull         a connection's pending output passed its hard limit
    ├── ConnectionTimeout       a connection overran one of its time limits
    │   ├── SetupTimeout        ... its setup (PROXY header, TLS, pre_connect)
    │   ├── IdleTimeout         ... no progress either way (idle_timeout)
    │   ├── MessageTimeout      ... a message took too long to arrive (message_timeout)
    │   └── SendTimeout         ... its output made no progress (send_timeout)
    ├── ProxyProtocolError      a missing or malformed PROXY protocol header
    ├── RegistrationError       a handler registered in a way that cannot work
    └── ServerError             the server could not start (e.g. the address is in use)

Errors caused by the peer (``FrameError`` and its subclasses, ``ProxyProtocolError``)
are kept apart from errors in our own use of the API (``EncodeError``,
``RegistrationError``), so an ``on_error`` handler can tell them apart.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ConnectionClosed",
    "ConnectionTimeout",
    "EncodeError",
    "FrameError",
    "FrameTooLarge",
    "IdleTimeout",
    "IncompleteFrame",
    "MalformedFrame",
    "MessageTimeout",
    "ProxyProtocolError",
    "RegistrationError",
    "SendTimeout",
    "ServerError",
    "SetupTimeout",
    "TcpkitError",
    "WriteBufferFull",
]


class TcpkitError(Exception):
    """The root of every exception tcpkit raises on purpose."""


class FrameError(TcpkitError):
    """The peer sent bytes that a codec cannot decode.

    Raised by decoders; the connection reports it to ``on_error`` and, with
    ``shutdown_on_error`` (the default), shuts that connection down.

    Attributes:
        decoded: from ``Decoder.feed``/``eof``, the messages decoded in the
            same call before the bad frame (so none is lost).
    """

    decoded: list[Any] = []  # noqa: RUF012 (replaced per instance by Decoder.feed)


class FrameTooLarge(FrameError):
    """A frame (or a line) is longer than the codec allows."""

    def __init__(self, size: int, limit: int, what: str = "frame") -> None:
        self.size = size
        self.limit = limit
        super().__init__(f"{what} of at least {size} bytes exceeds the limit of {limit} bytes")


class MalformedFrame(FrameError):
    """The bytes do not follow the codec's grammar (bad header, bad JSON, bad UTF-8...)."""


class IncompleteFrame(FrameError):
    """The stream ended in the middle of a frame; the partial frame is not dropped silently."""

    def __init__(self, pending: int) -> None:
        self.pending = pending
        super().__init__(f"stream ended with {pending} undecoded bytes (an incomplete frame)")


class EncodeError(TcpkitError):
    """A codec was asked to encode a message it cannot encode (our side's mistake)."""


class ConnectionClosed(TcpkitError):
    """``send``/``put`` was called on a connection that is shutting down or closed."""


class WriteBufferFull(TcpkitError):
    """A connection's pending output passed the hard limit; the connection was closed.

    This is how one client that never reads is kept from exhausting the server's memory.
    """

    def __init__(self, pending: int, limit: int) -> None:
        self.pending = pending
        self.limit = limit
        super().__init__(
            f"pending output of {pending} bytes passed the hard limit of {limit} bytes "
            "(the client is not reading); connection closed"
        )


class ConnectionTimeout(TcpkitError):
    """A connection overran one of its time limits; only that connection is closed."""


class SetupTimeout(ConnectionTimeout):
    """A connection's setup (PROXY header, TLS handshake, pre_connect) took too long."""


class IdleTimeout(ConnectionTimeout):
    """No input was read and no output taken by the OS for ``idle_timeout`` seconds."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        super().__init__(f"no progress either way for {seconds:g} s (idle_timeout)")


class MessageTimeout(ConnectionTimeout):
    """A message begun ``message_timeout`` seconds ago is still not complete (a slow trickle)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        super().__init__(f"a message took over {seconds:g} s to arrive (message_timeout)")


class SendTimeout(ConnectionTimeout):
    """Pending output made no progress for ``send_timeout`` seconds (the client stopped reading)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        super().__init__(
            f"pending output made no progress for {seconds:g} s: the client is not reading "
            "(send_timeout)"
        )


class ProxyProtocolError(TcpkitError):
    """The PROXY protocol header is missing, malformed or too long, or its checksum is wrong."""


class UntrustedProxyPeer(ProxyProtocolError):
    """A connection came from a peer outside the PROXY allowlist (``proxy_protocol=[...]``).

    It was closed before a byte of it was read.

    Attributes:
        peer: the peer's address as the socket gives it (``(ip, port)``, a
            Unix socket's name, or ``None``).
    """

    def __init__(self, peer: object) -> None:
        self.peer = peer
        if isinstance(peer, tuple):
            host, port = peer[0], peer[1]  # pyright: ignore[reportUnknownVariableType]
            where = f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"  # pyright: ignore[reportUnknownArgumentType]
        else:
            where = f"unix:{peer}" if isinstance(peer, str) else "a peer with no address"
        super().__init__(
            f"refused a connection from {where}: not a trusted PROXY peer "
            "(not in the proxy_protocol allowlist)"
        )


class RegistrationError(TcpkitError):
    """A handler was registered in a way that cannot work (e.g. after the app started serving)."""


class ServerError(TcpkitError):
    """The server could not start or serve (for instance, the address is already in use)."""
