"""The PROXY protocol, versions 1 and 2: who the client really is behind a proxy.

HAProxy, nginx ``stream`` and most cloud load balancers can prepend a small
header to every connection they forward, naming the client's address. With
``App(proxy_protocol=True)`` (``--proxy-protocol``) tcpkit reads that header
before anything else (before TLS), and ``conn.remote_ip``/``conn.remote_port``
are the real client's.

:class:`ProxyHeaderParser` is sans-IO, like the codecs: bytes go in, and once
the header is complete it reports a :class:`ProxyHeader` and the bytes that
followed it. It is bounded (a version 1 header is at most 107 bytes, a
version 2 header at most ``16 + MAX_V2_PAYLOAD`` bytes) and fails early: the
first byte that cannot start a valid header raises
:class:`~tcpkit.ProxyProtocolError`. :func:`read_proxy_header` drives it over
an anyio byte stream.

The format is HAProxy's ``proxy-protocol.txt``:

* v1: ``PROXY TCP4|TCP6 <src> <dst> <sport> <dport>\\r\\n`` or
  ``PROXY UNKNOWN ...\\r\\n``;
* v2: a 12-byte signature, version/command, family/transport, a 16-bit
  length, the addresses, then type-length-value (TLV) extensions.

A ``LOCAL`` (v2) or ``UNKNOWN`` (v1) header means "the proxy itself is
talking" (a health check): the header is consumed and the socket's own
addresses are kept.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Callable
from dataclasses import dataclass

import anyio
import anyio.abc

from .exceptions import ProxyProtocolError
from .streams import ReplayStream

__all__ = [
    "MAX_V1_LENGTH",
    "MAX_V2_PAYLOAD",
    "V2_SIGNATURE",
    "ProxyHeader",
    "ProxyHeaderParser",
    "read_proxy_header",
]

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
"""The 12 bytes that start every version 2 header."""

MAX_V1_LENGTH = 107
"""The longest version 1 header, CRLF included (the protocol's own limit)."""

MAX_V2_PAYLOAD = 4096
"""The longest version 2 payload (addresses and TLVs) accepted after the 16-byte prefix."""

_V1_PREFIX = b"PROXY "
_V2_FIXED = 16
_RECEIVE_SIZE = 4096

# v2 family/transport byte -> (address bytes of the source+destination block, kind)
_V2_FAMILIES: dict[int, tuple[int, str]] = {
    0x00: (0, "UNSPEC"),
    0x11: (12, "TCP4"),
    0x12: (12, "UDP4"),
    0x21: (36, "TCP6"),
    0x22: (36, "UDP6"),
    0x31: (216, "UNIX"),
    0x32: (216, "UNIX"),
}


@dataclass(frozen=True)
class ProxyHeader:
    """A parsed PROXY protocol header.

    Attributes:
        version: 1 or 2.
        command: ``"PROXY"`` (a forwarded client) or ``"LOCAL"`` (the proxy
            itself: a v2 ``LOCAL`` command or a v1 ``UNKNOWN`` line).
        protocol: ``"TCP4"``, ``"TCP6"``, ``"UDP4"``, ``"UDP6"``, ``"UNIX"``,
            ``"UNKNOWN"`` (v1) or ``"UNSPEC"`` (v2).
        source: the real client's ``(ip, port)``, or ``None`` when the header
            carries no IP address (``LOCAL``, ``UNKNOWN``, ``UNSPEC``, ``UNIX``).
        destination: the address the client connected to, or ``None`` likewise.
        tlvs: the v2 type-length-value extensions, in order, as ``(type, value)``.
    """

    version: int
    command: str
    protocol: str
    source: tuple[str, int] | None
    destination: tuple[str, int] | None
    tlvs: tuple[tuple[int, bytes], ...] = ()


class ProxyHeaderParser:
    """A sans-IO, bounded parser of one PROXY protocol v1 or v2 header.

    Feed it bytes as they arrive; :meth:`feed` returns ``None`` until the header
    is complete, then the :class:`ProxyHeader`. The bytes received after the
    header are in :attr:`leftover` (they belong to the application, or to the
    TLS handshake that follows). Every chunking of the same bytes gives the same
    result, and the scan for the end of a v1 line resumes where it stopped, so
    byte-at-a-time input costs no rescans.

    Example::

        parser = ProxyHeaderParser()
        header = parser.feed(b"PROXY TCP4 203.0.113.7 10.0.0.1 51000 443\\r\\nhello")
        assert header is not None and header.source == ("203.0.113.7", 51000)
        assert parser.leftover == b"hello"
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._scanned = 0  # v1: bytes already searched for the line end
        self._header: ProxyHeader | None = None
        self._leftover = b""
        self._failed = False

    @property
    def header(self) -> ProxyHeader | None:
        """The parsed header, once complete; ``None`` before."""
        return self._header

    @property
    def leftover(self) -> bytes:
        """The bytes that came after the header (empty until the header is complete)."""
        return self._leftover

    @property
    def done(self) -> bool:
        """True once the header is complete."""
        return self._header is not None

    @property
    def buffered(self) -> int:
        """How many bytes of an incomplete header are buffered (never above the limits)."""
        return len(self._buffer)

    def feed(self, data: bytes) -> ProxyHeader | None:
        """Add received bytes; return the header once it is complete, else ``None``.

        Raises:
            ProxyProtocolError: the bytes are not a PROXY header (missing,
                malformed, or over the length limit). The parser is then
                unusable: every later call raises again.
            RuntimeError: the header was already complete (read
                :attr:`leftover` instead of feeding more).
        """
        if self._failed:
            raise ProxyProtocolError("the PROXY protocol header was already rejected")
        if self._header is not None:
            raise RuntimeError("the PROXY header is already complete; use .leftover")
        self._buffer += data
        try:
            return self._parse()
        except ProxyProtocolError:
            self._failed = True
            self._buffer.clear()
            raise

    def eof(self) -> None:
        """The peer closed the stream.

        Raises:
            ProxyProtocolError: the header is not complete (nothing, or a part of
                one, was received). Does nothing once the header is complete.
        """
        if self._header is not None:
            return
        self._failed = True
        got = len(self._buffer)
        self._buffer.clear()
        if got == 0:
            raise ProxyProtocolError("missing PROXY protocol header: the connection closed first")
        raise ProxyProtocolError(
            f"incomplete PROXY protocol header: the connection closed after {got} bytes"
        )

    # -- parsing -------------------------------------------------------------

    def _parse(self) -> ProxyHeader | None:
        buf = self._buffer
        if not buf:
            return None
        if buf[0] == _V1_PREFIX[0]:
            return self._parse_v1()
        if buf[0] == V2_SIGNATURE[0]:
            return self._parse_v2()
        raise ProxyProtocolError(
            f"missing PROXY protocol header (the connection starts with {bytes(buf[:8])!r})"
        )

    def _complete(self, header: ProxyHeader, end: int) -> ProxyHeader:
        self._leftover = bytes(self._buffer[end:])
        self._buffer.clear()
        self._header = header
        return header

    def _parse_v1(self) -> ProxyHeader | None:
        buf = self._buffer
        if not _V1_PREFIX.startswith(buf[: len(_V1_PREFIX)]):
            raise ProxyProtocolError(
                f"missing PROXY protocol header (the connection starts with {bytes(buf[:8])!r})"
            )
        end = buf.find(b"\n", self._scanned, MAX_V1_LENGTH)
        if end < 0:
            self._scanned = min(len(buf), MAX_V1_LENGTH)
            if len(buf) >= MAX_V1_LENGTH:
                raise ProxyProtocolError(
                    f"PROXY v1 header longer than {MAX_V1_LENGTH} bytes (no CRLF found)"
                )
            return None
        if end == 0 or buf[end - 1] != 0x0D:
            raise ProxyProtocolError("PROXY v1 header must end with CRLF")
        line = bytes(buf[: end - 1])
        return self._complete(_parse_v1_line(line), end + 1)

    def _parse_v2(self) -> ProxyHeader | None:
        buf = self._buffer
        if not V2_SIGNATURE.startswith(buf[: len(V2_SIGNATURE)]):
            raise ProxyProtocolError(
                f"missing PROXY protocol header (the connection starts with {bytes(buf[:8])!r})"
            )
        if len(buf) < _V2_FIXED:
            if len(buf) > 12:
                _check_v2_version(buf[12])
            return None
        ver_cmd, fam, length = struct.unpack_from("!BBH", buf, 12)
        command = _check_v2_version(ver_cmd)
        if length > MAX_V2_PAYLOAD:
            raise ProxyProtocolError(
                f"PROXY v2 header declares {length} bytes of addresses and TLVs "
                f"(the limit is {MAX_V2_PAYLOAD})"
            )
        if len(buf) < _V2_FIXED + length:
            return None
        payload = bytes(buf[_V2_FIXED : _V2_FIXED + length])
        return self._complete(_parse_v2_payload(command, fam, payload), _V2_FIXED + length)


def _check_v2_version(ver_cmd: int) -> str:
    if ver_cmd >> 4 != 2:
        raise ProxyProtocolError(f"unsupported PROXY v2 version {ver_cmd >> 4} (expected 2)")
    command = ver_cmd & 0x0F
    if command == 0:
        return "LOCAL"
    if command == 1:
        return "PROXY"
    raise ProxyProtocolError(f"unknown PROXY v2 command {command}")


def _parse_v1_line(line: bytes) -> ProxyHeader:
    """Parse ``PROXY ...`` without its CRLF."""
    try:
        text = line.decode("ascii")
    except UnicodeDecodeError:
        raise ProxyProtocolError("PROXY v1 header is not ASCII") from None
    parts = text.split(" ")
    if len(parts) >= 2 and parts[1] == "UNKNOWN":
        # "the receiver must ignore anything presented before the CRLF"
        return ProxyHeader(1, "LOCAL", "UNKNOWN", None, None)
    if len(parts) != 6:
        raise ProxyProtocolError(f"malformed PROXY v1 header {text!r}")
    _, protocol, src, dst, sport, dport = parts
    if protocol == "TCP4":
        parse_ip: Callable[[str], str] = _ipv4
    elif protocol == "TCP6":
        parse_ip = _ipv6
    else:
        raise ProxyProtocolError(f"unknown PROXY v1 protocol {protocol!r}")
    return ProxyHeader(
        1,
        "PROXY",
        protocol,
        (parse_ip(src), _port(sport)),
        (parse_ip(dst), _port(dport)),
    )


def _ipv4(text: str) -> str:
    try:
        return str(ipaddress.IPv4Address(text))
    except ValueError:
        raise ProxyProtocolError(f"bad IPv4 address {text!r} in PROXY v1 header") from None


def _ipv6(text: str) -> str:
    if "%" in text:  # a scope id is not part of the grammar
        raise ProxyProtocolError(f"bad IPv6 address {text!r} in PROXY v1 header")
    try:
        return str(ipaddress.IPv6Address(text))
    except ValueError:
        raise ProxyProtocolError(f"bad IPv6 address {text!r} in PROXY v1 header") from None


def _port(text: str) -> int:
    if not (1 <= len(text) <= 5 and text.isascii() and text.isdigit()):
        raise ProxyProtocolError(f"bad port {text!r} in PROXY v1 header")
    port = int(text)
    if port > 65535:
        raise ProxyProtocolError(f"port {port} out of range in PROXY v1 header")
    return port


def _parse_v2_payload(command: str, fam: int, payload: bytes) -> ProxyHeader:
    family = _V2_FAMILIES.get(fam)
    if command == "LOCAL":
        # The proxy speaks for itself: the address block is to be ignored.
        return ProxyHeader(2, "LOCAL", family[1] if family else "UNSPEC", None, None)
    if family is None:
        raise ProxyProtocolError(f"unknown PROXY v2 address family/protocol 0x{fam:02x}")
    size, protocol = family
    if len(payload) < size:
        raise ProxyProtocolError(
            f"PROXY v2 {protocol} header too short: {len(payload)} bytes, need {size}"
        )
    source: tuple[str, int] | None = None
    destination: tuple[str, int] | None = None
    if size == 12:
        src, dst, sport, dport = struct.unpack_from("!4s4sHH", payload)
        source = (str(ipaddress.IPv4Address(src)), sport)
        destination = (str(ipaddress.IPv4Address(dst)), dport)
    elif size == 36:
        src, dst, sport, dport = struct.unpack_from("!16s16sHH", payload)
        source = (str(ipaddress.IPv6Address(src)), sport)
        destination = (str(ipaddress.IPv6Address(dst)), dport)
    return ProxyHeader(2, "PROXY", protocol, source, destination, _parse_tlvs(payload[size:]))


def _parse_tlvs(data: bytes) -> tuple[tuple[int, bytes], ...]:
    tlvs: list[tuple[int, bytes]] = []
    pos = 0
    while pos < len(data):
        if len(data) - pos < 3:
            raise ProxyProtocolError("truncated TLV in PROXY v2 header")
        kind, length = struct.unpack_from("!BH", data, pos)
        pos += 3
        if len(data) - pos < length:
            raise ProxyProtocolError(
                f"TLV 0x{kind:02x} in PROXY v2 header overruns the header by "
                f"{length - (len(data) - pos)} bytes"
            )
        tlvs.append((kind, data[pos : pos + length]))
        pos += length
    return tuple(tlvs)


async def read_proxy_header(
    stream: anyio.abc.ByteStream,
) -> tuple[anyio.abc.ByteStream, tuple[str, int] | None]:
    """Read one PROXY v1/v2 header from ``stream``.

    Reads only until the header is complete; it does not bound the time (the
    server's ``setup_timeout`` does). Bytes that arrived after the header are
    not lost: the stream returned replays them before reading on, so a TLS
    handshake or the application's first message may share a packet with the
    header.

    Returns:
        ``(stream, source)``: the stream to use from now on (``stream`` itself
        when nothing followed the header) and the real client's ``(ip, port)``,
        or ``None`` for a ``LOCAL``/``UNKNOWN`` header (keep the socket's own
        address).

    Raises:
        ProxyProtocolError: the header is missing, malformed or too long, or the
            peer closed the connection before it was complete.
        anyio.BrokenResourceError: the connection failed while reading.
    """
    parser = ProxyHeaderParser()
    header: ProxyHeader | None = None
    while header is None:
        try:
            data = await stream.receive(_RECEIVE_SIZE)
        except anyio.EndOfStream:
            parser.eof()  # raises: the header is not complete
            raise
        header = parser.feed(data)
    leftover = parser.leftover
    if leftover:
        stream = ReplayStream(stream, leftover)
    return stream, header.source
