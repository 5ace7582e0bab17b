"""Length-prefixed frames (POE::Filter::Block with a LengthCodec; tokio's LengthDelimitedCodec)."""

from __future__ import annotations

import struct

from ..exceptions import EncodeError, FrameTooLarge, MalformedFrame
from ._buffer import BufferedDecoder, as_bytes
from .base import NEED_DATA, Codec, Decoder, Encoder, NeedData

__all__ = ["LengthPrefixed"]

_BYTE_ORDERS = "@=<>!"
_INTEGER_CODES = "bBhHiIlLqQnN"


class LengthPrefixed(Codec[bytes, bytes]):
    """Each message is a ``bytes`` payload after a binary length header.

    The header is one integer packed with :mod:`struct`: ``"!I"`` (the
    default) is a 4-byte big-endian unsigned length, ``"!H"`` two bytes,
    ``"<Q"`` eight bytes little-endian, ``"B"`` one byte. The length counts the
    payload only, not the header.

    A declared length over ``max_length`` raises :class:`~tcpkit.FrameTooLarge`
    as soon as the header is read, before any of the payload is buffered; the
    decoder then skips that many bytes without keeping them, so decoding goes
    on at the next frame. A negative length (signed headers) raises
    :class:`~tcpkit.MalformedFrame`; the header is consumed. At end of
    stream, a partial frame raises :class:`~tcpkit.IncompleteFrame`.

    Args:
        header: a :mod:`struct` format of exactly one integer, with an optional
            byte-order character (``"!"``, ``"<"``, ``">"``, ``"="``, ``"@"``).
        max_length: the longest payload accepted and sent, in bytes (8 MiB by
            default, as tokio). The header's own range also bounds it.

    Raises:
        ValueError: ``header`` is not a single-integer struct format, or
            ``max_length`` is negative.
    """

    def __init__(self, header: str = "!I", max_length: int = 8 * 1024 * 1024) -> None:
        order = header[:1] if header[:1] in _BYTE_ORDERS else ""
        code = header[len(order) :]
        if len(code) != 1 or code not in _INTEGER_CODES:
            raise ValueError(
                f"header must be a struct format of one integer (such as '!I', '<H' or 'B'), "
                f"got {header!r}"
            )
        try:
            packer = struct.Struct(header)
        except struct.error as exc:  # "n"/"N" exist only in native mode
            raise ValueError(f"invalid struct format {header!r}: {exc}") from exc
        if max_length < 0:
            raise ValueError(f"max_length must be >= 0, got {max_length}")
        self.header = header
        self.max_length = max_length
        self._struct = packer
        signed = code.islower()
        self._header_max = (1 << (8 * packer.size - signed)) - 1

    def decoder(self) -> Decoder[bytes]:
        return _LengthPrefixedDecoder(self._struct, self.max_length)

    def encoder(self) -> Encoder[bytes]:
        if self._header_max < self.max_length:
            limit, why = self._header_max, f"the largest length header {self.header!r} can express"
        else:
            limit, why = self.max_length, "max_length"
        return _LengthPrefixedEncoder(self._struct, limit, why)

    def __repr__(self) -> str:
        return f"LengthPrefixed(header={self.header!r}, max_length={self.max_length})"


class _LengthPrefixedDecoder(BufferedDecoder[bytes]):
    __slots__ = ("_header", "_length", "_max", "_skip", "_unpack_from")

    def __init__(self, packer: struct.Struct, max_length: int) -> None:
        super().__init__()
        self._unpack_from = packer.unpack_from
        self._header = packer.size
        self._max = max_length
        self._length = -1  # the payload length, once the header at _start is read
        self._skip = 0  # bytes of an oversized frame still to throw away

    def next_message(self) -> bytes | NeedData:
        buf = self._buf
        start = self._start
        if self._skip:
            dropped = min(self._skip, len(buf) - start)
            self._skip -= dropped
            if self._skip:
                self._clear()
                return NEED_DATA
            start = self._start = start + dropped
        length = self._length
        body = start + self._header
        if length < 0:
            if body > len(buf):
                return NEED_DATA
            (length,) = self._unpack_from(buf, start)
            if length < 0:
                self._start = body
                raise MalformedFrame(f"negative frame length {length} in the header")
            if length > self._max:
                self._start = body
                self._skip = length
                raise FrameTooLarge(length, self._max)
            self._length = length
        end = body + length
        if end > len(buf):
            return NEED_DATA
        self._start = end
        self._length = -1
        return self._frame(body, end)

    def _clear(self) -> None:
        super()._clear()
        self._length = -1

    def take_pending(self) -> bytes:
        # A frame being skipped is forgotten: its remaining bytes are not tracked.
        self._skip = 0
        return super().take_pending()

    @property
    def in_progress(self) -> bool:
        return self._skip > 0 or self._start < len(self._buf)


class _LengthPrefixedEncoder(Encoder[bytes]):
    __slots__ = ("_max", "_pack", "_why")

    def __init__(self, packer: struct.Struct, max_length: int, why: str) -> None:
        self._pack = packer.pack
        self._max = max_length
        self._why = why

    def encode(self, message: bytes) -> bytes:
        """Return the header and ``message``.

        Raises:
            EncodeError: ``message`` is not bytes, or is longer than ``max_length``
                or than the header can express.
        """
        data = as_bytes(message, "LengthPrefixed")
        size = len(data)
        if size > self._max:
            raise EncodeError(
                f"message of {size} bytes is over the limit of {self._max} bytes ({self._why})"
            )
        return self._pack(size) + data
