"""Every codec carries messages over a real loopback socket, on every backend."""

from __future__ import annotations

import struct
from typing import Any

import anyio
import pytest

from tcpkit import (
    App,
    Connection,
    Filter,
    FixedBlocks,
    FrameTooLarge,
    Json,
    LengthPrefixed,
    Lines,
    MalformedFrame,
    Map,
    Netstrings,
    Raw,
)
from tcpkit.codecs import Codec

pytestmark = pytest.mark.anyio


def not_comment(line: str) -> bool:
    return not line.startswith("#")


# (id, codec, bytes the client sends, bytes the echo server must answer)
ECHO_CASES: list[tuple[str, Codec[Any, Any], bytes, bytes]] = [
    ("Lines()", Lines(), b"one\ntwo\r\n\xc3\xa9\n", b"one\r\ntwo\r\n\xc3\xa9\r\n"),
    ("Lines(newline='\\n')", Lines(newline="\n"), b"a\r\nb\n", b"a\r\nb\n"),
    ("Lines(encoding=None)", Lines(encoding=None), b"\xff\n\x00\r\n", b"\xff\r\n\x00\r\n"),
    ("Lines(newline='\\0')", Lines(newline="\0"), b"a\nb\0c\0", b"a\nb\0c\0"),
    ("Raw()", Raw(), b"any bytes \x00\xff at all", b"any bytes \x00\xff at all"),
    ("FixedBlocks(4)", FixedBlocks(4), b"abcdefgh", b"abcdefgh"),
    (
        "LengthPrefixed()",
        LengthPrefixed(),
        b"\x00\x00\x00\x03abc\x00\x00\x00\x00",
        b"\x00\x00\x00\x03abc\x00\x00\x00\x00",
    ),
    ("LengthPrefixed('<H')", LengthPrefixed("<H"), b"\x02\x00hi", b"\x02\x00hi"),
    ("Netstrings()", Netstrings(), b"5:hello,0:,", b"5:hello,0:,"),
    ("Lines() | Json()", Lines() | Json(), b'{"a": [1, 2]}\n"x"\n', b'{"a":[1,2]}\r\n"x"\r\n'),
    (
        "LengthPrefixed() | Json(bytes)",
        LengthPrefixed() | Json(bytes),
        b"\x00\x00\x00\x07[ 1 ,2]",
        b"\x00\x00\x00\x05[1,2]",
    ),
    (
        "Lines() | Map(int, str)",
        Lines() | Map(decode=int, encode=str),
        b"007\n-1\n",
        b"7\r\n-1\r\n",
    ),
    ("Lines() | Filter", Lines() | Filter(not_comment), b"a\n#b\nc\n", b"a\r\nc\r\n"),
]


def echo_app(codec: Codec[Any, Any], errors: list[Exception] | None = None) -> App[Any, Any]:
    app: App[Any, Any] = App(codec=codec)

    @app.on_input
    async def echo(conn: Connection[Any, Any], message: Any) -> None:
        await conn.send(message)

    if errors is not None:

        @app.on_error
        def record(conn: Connection[Any, Any], exc: Exception) -> None:
            errors.append(exc)

    return app


async def receive_exactly(stream: anyio.abc.ByteStream, size: int) -> bytes:
    data = b""
    with anyio.fail_after(10):
        while len(data) < size:
            data += await stream.receive()
    return data


@pytest.mark.parametrize(
    ("codec", "sent", "expected"),
    [pytest.param(codec, sent, expected, id=name) for name, codec, sent, expected in ECHO_CASES],
)
@pytest.mark.parametrize("split", ["whole", "bytewise"])
async def test_echo(codec: Codec[Any, Any], sent: bytes, expected: bytes, split: str) -> None:
    async with (
        echo_app(codec).start() as server,
        await anyio.connect_tcp("127.0.0.1", server.port or 0) as stream,
    ):
        if split == "whole":
            await stream.send(sent)
        else:
            for i in range(len(sent)):
                await stream.send(sent[i : i + 1])
        assert await receive_exactly(stream, len(expected)) == expected


BAD_CASES: list[tuple[str, Codec[Any, Any], bytes, type[Exception]]] = [
    ("Lines", Lines(max_length=16), b"x" * 100, FrameTooLarge),
    ("LengthPrefixed", LengthPrefixed(max_length=16), struct.pack("!I", 17), FrameTooLarge),
    ("Netstrings", Netstrings(max_length=16), b"17", FrameTooLarge),
    ("Netstrings-grammar", Netstrings(), b"5:hello!", MalformedFrame),
    ("Json", Lines() | Json(), b"{nope}\n", MalformedFrame),
]


@pytest.mark.parametrize(
    ("codec", "sent", "error"),
    [pytest.param(codec, sent, error, id=name) for name, codec, sent, error in BAD_CASES],
)
async def test_bad_input_reaches_on_error_and_closes(
    codec: Codec[Any, Any], sent: bytes, error: type[Exception]
) -> None:
    errors: list[Exception] = []
    async with (
        echo_app(codec, errors).start() as server,
        await anyio.connect_tcp("127.0.0.1", server.port or 0) as stream,
    ):
        await stream.send(sent)
        with anyio.fail_after(10):
            try:
                while await stream.receive():
                    pass
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                pass
    assert [type(exc) for exc in errors] == [error]
