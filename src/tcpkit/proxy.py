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

Version 2 extensions are kept (:attr:`ProxyHeader.tlvs`) and read by name
(:attr:`ProxyHeader.alpn`, :attr:`~ProxyHeader.authority`,
:attr:`~ProxyHeader.unique_id`, :attr:`~ProxyHeader.ssl`,
:attr:`~ProxyHeader.netns`); a header with a ``PP2_TYPE_CRC32C`` checksum
that does not match is rejected. Whom to believe is :class:`ProxyTrust`
(``App(proxy_protocol=["10.0.0.0/8"])``): a connection from any other peer
is closed before a byte of it is read. After the setup, the header is an
anyio typed attribute of the connection's stream
(``stream.extra(ProxyAttribute.header)``); handlers read it as ``conn.proxy``.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.abc
from anyio import TypedAttributeSet, typed_attribute
from anyio.abc import SocketAttribute

from ._transport import DataCallback, Transport
from .exceptions import ProxyProtocolError, UntrustedProxyPeer
from .streams import ReplayStream

__all__ = [
    "MAX_V1_LENGTH",
    "MAX_V2_PAYLOAD",
    "PP2_CLIENT_CERT_CONN",
    "PP2_CLIENT_CERT_SESS",
    "PP2_CLIENT_SSL",
    "PP2_SUBTYPE_SSL_CIPHER",
    "PP2_SUBTYPE_SSL_CN",
    "PP2_SUBTYPE_SSL_KEY_ALG",
    "PP2_SUBTYPE_SSL_SIG_ALG",
    "PP2_SUBTYPE_SSL_VERSION",
    "PP2_TYPE_ALPN",
    "PP2_TYPE_AUTHORITY",
    "PP2_TYPE_CRC32C",
    "PP2_TYPE_NETNS",
    "PP2_TYPE_NOOP",
    "PP2_TYPE_SSL",
    "PP2_TYPE_UNIQUE_ID",
    "V2_SIGNATURE",
    "ProxiedStream",
    "ProxyAttribute",
    "ProxyHeader",
    "ProxyHeaderParser",
    "ProxySSL",
    "ProxyTrust",
    "crc32c",
    "read_proxy_header",
]

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
"""The 12 bytes that start every version 2 header."""

MAX_V1_LENGTH = 107
"""The longest version 1 header, CRLF included (the protocol's own limit)."""

MAX_V2_PAYLOAD = 4096
"""The longest version 2 payload (addresses and TLVs) accepted after the 16-byte prefix."""

# v2 TLV types and the SSL TLV's sub-types and client flags (HAProxy's proxy-protocol.txt)
PP2_TYPE_ALPN = 0x01
PP2_TYPE_AUTHORITY = 0x02
PP2_TYPE_CRC32C = 0x03
PP2_TYPE_NOOP = 0x04
PP2_TYPE_UNIQUE_ID = 0x05
PP2_TYPE_SSL = 0x20
PP2_SUBTYPE_SSL_VERSION = 0x21
PP2_SUBTYPE_SSL_CN = 0x22
PP2_SUBTYPE_SSL_CIPHER = 0x23
PP2_SUBTYPE_SSL_SIG_ALG = 0x24
PP2_SUBTYPE_SSL_KEY_ALG = 0x25
PP2_TYPE_NETNS = 0x30
PP2_CLIENT_SSL = 0x01
PP2_CLIENT_CERT_CONN = 0x02
PP2_CLIENT_CERT_SESS = 0x04

_V1_PREFIX = b"PROXY "
_V2_FIXED = 16
_RECEIVE_SIZE = 4096
_SSL_FIXED = 5  # the SSL TLV's client flags (1 byte) and verify result (4 bytes)

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


# -- CRC-32C ------------------------------------------------------------------


def _crc32c_table() -> tuple[int, ...]:
    table: list[int] = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC32C_TABLE = _crc32c_table()


def crc32c(data: bytes, crc: int = 0) -> int:
    """The CRC-32C (Castagnoli) of ``data``, as the PROXY v2 checksum TLV carries it.

    Table-driven, in pure Python (headers are small). Pass a previous result
    as ``crc`` to continue a checksum over more bytes.

    Example::

        assert crc32c(b"123456789") == 0xE3069283
    """
    table = _CRC32C_TABLE
    crc ^= 0xFFFFFFFF
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


# -- the parsed header ----------------------------------------------------------


def _first(tlvs: Iterable[tuple[int, bytes]], kind: int) -> bytes | None:
    for found, value in tlvs:
        if found == kind:
            return value
    return None


def _text(value: bytes | None, what: str) -> str | None:
    if value is None:
        return None
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise ProxyProtocolError(f"PROXY v2 {what} TLV is not UTF-8") from None


@dataclass(frozen=True)
class ProxySSL:
    """What the proxy knew of the client's TLS connection: the v2 ``PP2_TYPE_SSL`` TLV.

    Attributes:
        client: the client flags (``PP2_CLIENT_SSL``, ``PP2_CLIENT_CERT_CONN``,
            ``PP2_CLIENT_CERT_SESS``); see the properties.
        verify: the proxy's verification result of the client certificate
            (0: verified).
        version: the TLS version (``"TLSv1.3"``), if the proxy sent it.
        cn: the Common Name of the client certificate's subject, if sent.
        cipher: the cipher name (``"ECDHE-RSA-AES128-GCM-SHA256"``), if sent.
        sig_alg: the client certificate's signature algorithm, if sent.
        key_alg: the client certificate's key algorithm (``"RSA2048"``), if sent.
        tlvs: every sub-TLV as ``(type, value)``, unknown ones included.
    """

    client: int
    verify: int
    version: str | None = None
    cn: str | None = None
    cipher: str | None = None
    sig_alg: str | None = None
    key_alg: str | None = None
    tlvs: tuple[tuple[int, bytes], ...] = ()

    @property
    def client_ssl(self) -> bool:
        """The client connected to the proxy over TLS."""
        return bool(self.client & PP2_CLIENT_SSL)

    @property
    def client_cert_conn(self) -> bool:
        """The client presented a certificate on this connection."""
        return bool(self.client & PP2_CLIENT_CERT_CONN)

    @property
    def client_cert_sess(self) -> bool:
        """The client presented a certificate at least once in this TLS session."""
        return bool(self.client & PP2_CLIENT_CERT_SESS)

    @property
    def verified(self) -> bool:
        """A client certificate was presented and the proxy verified it."""
        return self.verify == 0 and bool(
            self.client & (PP2_CLIENT_CERT_CONN | PP2_CLIENT_CERT_SESS)
        )

    @classmethod
    def parse(cls, value: bytes) -> ProxySSL:
        """Parse the value of a ``PP2_TYPE_SSL`` TLV.

        Raises:
            ProxyProtocolError: the value is shorter than its 5 fixed bytes, a
                sub-TLV overruns it, or a name in it is not UTF-8.
        """
        if len(value) < _SSL_FIXED:
            raise ProxyProtocolError(
                f"PROXY v2 SSL TLV too short: {len(value)} bytes, need {_SSL_FIXED}"
            )
        client, verify = struct.unpack_from("!BI", value)
        subs = _parse_tlvs(value[_SSL_FIXED:])
        return cls(
            client,
            verify,
            _text(_first(subs, PP2_SUBTYPE_SSL_VERSION), "SSL version"),
            _text(_first(subs, PP2_SUBTYPE_SSL_CN), "SSL CN"),
            _text(_first(subs, PP2_SUBTYPE_SSL_CIPHER), "SSL cipher"),
            _text(_first(subs, PP2_SUBTYPE_SSL_SIG_ALG), "SSL signature algorithm"),
            _text(_first(subs, PP2_SUBTYPE_SSL_KEY_ALG), "SSL key algorithm"),
            subs,
        )


@dataclass(frozen=True)
class ProxyHeader:
    """A parsed PROXY protocol header (``conn.proxy``).

    Attributes:
        version: 1 or 2.
        command: ``"PROXY"`` (a forwarded client) or ``"LOCAL"`` (the proxy
            itself: a v2 ``LOCAL`` command or a v1 ``UNKNOWN`` line).
        protocol: ``"TCP4"``, ``"TCP6"``, ``"UDP4"``, ``"UDP6"``, ``"UNIX"``,
            ``"UNKNOWN"`` (v1) or ``"UNSPEC"`` (v2).
        source: the real client's ``(ip, port)``, or ``None`` when the header
            carries no IP address (``LOCAL``, ``UNKNOWN``, ``UNSPEC``, ``UNIX``).
        destination: the address the client connected to, or ``None`` likewise.
        tlvs: the v2 type-length-value extensions, in order, as ``(type, value)``
            (read the known ones by name: :attr:`alpn`, :attr:`authority`,
            :attr:`unique_id`, :attr:`ssl`, :attr:`netns`).
    """

    version: int
    command: str
    protocol: str
    source: tuple[str, int] | None
    destination: tuple[str, int] | None
    tlvs: tuple[tuple[int, bytes], ...] = ()

    def tlv(self, kind: int) -> bytes | None:
        """The value of the first TLV of type ``kind``, or ``None``."""
        return _first(self.tlvs, kind)

    @property
    def alpn(self) -> bytes | None:
        """The application protocol the client negotiated with the proxy (``b"h2"``)."""
        return self.tlv(PP2_TYPE_ALPN)

    @property
    def authority(self) -> str | None:
        """The host name the client asked for (TLS SNI, or the HTTP authority)."""
        return _text(self.tlv(PP2_TYPE_AUTHORITY), "authority")

    @property
    def unique_id(self) -> bytes | None:
        """The proxy's unique id of this connection (up to 128 bytes), to correlate logs."""
        return self.tlv(PP2_TYPE_UNIQUE_ID)

    @property
    def ssl(self) -> ProxySSL | None:
        """What the proxy knew of the client's TLS connection, if it said."""
        value = self.tlv(PP2_TYPE_SSL)
        return None if value is None else ProxySSL.parse(value)

    @property
    def netns(self) -> str | None:
        """The name of the network namespace the proxy accepted the connection in."""
        return _text(self.tlv(PP2_TYPE_NETNS), "netns")

    @property
    def crc32c(self) -> int | None:
        """The header's checksum (already checked), if it carried one."""
        value = self.tlv(PP2_TYPE_CRC32C)
        return None if value is None else int.from_bytes(value, "big")


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
        whole = bytes(buf[: _V2_FIXED + length])
        return self._complete(_parse_v2_header(command, fam, whole), _V2_FIXED + length)


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


def _parse_v2_header(command: str, fam: int, whole: bytes) -> ProxyHeader:
    """A whole v2 header (prefix included): addresses, TLVs, and the checksum checked."""
    family = _V2_FAMILIES.get(fam)
    if command == "LOCAL":
        # The proxy speaks for itself: the address block is to be ignored.
        return ProxyHeader(2, "LOCAL", family[1] if family else "UNSPEC", None, None)
    if family is None:
        raise ProxyProtocolError(f"unknown PROXY v2 address family/protocol 0x{fam:02x}")
    size, protocol = family
    payload = whole[_V2_FIXED:]
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
    tlvs = _parse_tlvs(payload[size:])
    header = ProxyHeader(2, "PROXY", protocol, source, destination, tlvs)
    _check_tlvs(header, whole, _V2_FIXED + size)
    return header


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


def _check_tlvs(header: ProxyHeader, whole: bytes, start: int) -> None:
    """The known TLVs are well formed, and the checksum (if any) matches.

    So that reading them later (``header.ssl``...) cannot fail.
    """
    _ = header.authority, header.netns, header.ssl  # each raises if malformed
    if header.tlv(PP2_TYPE_CRC32C) is not None:
        _check_crc32c(whole, start)


def _check_crc32c(whole: bytes, start: int) -> None:
    """Check the ``PP2_TYPE_CRC32C`` TLV of the v2 header ``whole`` (its TLVs from ``start``).

    The checksum covers the whole header with the checksum's own 4 bytes zeroed.
    """
    zeroed = bytearray(whole)
    sums: list[int] = []
    pos = start
    while pos < len(whole):
        kind, length = struct.unpack_from("!BH", whole, pos)
        pos += 3
        if kind == PP2_TYPE_CRC32C:
            if length != 4:
                raise ProxyProtocolError(f"PROXY v2 CRC32C TLV of {length} bytes (must be 4)")
            sums.append(int.from_bytes(whole[pos : pos + 4], "big"))
            zeroed[pos : pos + 4] = bytes(4)
        pos += length
    computed = crc32c(bytes(zeroed))
    for carried in sums:
        if carried != computed:
            raise ProxyProtocolError(
                f"PROXY v2 header checksum mismatch: it carries CRC32C 0x{carried:08x}, "
                f"the header's is 0x{computed:08x}"
            )


# -- whom to believe ------------------------------------------------------------


_Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_IP_OBJECTS = (
    ipaddress.IPv4Network,
    ipaddress.IPv6Network,
    ipaddress.IPv4Address,
    ipaddress.IPv6Address,
)
UNIX = "unix"
"""The allowlist entry that trusts peers on Unix sockets (whoever the socket file lets in)."""


class ProxyTrust:
    """The peers allowed to send a PROXY header: networks and addresses (an allowlist).

    ``App(proxy_protocol=["10.0.0.0/8", "127.0.0.1", "::1"])`` builds one. An
    entry is a network (``"10.0.0.0/8"``, host bits allowed) or an address
    (``"::1"``); the entry ``"unix"`` trusts peers on Unix sockets (whom the
    socket file's permissions let in). An IPv4 peer on a dual-stack socket
    (``::ffff:10.1.2.3``) matches the IPv4 entries.

    Args:
        entries: the allowlist; at least one entry.

    Raises:
        ValueError: an entry is not a network or an address (it is named), or
            there is none.
        TypeError: ``entries`` is a single string, or holds something else
            than strings and ``ipaddress`` networks or addresses.
    """

    def __init__(self, entries: Iterable[Any]) -> None:
        if isinstance(entries, (str, bytes)):
            raise TypeError(
                "proxy_protocol takes True, False or a list of networks, "
                f"not a single string: write [{entries!r}]"
            )
        networks: list[_Network] = []
        unix = False
        for entry in entries:
            if isinstance(entry, str) and entry.strip().lower() == UNIX:
                unix = True
            else:
                networks.append(_network(entry))
        if not networks and not unix:
            raise ValueError("proxy_protocol: an empty allowlist trusts no one; use False instead")
        self.networks: tuple[_Network, ...] = tuple(networks)
        self.unix = unix

    @property
    def entries(self) -> tuple[str, ...]:
        """The allowlist, normalised (``"10.0.0.0/8"``, ``"127.0.0.1/32"``, ``"unix"``)."""
        return tuple(str(net) for net in self.networks) + ((UNIX,) if self.unix else ())

    def __repr__(self) -> str:
        return f"ProxyTrust({list(self.entries)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ProxyTrust) and other.entries == self.entries

    def __hash__(self) -> int:
        return hash(self.entries)

    def trusts(self, peer: Any) -> bool:
        """Whether ``peer`` (a socket's remote address) may send a PROXY header."""
        if not isinstance(peer, tuple):
            return self.unix and isinstance(peer, str)
        try:
            ip = ipaddress.ip_address(str(peer[0]))  # pyright: ignore[reportUnknownArgumentType]
        except ValueError:
            return False
        if any(ip in net for net in self.networks):
            return True
        mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
        return mapped is not None and any(mapped in net for net in self.networks)


def _network(entry: Any) -> _Network:
    if isinstance(entry, _IP_OBJECTS):
        return ipaddress.ip_network(entry, strict=False)
    if not isinstance(entry, str):
        raise TypeError(
            f"proxy_protocol: {entry!r} is not a network (a string such as '10.0.0.0/8')"
        )
    try:
        return ipaddress.ip_network(entry.strip(), strict=False)
    except ValueError:
        raise ValueError(
            f"proxy_protocol: {entry!r} is not an IP network or address "
            "(such as '10.0.0.0/8', '127.0.0.1', '::1', or 'unix')"
        ) from None


# -- the header on the stream -----------------------------------------------------


class ProxyAttribute(TypedAttributeSet):
    """The anyio typed attribute of a stream that came with a PROXY header.

    After the setup, ``stream.extra(ProxyAttribute.header)`` is the
    :class:`ProxyHeader` (in a custom acceptor, in ``pre_connect``, through
    TLS); ``stream.extra(ProxyAttribute.header, None)`` is ``None`` on a
    stream without one.
    """

    header: ProxyHeader = typed_attribute()
    """The PROXY header the connection began with."""


class ProxiedStream(ReplayStream):
    """A stream after its PROXY header: carries it, and replays the bytes that followed it.

    ``extra(ProxyAttribute.header)`` is the header; every other attribute
    (the socket's addresses...) is the inner stream's.
    """

    def __init__(
        self, stream: anyio.abc.ByteStream, header: ProxyHeader, pending: bytes = b""
    ) -> None:
        super().__init__(stream, pending)
        self.header = header
        self._attributes: Mapping[Any, Callable[[], Any]] | None = None

    @property
    def extra_attributes(self) -> Mapping[Any, Callable[[], Any]]:
        attributes = self._attributes
        if attributes is None:
            header = self.header
            attributes = self._attributes = {
                **super().extra_attributes,
                ProxyAttribute.header: lambda: header,
            }
        return attributes


class _ProxiedTransport(ProxiedStream, Transport):
    """A :class:`ProxiedStream` over one of tcpkit's own transports.

    It is a transport itself, passing every call through, so the connection
    keeps the inline mode of tcpkit's socket streams (and parks). The bytes
    that came with the header are the first ``receive``'s, at once; until
    then the connection cannot park (a ``receive`` would not wait).
    """

    def __init__(self, stream: anyio.abc.ByteStream, header: ProxyHeader, pending: bytes) -> None:
        assert isinstance(stream, Transport)
        super().__init__(stream, header, pending)
        self._transport: Transport = stream

    async def receive(self, max_bytes: int = 65536) -> bytes:
        if self._pending:  # (no checkpoint: input that arrives meanwhile must come after it)
            return self._take_pending(max_bytes)
        return await self._transport.receive(max_bytes)

    def receive_nowait(self, max_bytes: int = 65536) -> bytes:
        if self._pending:
            return self._take_pending(max_bytes)
        return self._transport.receive_nowait(max_bytes)

    def interrupt_receive(self) -> None:
        self._transport.interrupt_receive()

    def clear_interrupt(self) -> None:
        self._transport.clear_interrupt()

    def set_data_callback(self, callback: DataCallback | None, *, as_task: bool = False) -> bool:
        return self._transport.set_data_callback(callback, as_task=as_task)

    @property
    def callback_runs_as_task(self) -> bool:
        return self._transport.callback_runs_as_task

    @property
    def parkable(self) -> bool:
        return self._transport.parkable

    def set_wake_callback(self, callback: Callable[[], None] | None) -> bool:
        if callback is not None and self._pending:
            return False
        return self._transport.set_wake_callback(callback)

    def write(self, data: bytes) -> bool:
        return self._transport.write(data)

    @property
    def buffered(self) -> int:
        return self._transport.buffered

    async def drain(self) -> None:
        await self._transport.drain()

    async def send_eof(self) -> None:
        await self._transport.send_eof()

    async def aclose(self) -> None:
        self._pending = b""
        await self._transport.aclose()

    def close_nowait(self, closed: Callable[[], None]) -> bool:
        if not self._transport.close_nowait(closed):
            return False
        self._pending = b""
        return True

    @property
    def stream(self) -> anyio.abc.ByteStream:
        return self


def proxied(
    stream: anyio.abc.ByteStream, header: ProxyHeader, pending: bytes = b""
) -> ProxiedStream:
    """``stream`` carrying ``header`` (and replaying ``pending`` first)."""
    if isinstance(stream, Transport):
        return _ProxiedTransport(stream, header, pending)
    return ProxiedStream(stream, header, pending)


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
        ``(stream, source)``: the stream to use from now on (a
        :class:`ProxiedStream` over ``stream``: ``extra(ProxyAttribute.header)``
        is the header) and the real client's ``(ip, port)``, or ``None`` for a
        ``LOCAL``/``UNKNOWN`` header (keep the socket's own address).

    Raises:
        ProxyProtocolError: the header is missing, malformed or too long, its
            checksum does not match, or the peer closed the connection before
            it was complete.
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
    return proxied(stream, header, parser.leftover), header.source


def check_trusted(stream: anyio.abc.ByteStream, trust: ProxyTrust) -> None:
    """Refuse ``stream`` if its peer may not send a PROXY header (before reading a byte).

    Raises:
        UntrustedProxyPeer: the peer is not in ``trust``.
    """
    peer = stream.extra(SocketAttribute.remote_address, None)
    if not trust.trusts(peer):
        raise UntrustedProxyPeer(peer)
