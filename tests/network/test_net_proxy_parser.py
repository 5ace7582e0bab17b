"""The sans-IO PROXY protocol parser: round trips, any chunking, garbage, limits."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from netutil import proxy_v1, proxy_v2

from tcpkit import ProxyProtocolError
from tcpkit.proxy import (
    MAX_V1_LENGTH,
    MAX_V2_PAYLOAD,
    V2_SIGNATURE,
    ProxyHeader,
    ProxyHeaderParser,
)

# -- driving the parser ------------------------------------------------------


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    """``data`` cut at the given offsets (any order, duplicates allowed)."""
    points = sorted({c % (len(data) + 1) for c in cuts})
    chunks, start = [], 0
    for point in [*points, len(data)]:
        chunks.append(data[start:point])
        start = point
    return chunks


def outcome(chunks: list[bytes]) -> tuple[Any, ...]:
    """What feeding ``chunks`` then EOF gives: ``("ok", header, leftover)`` or ``("error",)``."""
    parser = ProxyHeaderParser()
    header: ProxyHeader | None = None
    rest = b""
    try:
        for chunk in chunks:
            if header is not None:
                rest += chunk
                continue
            header = parser.feed(chunk)
            assert parser.buffered <= 16 + MAX_V2_PAYLOAD
        parser.eof()
    except ProxyProtocolError:
        return ("error",)
    assert header is not None
    assert parser.done and parser.header == header
    return ("ok", header, parser.leftover + rest)


def parse_whole(data: bytes) -> ProxyHeader:
    """Feed ``data`` then EOF; the header (or ProxyProtocolError)."""
    parser = ProxyHeaderParser()
    header = parser.feed(data)
    parser.eof()
    assert header is not None
    return header


cut_lists = st.lists(st.integers(min_value=0, max_value=10_000), max_size=40)
ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).map(str)
ports = st.integers(min_value=0, max_value=65535)
tails = st.binary(max_size=64)
# TLV types whose values are not checked (authority, CRC32C, SSL and netns are: see
# test_net_proxy_tlvs.py), with any value
VALIDATED_TLVS = (0x02, 0x03, 0x20, 0x30)
tlv_lists = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=255).filter(lambda t: t not in VALIDATED_TLVS),
        st.binary(max_size=40),
    ),
    max_size=5,
)


# -- round trips -------------------------------------------------------------


@given(
    st.one_of(st.tuples(ipv4, ipv4), st.tuples(ipv6, ipv6)),
    ports,
    ports,
    tails,
    cut_lists,
)
def test_v1_round_trip_under_any_chunking(
    addresses: tuple[str, str], sport: int, dport: int, tail: bytes, cuts: list[int]
) -> None:
    src, dst = addresses
    data = proxy_v1(src, dst, sport, dport) + tail
    result = outcome(split(data, cuts))
    assert result[0] == "ok"
    header, leftover = result[1], result[2]
    assert header.version == 1
    assert header.command == "PROXY"
    assert header.source == (str(ipaddress.ip_address(src)), sport)
    assert header.destination == (str(ipaddress.ip_address(dst)), dport)
    assert leftover == tail


@given(
    st.one_of(st.tuples(ipv4, ipv4), st.tuples(ipv6, ipv6)),
    ports,
    ports,
    tlv_lists,
    st.booleans(),
    tails,
    cut_lists,
)
def test_v2_round_trip_under_any_chunking(
    addresses: tuple[str, str],
    sport: int,
    dport: int,
    tlvs: list[tuple[int, bytes]],
    udp: bool,
    tail: bytes,
    cuts: list[int],
) -> None:
    src, dst = addresses
    data = proxy_v2(src, dst, sport, dport, tlvs=tlvs, udp=udp) + tail
    result = outcome(split(data, cuts))
    assert result[0] == "ok"
    header, leftover = result[1], result[2]
    assert header.version == 2
    assert header.command == "PROXY"
    assert header.source == (src, sport)
    assert header.destination == (dst, dport)
    assert header.tlvs == tuple(tlvs)
    assert header.protocol == ("UDP" if udp else "TCP") + ("6" if ":" in src else "4")
    assert leftover == tail


@given(st.one_of(st.none(), st.tuples(ipv4, ipv4)), tlv_lists, tails, cut_lists)
def test_v2_local_keeps_no_address(
    addresses: tuple[str, str] | None, tlvs: list[tuple[int, bytes]], tail: bytes, cuts: list[int]
) -> None:
    src, dst = addresses if addresses else (None, None)
    data = proxy_v2(src, dst, 1, 2, local=True, tlvs=tlvs) + tail
    result = outcome(split(data, cuts))
    assert result[0] == "ok"
    assert result[1].command == "LOCAL"
    assert result[1].source is None
    assert result[2] == tail


# -- any chunking, any bytes -------------------------------------------------

valid_headers = st.one_of(
    st.builds(proxy_v1, ipv4, ipv4, ports, ports),
    st.builds(proxy_v1, ipv6, ipv6, ports, ports),
    st.builds(proxy_v2, ipv4, ipv4, ports, ports, tlvs=tlv_lists),
    st.builds(proxy_v2, ipv6, ipv6, ports, ports, tlvs=tlv_lists),
    st.just(b"PROXY UNKNOWN\r\n"),
)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A valid header (plus a tail) with a few bytes changed, dropped or inserted."""
    data = bytearray(draw(valid_headers) + draw(tails))
    for _ in range(draw(st.integers(min_value=0, max_value=4))):
        if not data:
            break
        pos = draw(st.integers(min_value=0, max_value=len(data) - 1))
        action = draw(st.sampled_from(["set", "drop", "insert"]))
        if action == "set":
            data[pos] = draw(st.integers(min_value=0, max_value=255))
        elif action == "drop":
            del data[pos]
        else:
            data.insert(pos, draw(st.integers(min_value=0, max_value=255)))
    return bytes(data)


any_bytes = st.one_of(
    st.binary(max_size=300),
    mutated(),
    st.binary(max_size=200).map(lambda b: b"PROXY " + b),
    st.binary(max_size=200).map(lambda b: V2_SIGNATURE + b),
)


@given(any_bytes, cut_lists)
def test_same_result_under_any_chunking(data: bytes, cuts: list[int]) -> None:
    assert outcome(split(data, cuts)) == outcome([data])


@given(any_bytes)
def test_byte_at_a_time_equals_whole(data: bytes) -> None:
    assert outcome([data[i : i + 1] for i in range(len(data))]) == outcome([data])


@given(any_bytes)
def test_garbage_only_raises_proxy_protocol_error(data: bytes) -> None:
    parser = ProxyHeaderParser()
    try:
        header = parser.feed(data)
        if header is None:
            parser.eof()
    except ProxyProtocolError:
        with pytest.raises(ProxyProtocolError):
            parser.feed(b"more")  # a failed parser stays failed
        return
    assert parser.header is not None


# -- examples and limits -----------------------------------------------------


@pytest.mark.parametrize(
    ("data", "source"),
    [
        (b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n", ("192.168.0.1", 56324)),
        (b"PROXY TCP6 2001:db8::1 2001:db8::2 1 65535\r\n", ("2001:db8::1", 1)),
        (b"PROXY TCP6 ::ffff:10.0.0.1 ::1 80 80\r\n", ("::ffff:a00:1", 80)),
        (b"PROXY UNKNOWN\r\n", None),
        (b"PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n", None),
    ],
)
def test_v1_examples(data: bytes, source: tuple[str, int] | None) -> None:
    parser = ProxyHeaderParser()
    header = parser.feed(data + b"GET /")
    assert header is not None
    assert header.source == source
    assert parser.leftover == b"GET /"


@pytest.mark.parametrize(
    "data",
    [
        b"GET / HTTP/1.0\r\n",
        b"proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",  # LF without CR
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",
        b"PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n",
        b"PROXY TCP4 1.2.3.256 5.6.7.8 1 2\r\n",
        b"PROXY TCP4 ::1 ::1 1 2\r\n",
        b"PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n",
        b"PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n",
        b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 \xff\r\n",
        b"PROXY " + b"A" * (MAX_V1_LENGTH - 6) + b"\r\n",
        V2_SIGNATURE + bytes([0x11, 0x11, 0, 12]) + bytes(12),  # version 1
        V2_SIGNATURE + bytes([0x22, 0x11, 0, 12]) + bytes(12),  # command 2
        V2_SIGNATURE + bytes([0x21, 0x11, 0, 11]) + bytes(11),  # TCP4 too short
        V2_SIGNATURE + bytes([0x21, 0x21, 0, 35]) + bytes(35),  # TCP6 too short
        V2_SIGNATURE + bytes([0x21, 0x41, 0, 12]) + bytes(12),  # unknown family
        V2_SIGNATURE + bytes([0x21, 0x11, 0, 14]) + bytes(14),  # truncated TLV
        V2_SIGNATURE + bytes([0x21, 0x11, 0, 16]) + bytes(12) + b"\x01\x00\x05\x00",  # TLV overrun
        V2_SIGNATURE[:11] + b"X",
        b"\r\n\r\nhello",
    ],
)
def test_malformed_headers_are_rejected(data: bytes) -> None:
    with pytest.raises(ProxyProtocolError):
        parse_whole(data)


def test_v1_without_crlf_is_rejected_at_the_limit() -> None:
    parser = ProxyHeaderParser()
    line = b"PROXY TCP4 " + b"1" * 200
    for i in range(MAX_V1_LENGTH - 1):
        assert parser.feed(line[i : i + 1]) is None
    with pytest.raises(ProxyProtocolError, match="longer than 107"):
        parser.feed(line[MAX_V1_LENGTH - 1 : MAX_V1_LENGTH])


def test_longest_v1_header_is_accepted() -> None:
    a = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe"
    data = f"PROXY TCP6 {a} {a} 65535 65535\r\n".encode()
    assert len(data) == 104
    unknown = b"PROXY UNKNOWN " + b"x" * (MAX_V1_LENGTH - 16) + b"\r\n"
    assert len(unknown) == MAX_V1_LENGTH
    for header in (data, unknown):
        parser = ProxyHeaderParser()
        assert parser.feed(header) is not None


def test_v2_over_the_length_cap_fails_after_16_bytes() -> None:
    parser = ProxyHeaderParser()
    prefix = V2_SIGNATURE + bytes([0x21, 0x11]) + (MAX_V2_PAYLOAD + 1).to_bytes(2, "big")
    with pytest.raises(ProxyProtocolError, match="limit"):
        parser.feed(prefix)


def test_v2_at_the_length_cap_is_accepted() -> None:
    room = MAX_V2_PAYLOAD - 12 - 3
    data = proxy_v2("10.0.0.1", "10.0.0.2", 5, 6, tlvs=[(0x04, bytes(room))])
    parser = ProxyHeaderParser()
    header = parser.feed(data)
    assert header is not None and header.source == ("10.0.0.1", 5)


def test_v2_unix_and_unspec_give_no_source() -> None:
    unix = V2_SIGNATURE + bytes([0x21, 0x31]) + (216).to_bytes(2, "big") + bytes(216)
    for data in (unix, proxy_v2()):
        parser = ProxyHeaderParser()
        header = parser.feed(data)
        assert header is not None and header.command == "PROXY" and header.source is None


def test_eof_messages() -> None:
    parser = ProxyHeaderParser()
    with pytest.raises(ProxyProtocolError, match="missing"):
        parser.eof()
    parser = ProxyHeaderParser()
    assert parser.feed(b"PROXY TCP4 1.2") is None
    with pytest.raises(ProxyProtocolError, match="after 14 bytes"):
        parser.eof()


def test_feeding_a_complete_parser_is_a_usage_error() -> None:
    parser = ProxyHeaderParser()
    assert parser.feed(b"PROXY UNKNOWN\r\n") is not None
    parser.eof()  # fine once complete
    with pytest.raises(RuntimeError):
        parser.feed(b"x")
