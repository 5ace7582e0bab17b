"""LengthPrefixed: struct headers, limits checked at the header, skipping oversized frames."""

from __future__ import annotations

import struct

import pytest

from tcpkit import EncodeError, FrameTooLarge, IncompleteFrame, LengthPrefixed, MalformedFrame


@pytest.mark.parametrize("header", ["!I", "!H", "<Q", ">q", "B", "b", "=h", "@L", "N", "@n"])
def test_headers_round_trip(header: str) -> None:
    codec = LengthPrefixed(header, max_length=100)
    data = codec.encoder().encode(b"hello")
    assert data == struct.pack(header, 5) + b"hello"
    assert codec.decoder().feed(data + data) == [b"hello", b"hello"]


@pytest.mark.parametrize(
    "header", ["", "!", "I I", "!II", "!f", "!?", "!n", "<N", "x", "4s", "!2I"]
)
def test_invalid_headers(header: str) -> None:
    with pytest.raises(ValueError, match=r"header|struct"):
        LengthPrefixed(header)


def test_negative_max_length() -> None:
    with pytest.raises(ValueError, match="max_length"):
        LengthPrefixed(max_length=-1)


def test_oversized_header_raises_before_any_payload() -> None:
    decoder = LengthPrefixed("!I", max_length=10).decoder()
    assert decoder.feed(b"\x00\x00") == []
    with pytest.raises(FrameTooLarge) as info:
        decoder.feed(b"\x00\x0b")
    assert (info.value.size, info.value.limit) == (11, 10)


def test_oversized_frame_is_skipped_unbuffered_then_decoding_resumes() -> None:
    decoder = LengthPrefixed("!I", max_length=10).decoder()
    with pytest.raises(FrameTooLarge):
        decoder.feed(struct.pack("!I", 100_000))
    for _ in range(99):
        assert decoder.feed(b"z" * 1000) == []
        assert len(decoder._buf) - decoder._start == 0  # type: ignore[attr-defined]
    good = struct.pack("!I", 2) + b"ok"
    assert decoder.feed(b"z" * 1000 + good) == [b"ok"]


def test_negative_length_is_malformed_and_the_header_consumed() -> None:
    decoder = LengthPrefixed("!h").decoder()
    decoder.push(struct.pack("!h", -1) + struct.pack("!h", 1) + b"x")
    with pytest.raises(MalformedFrame, match="negative"):
        decoder.next_message()
    assert decoder.feed(b"") == [b"x"]


def test_empty_frames() -> None:
    codec = LengthPrefixed("B")
    assert codec.encoder().encode(b"") == b"\x00"
    assert codec.decoder().feed(b"\x00\x00") == [b"", b""]


def test_take_pending_keeps_the_header_of_a_partial_frame() -> None:
    decoder = LengthPrefixed("!H").decoder()
    assert decoder.feed(b"\x00\x01a\x00\x05he") == [b"a"]
    assert decoder.take_pending() == b"\x00\x05he"
    assert decoder.take_pending() == b""
    fresh = LengthPrefixed("!H").decoder()
    assert fresh.feed(b"\x00\x05hello") == [b"hello"]


@pytest.mark.parametrize("partial", [b"\x00", b"\x00\x00\x00\x03ab"])
def test_eof_mid_frame_is_incomplete(partial: bytes) -> None:
    decoder = LengthPrefixed().decoder()
    decoder.feed(partial)
    with pytest.raises(IncompleteFrame) as info:
        decoder.eof()
    assert info.value.pending == len(partial)


def test_encode_errors() -> None:
    with pytest.raises(EncodeError, match="'B' can express"):
        LengthPrefixed("B").encoder().encode(b"x" * 256)
    assert len(LengthPrefixed("B").encoder().encode(b"x" * 255)) == 256
    with pytest.raises(EncodeError, match="max_length"):
        LengthPrefixed(max_length=3).encoder().encode(b"four")
    with pytest.raises(EncodeError, match="expects bytes"):
        LengthPrefixed().encoder().encode("text")  # type: ignore[arg-type]
    assert LengthPrefixed().encoder().encode(memoryview(b"ab")) == b"\x00\x00\x00\x02ab"


def test_repr() -> None:
    assert repr(LengthPrefixed("<H", 9)) == "LengthPrefixed(header='<H', max_length=9)"
