"""Unframed bytes (POE::Filter::Stream)."""

from __future__ import annotations

from typing import cast

from ..exceptions import EncodeError
from .base import NEED_DATA, Codec, Decoder, Encoder, NeedData

__all__ = ["Raw"]


class Raw(Codec[bytes, bytes]):
    """Bytes as they arrive: each message is whatever one read delivered.

    There is no framing, so the chunk boundaries carry no meaning; only the
    concatenation of the messages is stable. Nothing is buffered between reads.
    """

    def decoder(self) -> Decoder[bytes]:
        return _RawDecoder()

    def encoder(self) -> Encoder[bytes]:
        return _RawEncoder()

    def __repr__(self) -> str:
        return "Raw()"


class _RawDecoder(Decoder[bytes]):
    __slots__ = ("_chunks",)

    def __init__(self) -> None:
        self._chunks: list[bytes] = []

    def push(self, data: bytes) -> None:
        if data:
            self._chunks.append(data)

    def next_message(self) -> bytes | NeedData:
        chunks = self._chunks
        if not chunks:
            return NEED_DATA
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        return data

    def take_pending(self) -> bytes:
        data = b"".join(self._chunks)
        self._chunks.clear()
        return data


class _RawEncoder(Encoder[bytes]):
    __slots__ = ()

    def encode(self, message: bytes) -> bytes:
        obj = cast(object, message)  # checked at run time: callers may pass anything
        if isinstance(obj, bytes):
            return obj
        if isinstance(obj, (bytearray, memoryview)):
            return bytes(obj)  # pyright: ignore[reportUnknownArgumentType]
        raise EncodeError(f"Raw expects bytes messages, got {type(message).__name__}")
