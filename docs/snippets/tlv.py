"""Type-length-value records: a type byte, a 2-byte big-endian length, the value."""

from __future__ import annotations

import struct
from typing import NamedTuple

from tcpkit import EncodeError, FrameTooLarge
from tcpkit.codecs import NEED_DATA, Codec, Decoder, Encoder, NeedData

HEADER = struct.Struct("!BH")  # type (0-255), length (0-65535)


class Record(NamedTuple):
    kind: int
    value: bytes


class TLV(Codec[Record, Record]):
    """TLV records, with values of at most ``max_length`` bytes."""

    def __init__(self, max_length: int = 4096) -> None:
        if not 0 <= max_length <= 0xFFFF:
            raise ValueError("max_length must be between 0 and 65535")
        self.max_length = max_length

    def decoder(self) -> Decoder[Record]:
        return TLVDecoder(self.max_length)

    def encoder(self) -> Encoder[Record]:
        return TLVEncoder(self.max_length)

    def __repr__(self) -> str:
        return f"TLV(max_length={self.max_length})"


class TLVDecoder(Decoder[Record]):
    def __init__(self, max_length: int) -> None:
        self._max = max_length
        self._buf = bytearray()
        self._start = 0  # the first byte not decoded yet

    def push(self, data: bytes) -> None:
        if self._start:  # drop what was decoded before growing the buffer
            del self._buf[: self._start]
            self._start = 0
        self._buf += data

    def next_message(self) -> Record | NeedData:
        start = self._start
        if len(self._buf) - start < HEADER.size:
            return NEED_DATA
        kind, length = HEADER.unpack_from(self._buf, start)
        if length > self._max:
            # Refuse it as soon as the header says so, before buffering the value.
            # The rest of the stream cannot be framed: drop it.
            self.take_pending()
            raise FrameTooLarge(length, self._max, "value")
        end = start + HEADER.size + length
        if len(self._buf) < end:
            return NEED_DATA
        self._start = end
        return Record(kind, bytes(self._buf[start + HEADER.size : end]))

    def take_pending(self) -> bytes:
        pending = bytes(self._buf[self._start :])
        self._buf = bytearray()
        self._start = 0
        return pending


class TLVEncoder(Encoder[Record]):
    def __init__(self, max_length: int) -> None:
        self._max = max_length

    def encode(self, message: Record) -> bytes:
        kind, value = message
        if not 0 <= kind <= 0xFF or len(value) > self._max:
            raise EncodeError(f"cannot encode {message!r} as TLV")
        return HEADER.pack(kind, len(value)) + value
