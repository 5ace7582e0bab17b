"""D. J. Bernstein's netstrings: ``5:hello,``."""

from __future__ import annotations

from ..exceptions import EncodeError, FrameTooLarge, MalformedFrame
from ._buffer import BufferedDecoder, as_bytes
from .base import NEED_DATA, Codec, Decoder, Encoder, NeedData

__all__ = ["Netstrings"]

_ZERO = 0x30
_NINE = 0x39
_COLON = 0x3A
_COMMA = 0x2C
# Past this, the length of an oversized frame being skipped stops growing: the
# rest of the stream is that frame, whatever its exact length.
_HUGE = 10**30


class Netstrings(Codec[bytes, bytes]):
    """Each message is a ``bytes`` payload framed as a netstring: ``<length>:<payload>,``.

    The length is decimal ASCII without leading zeros (``0:,`` is the empty
    payload), as in https://cr.yp.to/proto/netstrings.txt.

    The decoder raises :class:`~tcpkit.FrameTooLarge` as soon as the digits
    read so far make the length exceed ``max_length`` (so at most
    ``len(str(max_length)) + 1`` digits are ever buffered), then skips the rest
    of that frame without keeping it. It raises
    :class:`~tcpkit.MalformedFrame` on a byte other than a digit before the
    colon, an empty length, a leading zero, or a payload not followed by a
    comma. A bad length prefix is consumed up to and including the offending
    byte; a payload without its comma is consumed and the byte found instead
    is left to start the next frame. At end of stream, a partial netstring
    raises :class:`~tcpkit.IncompleteFrame`.

    Args:
        max_length: the longest payload accepted and sent, in bytes (8 MiB by default).

    Raises:
        ValueError: ``max_length`` is negative.
    """

    def __init__(self, max_length: int = 8 * 1024 * 1024) -> None:
        if max_length < 0:
            raise ValueError(f"max_length must be >= 0, got {max_length}")
        self.max_length = max_length

    def decoder(self) -> Decoder[bytes]:
        return _NetstringsDecoder(self.max_length)

    def encoder(self) -> Encoder[bytes]:
        return _NetstringsEncoder(self.max_length)

    def __repr__(self) -> str:
        return f"Netstrings(max_length={self.max_length})"


class _NetstringsDecoder(BufferedDecoder[bytes]):
    __slots__ = ("_digits", "_length", "_max", "_oversized", "_skip", "_value")

    def __init__(self, max_length: int) -> None:
        super().__init__()
        self._max = max_length
        self._digits = 0  # length digits already read, from _start
        self._value = 0  # their value
        self._length = -1  # the payload length, once the colon is read
        self._oversized = False  # reading (and dropping) the digits of an oversized length
        self._skip = 0  # bytes of an oversized frame still to throw away

    def next_message(self) -> bytes | NeedData:
        if self._skip and not self._skip_bytes():
            return NEED_DATA
        length = self._length
        if length < 0:
            length = self._read_length()
            if length < 0:
                return NEED_DATA
        buf = self._buf
        body = self._start + self._digits + 1
        end = body + length
        if end >= len(buf):  # the comma is not there yet
            return NEED_DATA
        self._digits = self._value = 0
        self._length = -1
        if buf[end] != _COMMA:
            self._start = end  # drop the payload; the stray byte may start the next frame
            raise MalformedFrame(
                f"netstring of {length} bytes is followed by {bytes([buf[end]])!r}, not ','"
            )
        self._start = end + 1
        return self._frame(body, end)

    def _read_length(self) -> int:
        """Scan the length digits from where the last scan stopped.

        Returns:
            The payload length once its colon is read, or -1 if more bytes are needed.

        Raises:
            FrameTooLarge: the digits already exceed ``max_length``.
            MalformedFrame: the length prefix is not a decimal number and a colon.
        """
        buf = self._buf
        start = self._start
        i = start + self._digits
        value = self._value
        size = len(buf)
        while i < size:
            byte = buf[i]
            if _ZERO <= byte <= _NINE:
                if self._oversized:
                    if value <= _HUGE:
                        value = value * 10 + byte - _ZERO
                    start = i = i + 1  # nothing of an oversized frame is kept
                    continue
                if value == 0 and i > start:
                    self._restart(i + 1)
                    raise MalformedFrame("netstring length has a leading zero")
                value = value * 10 + byte - _ZERO
                i += 1
                if value > self._max:
                    self._restart(i)
                    self._oversized = True
                    self._value = value
                    raise FrameTooLarge(value, self._max, "netstring")
            elif byte == _COLON:
                if self._oversized:
                    self._restart(i + 1)
                    self._skip = value + 1  # the payload and its comma
                    if not self._skip_bytes():
                        return -1
                    return self._read_length()
                if i == start:
                    self._restart(i + 1)
                    raise MalformedFrame("netstring has no length before ':'")
                self._digits = i - start
                self._value = value
                self._length = value
                return value
            else:
                self._restart(i + 1)
                raise MalformedFrame(f"unexpected byte {bytes([byte])!r} in a netstring length")
        self._start = start
        self._digits = i - start
        self._value = value
        return -1

    def _restart(self, at: int) -> None:
        """Drop everything before ``at`` and expect a new length prefix there."""
        self._start = at
        self._digits = self._value = 0
        self._length = -1
        self._oversized = False

    def _skip_bytes(self) -> bool:
        """Throw away buffered bytes of an oversized frame; return True once it is all gone."""
        dropped = min(self._skip, len(self._buf) - self._start)
        self._skip -= dropped
        if self._skip:
            super()._clear()
            return False
        self._start += dropped
        return True

    def _clear(self) -> None:
        super()._clear()
        self._restart(0)
        self._skip = 0

    @property
    def in_progress(self) -> bool:
        return self._skip > 0 or self._oversized or self._start < len(self._buf)


class _NetstringsEncoder(Encoder[bytes]):
    __slots__ = ("_max",)

    def __init__(self, max_length: int) -> None:
        self._max = max_length

    def encode(self, message: bytes) -> bytes:
        """Return ``message`` as a netstring.

        Raises:
            EncodeError: ``message`` is not bytes, or is longer than ``max_length``.
        """
        data = as_bytes(message, "Netstrings")
        if len(data) > self._max:
            raise EncodeError(
                f"message of {len(data)} bytes is over the limit of {self._max} bytes (max_length)"
            )
        return b"%d:%s," % (len(data), data)
