"""The receive buffer shared by the binary decoders, and a bytes check for encoders (private).

:class:`BufferedDecoder` keeps the undecoded bytes as ``_buf[_start:]``. The
common case costs no copy: when everything pushed before was decoded, the new
bytes become the buffer as they are. Otherwise they are appended to a
``bytearray``, which is compacted only once more than half of it has been
decoded, so a byte is moved a bounded number of times and byte-at-a-time input
stays linear.

Subclasses keep every other piece of state relative to ``_start`` (a parsed
header length, a count of digits read...), never as an absolute index, so that
compaction never has to adjust them.
"""

from __future__ import annotations

from typing import TypeVar

from ..exceptions import EncodeError
from .base import Decoder

__all__ = ["BufferedDecoder", "as_bytes"]

T_co = TypeVar("T_co", covariant=True)


class BufferedDecoder(Decoder[T_co]):
    """A decoder whose undecoded bytes are ``self._buf[self._start:]``."""

    __slots__ = ("_buf", "_start")

    def __init__(self) -> None:
        self._buf: bytes | bytearray = b""
        self._start: int = 0

    def push(self, data: bytes) -> None:
        if not data:
            return
        buf = self._buf
        start = self._start
        if start == len(buf):
            # Everything before was decoded: take the new bytes as they are.
            self._buf = data if type(data) is bytes else bytes(data)
            self._start = 0
        elif isinstance(buf, bytearray):
            if start > len(buf) >> 1:
                # Compact only when most of the buffer is dead: amortised O(1) per byte.
                del buf[:start]
                self._start = 0
            buf += data
        else:
            grown = bytearray(buf[start:])
            grown += data
            self._buf = grown
            self._start = 0

    def take_pending(self) -> bytes:
        pending = bytes(self._buf[self._start :])
        self._clear()
        return pending

    @property
    def in_progress(self) -> bool:
        return self._start < len(self._buf)

    def _clear(self) -> None:
        """Forget every buffered byte (subclasses also reset their own state)."""
        self._buf = b""
        self._start = 0

    def _frame(self, begin: int, end: int) -> bytes:
        """Return ``_buf[begin:end]`` as ``bytes`` (one copy)."""
        frame = self._buf[begin:end]
        return frame if type(frame) is bytes else bytes(frame)


def as_bytes(message: object, codec: str) -> bytes:
    """Return ``message`` as ``bytes`` (no copy if it already is).

    Raises:
        EncodeError: ``message`` is not ``bytes``, ``bytearray`` or ``memoryview``.
    """
    if type(message) is bytes:
        return message
    if isinstance(message, (bytes, bytearray)):
        return bytes(message)
    if isinstance(message, memoryview):
        return message.tobytes()
    raise EncodeError(f"{codec} expects bytes messages, got {type(message).__name__}")
