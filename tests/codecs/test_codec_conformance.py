"""Every built-in codec passes the exported property suite, ``tcpkit.testing.check_codec``."""

from __future__ import annotations

import struct
from typing import Any

import pytest
from hypothesis import strategies as st

from tcpkit.codecs import (
    Codec,
    Filter,
    FixedBlocks,
    Json,
    LengthPrefixed,
    Lines,
    Map,
    Netstrings,
    Raw,
)
from tcpkit.testing import check_codec

MiB = 1024 * 1024


def text(exclude: str = "\n") -> st.SearchStrategy[str]:
    """Short text a line codec can carry: no terminator, no lone surrogates (not UTF-8)."""
    return st.text(
        st.characters(blacklist_categories=("Cs",), blacklist_characters=exclude), max_size=20
    )


def json_values() -> st.SearchStrategy[Any]:
    scalars = (
        st.none()
        | st.booleans()
        | st.integers()
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.text(max_size=8)
    )
    return st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
        max_leaves=6,
    )


def not_comment(line: str) -> bool:
    return not line.startswith("#")


def parse_int(line: str) -> int:
    return int(line)


def utf8(data: bytes) -> str:
    return data.decode("utf-8")


def to_utf8(message: str) -> bytes:
    return message.encode("utf-8")


# (id, codec, messages strategy, check_codec options)
CASES: list[tuple[str, Codec[Any, Any], st.SearchStrategy[Any], dict[str, Any]]] = [
    ("Lines()", Lines(), text(), {"oversized": b"x" * 65538}),
    (
        "Lines(max_length=16)",
        Lines(max_length=16),
        st.text(st.characters(max_codepoint=127, blacklist_characters="\n"), max_size=16),
        {"oversized": st.binary(min_size=18, max_size=40).map(lambda b: b.replace(b"\n", b"."))},
    ),
    ("Lines(newline='\\n')", Lines(newline="\n"), text(), {"oversized": b"y" * 65537}),
    (
        "Lines(encoding=None)",
        Lines(encoding=None),
        st.binary(max_size=30).map(lambda b: b.replace(b"\n", b"")),
        {"oversized": b"\xff" * 65538},
    ),
    ("Lines(newline='\\0')", Lines(newline="\0"), text("\0"), {"oversized": b"z" * 65537}),
    (
        "Lines(newline='\\r\\n')",
        Lines(newline="\r\n", max_length=8),
        text("\r\n").filter(lambda s: len(s.encode()) <= 8),
        {"oversized": b"0123456789"},
    ),
    ("Raw()", Raw(), st.binary(max_size=30), {"framed": False}),
    ("FixedBlocks(1)", FixedBlocks(1), st.binary(min_size=1, max_size=1), {}),
    ("FixedBlocks(7)", FixedBlocks(7), st.binary(min_size=7, max_size=7), {}),
    (
        "LengthPrefixed()",
        LengthPrefixed(),
        st.binary(max_size=40),
        {"oversized": struct.pack("!I", 8 * MiB + 1)},
    ),
    (
        "LengthPrefixed('!H', 300)",
        LengthPrefixed("!H", max_length=300),
        st.binary(max_size=40),
        {"oversized": st.integers(301, 0xFFFF).map(lambda n: struct.pack("!H", n))},
    ),
    (
        "LengthPrefixed('<Q')",
        LengthPrefixed("<Q"),
        st.binary(max_size=40),
        {"oversized": st.integers(8 * MiB + 1, 2**64 - 1).map(lambda n: struct.pack("<Q", n))},
    ),
    ("LengthPrefixed('B')", LengthPrefixed("B"), st.binary(max_size=255), {}),
    (
        "LengthPrefixed('>i', 10)",
        LengthPrefixed(">i", max_length=10),
        st.binary(max_size=10),
        {"oversized": b"\x00\x00\x00\x0b"},
    ),
    (
        "Netstrings(100)",
        Netstrings(max_length=100),
        st.binary(max_size=100),
        {"oversized": st.integers(101, 10**20).map(lambda n: b"%d:" % n)},
    ),
    (
        "Netstrings()",
        Netstrings(),
        st.binary(max_size=40),
        {"oversized": b"%d" % (8 * MiB + 1)},
    ),
    ("Lines() | Json()", Lines() | Json(), json_values(), {"oversized": b"[" * 65538}),
    (
        "LengthPrefixed() | Json(bytes)",
        LengthPrefixed() | Json(bytes),
        json_values(),
        {"oversized": struct.pack("!I", 2**32 - 1)},
    ),
    ("Netstrings() | Json(bytes)", Netstrings() | Json(bytes), json_values(), {}),
    (
        "Lines() | Map(int, str)",
        Lines() | Map(decode=parse_int, encode=str),
        st.integers(),
        {"oversized": b"1" * 65538},
    ),
    (
        "LengthPrefixed() | Map(utf8)",
        LengthPrefixed("!H") | Map(decode=utf8, encode=to_utf8),
        text(""),
        {},
    ),
    (
        "Lines() | Filter(not_comment)",
        Lines() | Filter(not_comment),
        text().filter(not_comment),
        {"oversized": b"#" * 65538},
    ),
    (
        "Lines() | Json() | Filter",
        Lines() | (Json() | Filter(lambda value: value is not None)),
        json_values().filter(lambda value: value is not None),
        {},
    ),
]


@pytest.mark.parametrize(
    ("codec", "messages", "options"),
    [pytest.param(codec, messages, options, id=name) for name, codec, messages, options in CASES],
)
def test_builtin_codec_passes_check_codec(
    codec: Codec[Any, Any], messages: st.SearchStrategy[Any], options: dict[str, Any]
) -> None:
    check_codec(codec, messages, **options)
