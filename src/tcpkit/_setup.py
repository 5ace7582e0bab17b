"""A connection's setup: PROXY header, TLS handshake, ``pre_connect``, bounded in time.

The same for every connection a server runs, a custom acceptor's included:
:func:`set_up_stream` reads the PROXY header (the real client's address) and
does the TLS handshake; ``pre_connect`` (default connections only) comes
after, with the connection's addresses already the real ones. ``setup_timeout``
bounds the whole setup (:func:`setup_deadline`). A setup that fails is the
client's fault (one quiet log line) unless ``pre_connect`` itself raised.

With a PROXY allowlist (``proxy_protocol=[networks]``), a connection from
any other peer is refused before a byte of it is read; such refusals are
logged once per burst (:class:`~tcpkit._limits.BurstLog`), not once per connection.
"""

from __future__ import annotations

import logging
import math
import ssl as _ssl
from collections.abc import Generator
from contextlib import contextmanager
from typing import Any

import anyio
import anyio.abc

from ._limits import BurstLog
from .exceptions import ProxyProtocolError, SetupTimeout, UntrustedProxyPeer
from .handlers import Handler, call
from .settings import Settings

__all__ = [
    "PEER_SETUP_ERRORS",
    "log_rejection",
    "pre_connect",
    "rejection_reason",
    "set_up_stream",
    "setup_deadline",
]

logger = logging.getLogger("tcpkit.server")

PEER_SETUP_ERRORS = (
    OSError,
    anyio.BrokenResourceError,
    anyio.EndOfStream,
    _ssl.SSLError,
    ProxyProtocolError,
)
"""A failed setup caused by the client: logged at INFO without a traceback."""


def needs_setup(settings: Settings, ssl: _ssl.SSLContext | None, pre: Handler | None) -> bool:
    """Whether connections have setup steps at all (else no timer per connection)."""
    return bool(settings.proxy_protocol) or ssl is not None or pre is not None


@contextmanager
def setup_deadline(timeout: float | None) -> Generator[None, None, None]:
    """``setup_timeout`` over the setup steps: :class:`~tcpkit.SetupTimeout` past it."""
    with anyio.move_on_after(timeout if timeout is not None else math.inf) as scope:
        yield
    if scope.cancelled_caught:
        raise SetupTimeout(f"setup took over {timeout} s")


async def set_up_stream(
    stream: anyio.abc.ByteStream,
    settings: Settings,
    ssl: _ssl.SSLContext | None,
    refusals: BurstLog | None = None,
) -> tuple[anyio.abc.ByteStream, tuple[str, int] | None]:
    """PROXY header, then TLS: the stream to use and the real client (from PROXY), if any.

    The stream returned carries the PROXY header as
    ``extra(ProxyAttribute.header)``. A peer outside the PROXY allowlist is
    refused before anything is read (and told to ``refusals``).

    Raises:
        UntrustedProxyPeer: the peer may not send a PROXY header.
        ProxyProtocolError: a missing or malformed PROXY header.
        ssl.SSLError, anyio.BrokenResourceError, anyio.EndOfStream, OSError:
            the client failed its handshake or went away.
    """
    source: tuple[str, int] | None = None
    if settings.proxy_protocol:
        from .proxy import check_trusted, read_proxy_header

        trust = settings.proxy_trust
        if trust is not None:
            try:
                check_trusted(stream, trust)
            except UntrustedProxyPeer as exc:
                if refusals is not None:
                    refusals.log(str(exc))
                raise
        stream, source = await read_proxy_header(stream)
    if ssl is not None:
        from anyio.streams.tls import TLSStream

        stream = await TLSStream.wrap(
            stream, server_side=True, ssl_context=ssl, standard_compatible=False
        )
    return stream, source


async def pre_connect(
    h: Handler, conn: Any, stream: anyio.abc.ByteStream
) -> anyio.abc.ByteStream | None:
    """Run ``pre_connect``: the stream to use, or ``None`` if it refused the connection.

    Raises:
        TypeError: it returned something that is not a verdict or a stream.
    """
    result = await call(h, conn, stream)
    if result is None or result is False:
        return None
    if result is True:
        return stream
    if not isinstance(result, anyio.abc.ByteStream):
        raise TypeError(
            f"pre_connect must return None/False, True or an anyio ByteStream, got {result!r}"
        )
    return result


def log_rejection(prefix: str, exc: BaseException | None) -> bool:
    """Log why a connection's setup failed; return whether it was the app's fault.

    ``prefix`` names the connection as every connection log line does
    (``NAME #ID PEER``).
    """
    if exc is None:
        logger.debug("%s: rejected by pre_connect", prefix)
    elif rejection_reason(exc) == "untrusted-proxy":  # (logged once per burst: BurstLog)
        logger.debug("%s: %s", prefix, exc)
    elif isinstance(exc, SetupTimeout):
        logger.info("%s: %s", prefix, exc)
    elif isinstance(exc, PEER_SETUP_ERRORS):  # the peer's fault: one quiet line
        cause = exc.__cause__ or exc.__context__
        detail = str(exc) or (f"{type(cause).__name__}: {cause}" if cause else "")
        logger.info("%s: setup failed: %s %s", prefix, type(exc).__name__, detail)
    else:  # a bug in pre_connect or in our own code: show it
        logger.error("%s: setup failed", prefix, exc_info=exc)
        return True
    return False


def rejection_reason(exc: BaseException) -> str:
    """``setup-timeout``, ``untrusted-proxy`` or ``setup-failed`` (see
    :data:`tcpkit.observer.REJECT_REASONS`)."""
    if isinstance(exc, SetupTimeout):
        return "setup-timeout"
    if isinstance(exc, UntrustedProxyPeer):
        return "untrusted-proxy"
    return "setup-failed"
