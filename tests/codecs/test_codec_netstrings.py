"""Netstrings: grammar errors, limits seen in the digits, resync."""

from __future__ import annotations

import pytest

from tcpkit import EncodeError, FrameTooLarge, IncompleteFrame, MalformedFrame, Netstrings
from tcpkit.codecs import NEED_DATA


def test_decode_and_encode() -> None:
    codec = Netstrings()
    assert codec.encoder().encode(b"hello") == b"5:hello,"
    assert codec.encoder().encode(b"") == b"0:,"
    assert codec.decoder().feed(b"5:hello,0:,12:hello world!,") == [b"hello", b"", b"hello world!"]


def test_payload_may_hold_any_bytes() -> None:
    assert Netstrings().decoder().feed(b"4:1:,,,") == [b"1:,,"]


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"05:hello,", "leading zero"),
        (b"00:,", "leading zero"),
        (b":x,", "no length"),
        (b"5x", "unexpected byte"),
        (b"-1:", "unexpected byte"),
        (b" 5:hello,", "unexpected byte"),
        (b"5:hello;", "not ','"),
    ],
)
def test_malformed(data: bytes, match: str) -> None:
    with pytest.raises(MalformedFrame, match=match):
        Netstrings().decoder().feed(data)


def test_missing_comma_drops_the_payload_and_resyncs_on_the_stray_byte() -> None:
    decoder = Netstrings().decoder()
    decoder.push(b"5:hello5:world,")
    with pytest.raises(MalformedFrame):
        decoder.next_message()
    assert decoder.feed(b"") == [b"world"]


def test_bad_prefix_byte_is_consumed() -> None:
    decoder = Netstrings().decoder()
    decoder.push(b"x3:abc,")
    with pytest.raises(MalformedFrame):
        decoder.next_message()
    assert decoder.feed(b"") == [b"abc"]


def test_limit_is_seen_in_the_digits() -> None:
    decoder = Netstrings(max_length=100).decoder()
    assert decoder.feed(b"10") == []
    assert decoder.feed(b"0") == []  # 100 may still be followed by ':'
    with pytest.raises(FrameTooLarge) as info:
        decoder.feed(b"0")  # 1000 cannot
    assert (info.value.size, info.value.limit) == (1000, 100)


def test_digits_buffered_are_bounded() -> None:
    decoder = Netstrings(max_length=10**6).decoder()
    with pytest.raises(FrameTooLarge):
        decoder.feed(b"9" * 10_000)
    # The rest of the endless length is dropped as it comes, never buffered.
    for _ in range(100):
        assert decoder.feed(b"9" * 1000) == []
        assert decoder.take_pending() == b""
        decoder = Netstrings(max_length=10**6).decoder()
        with pytest.raises(FrameTooLarge):
            decoder.feed(b"9" * 8)


@pytest.mark.parametrize("chunk", [1, 7, 100_000])
def test_oversized_frame_is_skipped_then_decoding_resumes(chunk: int) -> None:
    decoder = Netstrings(max_length=10).decoder()
    data = b"5:hello," + b"20000:" + b"x" * 20000 + b"," + b"3:abc,"
    got: list[bytes] = []
    errors = 0
    for i in range(0, len(data), chunk):
        decoder.push(data[i : i + chunk])
        while True:
            try:
                message = decoder.next_message()
            except FrameTooLarge:
                errors += 1
                continue
            if message is NEED_DATA:
                break
            got.append(message)
    assert errors == 1
    assert got == [b"hello", b"abc"]
    assert decoder.eof() == []


def test_zero_max_length_allows_only_empty_payloads() -> None:
    decoder = Netstrings(max_length=0).decoder()
    assert decoder.feed(b"0:,") == [b""]
    with pytest.raises(FrameTooLarge):
        decoder.feed(b"1")


def test_take_pending_after_a_partial_frame() -> None:
    decoder = Netstrings().decoder()
    assert decoder.feed(b"1:a,12:hel") == [b"a"]
    assert decoder.take_pending() == b"12:hel"
    assert decoder.take_pending() == b""
    assert decoder.feed(b"2:ok,") == [b"ok"]


@pytest.mark.parametrize("partial", [b"1", b"12:", b"3:ab", b"3:abc"])
def test_eof_mid_frame_is_incomplete(partial: bytes) -> None:
    decoder = Netstrings().decoder()
    decoder.feed(partial)
    with pytest.raises(IncompleteFrame):
        decoder.eof()


def test_encode_errors() -> None:
    with pytest.raises(EncodeError, match="max_length"):
        Netstrings(max_length=2).encoder().encode(b"abc")
    with pytest.raises(EncodeError, match="expects bytes"):
        Netstrings().encoder().encode("abc")  # type: ignore[arg-type]


def test_invalid_arguments_and_repr() -> None:
    with pytest.raises(ValueError, match="max_length"):
        Netstrings(max_length=-1)
    assert repr(Netstrings(max_length=5)) == "Netstrings(max_length=5)"
