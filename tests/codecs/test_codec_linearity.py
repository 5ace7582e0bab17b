"""Decoding is linear, measured by counting work, never by a clock.

Every ``bytearray`` the decoders create is swapped for a subclass that adds up
the bytes each operation touches (bytes appended, moved by compaction, scanned
by ``find``, copied out by slicing). Fed one byte at a time, a decoder that
resumes its scans where they stopped and compacts its buffer in amortised
constant time touches a small constant number of bytes per input byte; one
that rescans or recopies its buffer touches about N²/2 of them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, SupportsIndex

import pytest

import tcpkit.codecs._buffer
import tcpkit.codecs.lines
from tcpkit.codecs import (
    NEED_DATA,
    Codec,
    Decoder,
    Encoder,
    FixedBlocks,
    Json,
    LengthPrefixed,
    Lines,
    NeedData,
    Netstrings,
    Raw,
)

N = 1024 * 1024  # bytes per test input: N**2 / 2 dwarfs any constant factor
WORK_PER_BYTE = 8  # allowed bytes touched per input byte


class Meter:
    def __init__(self) -> None:
        self.work = 0


def counting_bytearray(meter: Meter) -> type[bytearray]:
    class CountingBytearray(bytearray):
        def __init__(self, *args: Any) -> None:
            super().__init__(*args)
            meter.work += len(self)

        def __iadd__(self, other: Any) -> CountingBytearray:
            meter.work += len(other)
            return super().__iadd__(other)

        def __delitem__(self, key: SupportsIndex | slice) -> None:
            if isinstance(key, slice):
                stop = key.indices(len(self))[1]
                meter.work += len(self) - stop  # bytes moved down
            super().__delitem__(key)

        def __getitem__(self, key: Any) -> Any:
            if isinstance(key, slice):
                meter.work += len(range(*key.indices(len(self))))
            else:
                meter.work += 1
            return super().__getitem__(key)

        def find(self, sub: Any, start: Any = None, end: Any = None) -> int:
            found = super().find(sub, start, end)
            begin = start or 0
            stop = found + len(sub) if found >= 0 else len(self)
            meter.work += max(0, stop - begin)
            return found

    return CountingBytearray


@pytest.fixture
def meter(monkeypatch: pytest.MonkeyPatch) -> Meter:
    meter = Meter()
    counting = counting_bytearray(meter)
    for module in (tcpkit.codecs._buffer, tcpkit.codecs.lines, __import__(__name__)):
        monkeypatch.setattr(module, "bytearray", counting, raising=False)
    return meter


def one_byte_at_a_time(decoder: Decoder[Any], data: bytes) -> Iterator[Any]:
    for i in range(len(data)):
        decoder.push(data[i : i + 1])
        while (message := decoder.next_message()) is not NEED_DATA:
            yield message


def stream(codec: Codec[Any, Any], messages: list[Any]) -> bytes:
    encoder = codec.encoder()
    return b"".join(encoder.encode(message) for message in messages)


def small_and_huge(make: Callable[[bytes], Any]) -> list[Any]:
    """About N bytes: one message of N/2 bytes between many 100-byte ones."""
    short = [make(b"%05d" % i * 20) for i in range(N // 400)]
    return [*short, make(b"h" * (N // 2)), *short]


CASES: list[tuple[str, Codec[Any, Any], list[Any]]] = [
    ("Lines()", Lines(max_length=N), small_and_huge(bytes.decode)),
    (
        "Lines(newline='\\r\\n')",
        Lines(newline="\r\n", max_length=N),
        small_and_huge(bytes.decode),
    ),
    ("Lines(encoding=None)", Lines(encoding=None, max_length=N), small_and_huge(bytes)),
    ("FixedBlocks(100)", FixedBlocks(100), [b"b" * 100] * (N // 100)),
    ("FixedBlocks(N/2)", FixedBlocks(N // 2), [b"b" * (N // 2)] * 2),
    ("LengthPrefixed()", LengthPrefixed(), small_and_huge(bytes)),
    ("Netstrings()", Netstrings(), small_and_huge(bytes)),
    ("Lines() | Json()", Lines(max_length=N) | Json(), small_and_huge(bytes.decode)),
    ("Raw()", Raw(), [b"r" * N]),
]


@pytest.mark.parametrize(
    ("codec", "messages"),
    [pytest.param(codec, messages, id=name) for name, codec, messages in CASES],
)
def test_one_byte_at_a_time_is_linear(
    meter: Meter, codec: Codec[Any, Any], messages: list[Any]
) -> None:
    data = stream(codec, messages)
    got = list(one_byte_at_a_time(codec.decoder(), data))
    if isinstance(codec, Raw):
        assert b"".join(got) == b"".join(messages)
    else:
        assert got == messages
        assert meter.work >= len(data)  # the meter does see the decoder's buffer
    assert meter.work <= WORK_PER_BYTE * len(data), (
        f"{meter.work / len(data):.1f} bytes touched per input byte"
    )


@pytest.mark.parametrize(
    ("codec", "messages"),
    [pytest.param(codec, messages, id=name) for name, codec, messages in CASES if name != "Raw()"],
)
def test_a_growing_backlog_is_linear(
    meter: Meter, codec: Codec[Any, Any], messages: list[Any]
) -> None:
    """Push two messages' worth, decode one: the buffer holds ever more whole frames."""
    data = stream(codec, messages)
    decoder = codec.decoder()
    step = max(1, len(data) // len(messages))
    got: list[Any] = []
    for i in range(0, len(data), step):
        decoder.push(data[i : i + step])
        if (message := decoder.next_message()) is not NEED_DATA:
            got.append(message)
    got += decoder.feed(b"")
    assert got == messages
    assert meter.work <= WORK_PER_BYTE * len(data), (
        f"{meter.work / len(data):.1f} bytes touched per input byte"
    )


class _NaiveLinesDecoder(Decoder[bytes]):
    """Searches its whole buffer again on every push: the bug this file guards against."""

    def __init__(self) -> None:
        self.buf = bytearray()

    def push(self, data: bytes) -> None:
        self.buf += data

    def next_message(self) -> bytes | NeedData:
        end = self.buf.find(b"\n")
        if end < 0:
            return NEED_DATA
        line = bytes(self.buf[:end])
        del self.buf[: end + 1]
        return line

    def take_pending(self) -> bytes:
        pending, self.buf = bytes(self.buf), bytearray()
        return pending


class _NaiveLines(Codec[bytes, bytes]):
    def decoder(self) -> Decoder[bytes]:
        return _NaiveLinesDecoder()

    def encoder(self) -> Encoder[bytes]:
        return Lines(encoding=None).encoder()


def test_the_meter_catches_a_quadratic_decoder(meter: Meter) -> None:
    data = b"q" * (N // 8) + b"\n"
    assert list(one_byte_at_a_time(_NaiveLines().decoder(), data)) == [b"q" * (N // 8)]
    assert meter.work > 100 * WORK_PER_BYTE * len(data)
