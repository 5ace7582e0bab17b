"""FixedBlocks: exact-size blocks."""

from __future__ import annotations

from typing import Any

import pytest

from tcpkit import EncodeError, FixedBlocks, IncompleteFrame


def test_blocks_whole_and_split() -> None:
    codec = FixedBlocks(3)
    assert codec.decoder().feed(b"abcdefg") == [b"abc", b"def"]
    decoder = codec.decoder()
    assert decoder.feed(b"a") == []
    assert decoder.feed(b"bcd") == [b"abc"]
    assert decoder.feed(b"ef") == [b"def"]


def test_messages_are_bytes_not_bytearray() -> None:
    decoder = FixedBlocks(2).decoder()
    decoder.feed(b"a")
    (block,) = decoder.feed(b"b")
    assert type(block) is bytes


def test_take_pending_returns_the_partial_block() -> None:
    decoder = FixedBlocks(4).decoder()
    assert decoder.feed(b"abcdef") == [b"abcd"]
    assert decoder.take_pending() == b"ef"
    assert decoder.take_pending() == b""


def test_eof_mid_block_is_incomplete() -> None:
    decoder = FixedBlocks(4).decoder()
    decoder.feed(b"abcde")
    with pytest.raises(IncompleteFrame):
        decoder.eof()


def test_encode_checks_length_and_type() -> None:
    encoder = FixedBlocks(2).encoder()
    assert encoder.encode(b"ab") == b"ab"
    assert encoder.encode(bytearray(b"ab")) == b"ab"
    assert encoder.encode(memoryview(b"ab")) == b"ab"
    with pytest.raises(EncodeError, match="exactly 2 bytes, got 3"):
        encoder.encode(b"abc")
    with pytest.raises(EncodeError, match="exactly 2 bytes, got 0"):
        encoder.encode(b"")
    with pytest.raises(EncodeError, match="expects bytes"):
        encoder.encode("ab")  # type: ignore[arg-type]


@pytest.mark.parametrize(("size", "error"), [(0, ValueError), (-1, ValueError), (True, TypeError)])
def test_invalid_sizes(size: Any, error: type[Exception]) -> None:
    with pytest.raises(error):
        FixedBlocks(size)


def test_repr() -> None:
    assert repr(FixedBlocks(512)) == "FixedBlocks(512)"
