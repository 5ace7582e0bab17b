"""Lines: targeted cases the property suite does not aim at (errors, resync, splits)."""

from __future__ import annotations

import pytest

from tcpkit import EncodeError, FrameTooLarge, IncompleteFrame, Lines, MalformedFrame


def bytewise(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


def test_lf_and_crlf_in_crlf_out() -> None:
    codec = Lines()
    assert codec.decoder().feed(b"one\ntwo\r\nthree\r\n") == ["one", "two", "three"]
    assert codec.encoder().encode("x") == b"x\r\n"


@pytest.mark.parametrize("split", [1, 2, 3, 4])
def test_crlf_split_across_chunks(split: int) -> None:
    data = b"ab\r\ncd\r\n"
    decoder = Lines().decoder()
    got = decoder.feed(data[:split]) + decoder.feed(data[split:])
    assert got == ["ab", "cd"]


def test_crlf_one_byte_at_a_time() -> None:
    decoder = Lines().decoder()
    got = [line for chunk in bytewise(b"a\r\n\r\nb\r\r\n") for line in decoder.feed(chunk)]
    assert got == ["a", "", "b\r"]


def test_literal_multibyte_newline_split_across_chunks() -> None:
    decoder = Lines(newline="\r\n").decoder()
    assert decoder.feed(b"a\r") == []
    assert decoder.feed(b"\nb\rc\r\n") == ["a", "b\rc"]


def test_nul_terminated_lines() -> None:
    codec = Lines(newline="\0")
    assert codec.decoder().feed(b"a\nb\0c\0") == ["a\nb", "c"]
    assert codec.encoder().encode("x") == b"x\0"


def test_bytes_lines() -> None:
    codec = Lines(encoding=None)
    assert codec.decoder().feed(b"\xff\xfe\r\n") == [b"\xff\xfe"]
    assert codec.encoder().encode(b"\x00") == b"\x00\r\n"


def test_invalid_utf8_is_malformed_and_decoding_goes_on() -> None:
    decoder = Lines().decoder()
    decoder.push(b"\xff\xfe\nok\n")
    with pytest.raises(MalformedFrame, match="utf-8"):
        decoder.next_message()
    assert decoder.feed(b"") == ["ok"]


def test_line_at_the_limit_is_accepted() -> None:
    decoder = Lines(max_length=4).decoder()
    assert decoder.feed(b"1234\r\n") == ["1234"]
    assert decoder.feed(b"1234\n") == ["1234"]


def test_overlong_terminated_line_raises_and_is_consumed() -> None:
    decoder = Lines(max_length=4).decoder()
    decoder.push(b"12345\nok\n")
    with pytest.raises(FrameTooLarge) as info:
        decoder.next_message()
    assert info.value.limit == 4
    assert decoder.feed(b"") == ["ok"]


@pytest.mark.parametrize("chunk", [1, 3, 1000])
def test_overlong_line_raises_before_its_end_then_resyncs(chunk: int) -> None:
    decoder = Lines(max_length=8).decoder()
    data = b"x" * 5000 + b"\nafter\n"
    raised = 0
    got: list[str] = []
    for i in range(0, len(data), chunk):
        try:
            got += decoder.feed(data[i : i + chunk])
        except FrameTooLarge:
            raised += 1
            assert i < 20, "raised late: the decoder buffered the overlong line"
    assert raised == 1
    assert got == ["after"]


def test_discarding_keeps_no_bytes() -> None:
    decoder = Lines(max_length=8).decoder()
    with pytest.raises(FrameTooLarge):
        decoder.feed(b"y" * 100)
    for _ in range(100):
        assert decoder.feed(b"y" * 1000) == []
    assert decoder.take_pending() == b""


def test_discarding_sees_a_multibyte_newline_split_across_chunks() -> None:
    decoder = Lines(newline="\r\n", max_length=4).decoder()
    with pytest.raises(FrameTooLarge):
        decoder.feed(b"0123456789")
    assert decoder.feed(b"abc\r") == []
    assert decoder.feed(b"\nnext\r\n") == ["next"]


def test_take_pending_after_a_partial_line() -> None:
    decoder = Lines().decoder()
    assert decoder.feed(b"one\ntw") == ["one"]
    assert decoder.take_pending() == b"tw"
    assert decoder.take_pending() == b""
    assert decoder.feed(b"o\n") == ["o"]


def test_eof_mid_line_is_incomplete() -> None:
    decoder = Lines().decoder()
    assert decoder.feed(b"a\nb") == ["a"]
    with pytest.raises(IncompleteFrame) as info:
        decoder.eof()
    assert info.value.pending == 1


def test_eof_after_whole_lines_is_clean() -> None:
    decoder = Lines().decoder()
    assert decoder.feed(b"a\r\n") == ["a"]
    assert decoder.eof() == []


def test_encode_errors() -> None:
    with pytest.raises(EncodeError, match="expects str"):
        Lines().encoder().encode(b"bytes")  # type: ignore[arg-type]
    with pytest.raises(EncodeError, match="expects bytes"):
        Lines(encoding=None).encoder().encode("text")  # type: ignore[arg-type]
    with pytest.raises(EncodeError, match="ascii"):
        Lines(encoding="ascii").encoder().encode("caf\u00e9")
    with pytest.raises(EncodeError):
        Lines().encoder().encode("\ud800")  # a lone surrogate is not UTF-8


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError, match="newline"):
        Lines(newline="")
    with pytest.raises(ValueError, match="max_length"):
        Lines(max_length=0)


def test_non_ascii_compatible_encodings_are_refused() -> None:
    with pytest.raises(ValueError, match="ASCII-compatible"):
        Lines(encoding="utf-16")
    assert Lines(encoding="latin-1").decoder().feed(b"caf\xe9\n") == ["café"]


def test_feed_keeps_the_messages_before_a_bad_frame() -> None:
    decoder = Lines(max_length=4).decoder()
    with pytest.raises(FrameTooLarge) as info:
        decoder.feed(b"one\ntwo\ntoo long\nfour\n")
    assert info.value.decoded == ["one", "two"]
    assert decoder.feed(b"") == ["four"]
