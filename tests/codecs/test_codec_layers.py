"""Layers: Json, Map, Filter, and stacking them with ``|``."""

from __future__ import annotations

import math
from typing import Any

import pytest

from tcpkit import (
    EncodeError,
    Filter,
    FrameTooLarge,
    Json,
    LengthPrefixed,
    Lines,
    MalformedFrame,
    Map,
    Netstrings,
)
from tcpkit.codecs import NEED_DATA, Stacked

# -- Json ---------------------------------------------------------------------


def test_json_lines() -> None:
    codec = Lines() | Json()
    assert isinstance(codec, Stacked)
    assert codec.decoder().feed(b'{"a": [1, 2.5, null]}\r\n"x"\ntrue\n') == [
        {"a": [1, 2.5, None]},
        "x",
        True,
    ]
    assert codec.encoder().encode({"a": [1, "\u00e9"]}) == b'{"a":[1,"\\u00e9"]}\r\n'


def test_json_bytes_wire_for_binary_framings() -> None:
    codec = LengthPrefixed() | Json(bytes)
    frame = codec.encoder().encode([1, {"k": "v"}])
    assert frame == b'\x00\x00\x00\x0d[1,{"k":"v"}]'
    assert codec.decoder().feed(frame) == [[1, {"k": "v"}]]
    assert Json(bytes, ensure_ascii=False).encode("\u00e9") == '"\u00e9"'.encode()


def test_json_options() -> None:
    assert Json(sort_keys=True).encode({"b": 1, "a": 2}) == '{"a":2,"b":1}'
    assert Json(ensure_ascii=False).encode("\u00e9") == '"\u00e9"'
    assert repr(Json()) == "Json()"
    assert repr(Json(bytes, sort_keys=True)) == "Json(bytes, sort_keys=True)"
    with pytest.raises(TypeError, match="wire_type"):
        Json(int)  # type: ignore[call-overload]


@pytest.mark.parametrize(
    "frame",
    [
        "{",
        "",
        "  ",
        "[1] [2]",
        "{'a': 1}",
        "NaN",
        "[Infinity]",
        "-Infinity",
        "1" * 5000,  # over CPython's integer digit limit
        "[" * 100_000 + "]" * 100_000,  # nested too deep for the parser
    ],
)
def test_json_malformed(frame: str) -> None:
    with pytest.raises(MalformedFrame):
        Json().decode(frame)


def test_json_invalid_utf8_bytes() -> None:
    with pytest.raises(MalformedFrame, match="UTF-8"):
        Json().decode(b'"\xff"')


def test_json_bad_line_is_reported_and_decoding_goes_on() -> None:
    decoder = (Lines() | Json()).decoder()
    decoder.push(b"{oops\n[1]\n")
    with pytest.raises(MalformedFrame, match="invalid JSON"):
        decoder.next_message()
    assert decoder.feed(b"") == [[1]]


def test_json_limit_comes_from_the_framing() -> None:
    decoder = (Netstrings(max_length=10) | Json(bytes)).decoder()
    with pytest.raises(FrameTooLarge):
        decoder.feed(b"11:")


def _circular() -> Any:
    value: list[Any] = []
    value.append(value)
    return value


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(object(), id="object"),
        pytest.param({1, 2}, id="set"),
        pytest.param(b"bytes", id="bytes"),
        pytest.param(math.nan, id="nan"),
        pytest.param(math.inf, id="inf"),
        pytest.param(-math.inf, id="-inf"),
        pytest.param(_circular(), id="circular"),
        pytest.param(10**5000, id="huge-int"),
    ],
)
def test_json_encode_errors(value: Any) -> None:
    with pytest.raises(EncodeError, match="cannot encode as JSON"):
        Json().encode(value)


def test_json_encode_error_through_a_stack() -> None:
    with pytest.raises(EncodeError):
        (Lines() | Json()).encoder().encode(object())


# -- Map ----------------------------------------------------------------------


def test_map_transforms_both_ways() -> None:
    codec = Lines() | Map(decode=int, encode=str)
    assert codec.decoder().feed(b"1\n-2\n") == [1, -2]
    assert codec.encoder().encode(42) == b"42\r\n"
    assert repr(codec).endswith("| Map(decode=int, encode=str)")


def test_map_decode_failure_is_malformed_with_the_cause() -> None:
    decoder = (Lines() | Map(decode=int, encode=str)).decoder()
    decoder.push(b"x\n7\n")
    with pytest.raises(MalformedFrame, match="Map decode function failed") as info:
        decoder.next_message()
    assert isinstance(info.value.__cause__, ValueError)
    assert decoder.feed(b"") == [7]


def test_map_frame_errors_pass_through() -> None:
    def strict(line: str) -> str:
        raise FrameTooLarge(len(line), 0)

    with pytest.raises(FrameTooLarge):
        (Lines() | Map(decode=strict, encode=str)).decoder().feed(b"abc\n")


def test_map_encode_failure_is_encode_error() -> None:
    def fail(message: int) -> str:
        raise RuntimeError("boom")

    with pytest.raises(EncodeError, match="Map encode function failed") as info:
        (Lines() | Map(decode=int, encode=fail)).encoder().encode(1)
    assert isinstance(info.value.__cause__, RuntimeError)


def test_map_may_drop_with_need_data() -> None:
    def skip_blank(line: str) -> str | Any:
        return line or NEED_DATA

    codec = Lines() | Map(decode=skip_blank, encode=skip_blank)
    assert codec.decoder().feed(b"a\n\nb\n") == ["a", "b"]
    assert codec.encoder().encode("") == b""


# -- Filter -------------------------------------------------------------------


def is_command(line: str) -> bool:
    return not line.startswith("#")


def test_filter_drops_in_both_directions() -> None:
    codec = Lines() | Filter(is_command)
    assert codec.decoder().feed(b"a\n#no\nb\n") == ["a", "b"]
    assert codec.encoder().encode("#no") == b""
    assert codec.encoder().encode("yes") == b"yes\r\n"


def test_filter_directions_separately() -> None:
    only_in = Lines() | Filter(decode=is_command)
    assert only_in.decoder().feed(b"#x\ny\n") == ["y"]
    assert only_in.encoder().encode("#x") == b"#x\r\n"
    only_out = Lines() | Filter(encode=is_command)
    assert only_out.decoder().feed(b"#x\ny\n") == ["#x", "y"]
    assert only_out.encoder().encode("#x") == b""
    both = Lines() | Filter(is_command, encode=bool)
    assert both.decoder().feed(b"#x\n\n") == [""]
    assert both.encoder().encode("") == b""
    assert both.encoder().encode("#x") == b"#x\r\n"


def test_filter_needs_a_predicate() -> None:
    with pytest.raises(TypeError, match="predicate"):
        Filter()


def test_filter_predicate_errors() -> None:
    def broken(line: str) -> bool:
        raise KeyError(line)

    with pytest.raises(MalformedFrame, match="Filter predicate failed"):
        (Lines() | Filter(broken)).decoder().feed(b"a\n")
    with pytest.raises(EncodeError, match="Filter predicate failed"):
        (Lines() | Filter(broken)).encoder().encode("a")


def test_filter_of_a_whole_batch_skips_to_the_next_kept_message() -> None:
    decoder = (Lines() | Filter(is_command)).decoder()
    decoder.push(b"#1\n#2\n#3\nkeep\n#4\n")
    assert decoder.next_message() == "keep"
    assert decoder.next_message() is NEED_DATA


# -- stacking -----------------------------------------------------------------


def test_layers_stack_left_to_right() -> None:
    layer = Json() | Filter(lambda value: value != 0) | Map(decode=abs, encode=abs)
    codec = Lines() | layer
    assert codec.decoder().feed(b"-3\n0\n4\n") == [3, 4]
    assert codec.encoder().encode(-5) == b"5\r\n"
    assert codec.encoder().encode(0) == b""


def test_stacked_pending_bytes_come_from_the_framing() -> None:
    decoder = (Lines() | Json()).decoder()
    assert decoder.feed(b"1\n[2") == [1]
    assert decoder.take_pending() == b"[2"
