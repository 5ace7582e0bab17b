"""Line framing (POE::Filter::Line)."""

from __future__ import annotations

from typing import Generic, TypeVar, overload

from ..exceptions import EncodeError, FrameTooLarge, MalformedFrame
from .base import NEED_DATA, Codec, Decoder, Encoder, NeedData

__all__ = ["Lines"]

T = TypeVar("T", str, bytes)

_LF = 10
_CR = 13


class Lines(Codec[T, T]):
    """One message per line: ``str`` by default, ``bytes`` with ``encoding=None``.

    Args:
        newline: ``None`` (the default) reads a line ending in LF or CRLF and writes
            CRLF, as POE::Filter::Line does. Any other string (``"\\n"``,
            ``"\\r\\n"``, ``"\\0"``...) is used literally in both directions.
        encoding: the text encoding of lines, or ``None`` for raw ``bytes`` lines.
        max_length: the longest line accepted, in bytes, without its terminator.
            A longer line raises :class:`~tcpkit.FrameTooLarge` as soon as it is
            known to be too long (the buffer never grows past the limit), and is
            then skipped up to its terminator so decoding can go on.

    Decoding is linear: every search resumes where the previous one stopped.
    As POE::Filter::Line (and Twisted's ``sendLine``), encoding does not look
    inside a message: one that contains the separator goes out as several
    lines, which is a way to send a multi-line reply at once.
    """

    @overload
    def __init__(
        self: Lines[str],
        newline: str | None = None,
        encoding: str = "utf-8",
        max_length: int = 65536,
    ) -> None: ...

    @overload
    def __init__(
        self: Lines[bytes],
        newline: str | None = None,
        *,
        encoding: None,
        max_length: int = 65536,
    ) -> None: ...

    def __init__(
        self,
        newline: str | None = None,
        encoding: str | None = "utf-8",
        max_length: int = 65536,
    ) -> None:
        if newline == "":
            raise ValueError("newline must be None or a non-empty string")
        if max_length < 1:
            raise ValueError("max_length must be at least 1")
        if encoding is not None and "\n\r".encode(encoding) != b"\n\r":
            raise ValueError(
                f"Lines needs an ASCII-compatible encoding (UTF-8, Latin-1...), not {encoding!r}; "
                "decode such streams with Lines(encoding=None) | Map(...)"
            )
        self.newline = newline
        self.encoding = encoding
        self.max_length = max_length
        self._in_sep = newline.encode(encoding or "latin-1") if newline is not None else b"\n"
        self._out_sep = self._in_sep if newline is not None else b"\r\n"

    def decoder(self) -> Decoder[T]:
        return _LinesDecoder(self._in_sep, self.newline is None, self.encoding, self.max_length)

    def encoder(self) -> Encoder[T]:
        return _LinesEncoder(self._out_sep, self.encoding)

    def __repr__(self) -> str:
        return (
            f"Lines(newline={self.newline!r}, encoding={self.encoding!r}, "
            f"max_length={self.max_length})"
        )


class _LinesDecoder(Decoder[T], Generic[T]):
    __slots__ = (
        "_buf",
        "_crlf",
        "_discarding",
        "_encoding",
        "_limit",
        "_max",
        "_scan",
        "_sep",
        "_start",
    )

    def __init__(self, sep: bytes, crlf: bool, encoding: str | None, max_length: int) -> None:
        self._sep = sep
        self._crlf = crlf  # LF, with an optional CR before it
        self._encoding = encoding
        self._max = max_length
        # The most bytes a line within max_length can leave undecoded with no separator
        # found: the line plus a CR (LF mode) or all but the last byte of the separator.
        self._limit = max_length + (1 if crlf else len(sep) - 1)
        self._buf: bytes | bytearray = b""
        self._start = 0  # first undecoded byte
        self._scan = 0  # where the next search for a separator resumes
        self._discarding = False  # skipping the rest of an overlong line

    def push(self, data: bytes) -> None:
        buf = self._buf
        start = self._start
        if start == len(buf):
            # Common case: everything before was decoded; take the bytes as they are.
            self._buf = data
            self._start = self._scan = 0
        elif isinstance(buf, bytearray):
            if start > len(buf) >> 1:  # compact only when most of it is consumed: linear
                del buf[:start]
                self._scan -= start
                self._start = 0
            buf += data
        else:
            grown = bytearray(buf[start:])
            grown += data
            self._buf = grown
            self._scan -= start
            self._start = 0

    def next_message(self) -> T | NeedData:
        buf = self._buf
        start = self._start
        sep = self._sep
        end = buf.find(sep, self._scan)
        if end < 0:
            if start == len(buf):  # all decoded (after every read of whole lines)
                self._scan = start
                return NEED_DATA
            return self._incomplete(buf, start)
        self._start = self._scan = end + len(sep)
        if self._discarding:
            self._discarding = False
            return self.next_message()
        if self._crlf and end > start and buf[end - 1] == _CR:
            end -= 1
        if end - start > self._max:
            raise FrameTooLarge(end - start, self._max, "line")
        line = buf[start:end]
        if self._encoding is None:
            return line if isinstance(line, bytes) else bytes(line)  # type: ignore[return-value]
        try:
            return line.decode(self._encoding)  # type: ignore[return-value]
        except UnicodeDecodeError as exc:
            raise MalformedFrame(f"line is not valid {self._encoding}: {exc.reason}") from exc

    def _incomplete(self, buf: bytes | bytearray, start: int) -> NeedData:
        """No separator after ``start``: wait for more (or refuse a line over the limit)."""
        pending = len(buf) - start
        # A separator may straddle the end of the buffer: search again from there.
        self._scan = max(start, len(buf) - len(self._sep) + 1)
        if self._discarding:
            self._drop_overlong(buf, start)
        elif pending > self._limit:
            self._discard()
            raise FrameTooLarge(pending, self._max, "line")
        return NEED_DATA

    def _drop_overlong(self, buf: bytes | bytearray, start: int) -> None:
        """Drop the overlong line's bytes, but keep a possible partial separator."""
        keep = len(self._sep) - 1
        self._buf = bytes(buf[max(start, len(buf) - keep) :]) if keep else b""
        self._start = self._scan = 0

    def _discard(self) -> None:
        self._buf = b""
        self._start = self._scan = 0
        self._discarding = True

    def take_pending(self) -> bytes:
        pending = bytes(self._buf[self._start :])
        self._buf = b""
        self._start = self._scan = 0
        self._discarding = False
        return pending

    @property
    def in_progress(self) -> bool:
        return self._discarding or self._start < len(self._buf)


class _LinesEncoder(Encoder[T], Generic[T]):
    __slots__ = ("_encoding", "_sep")

    def __init__(self, sep: bytes, encoding: str | None) -> None:
        self._sep = sep
        self._encoding = encoding

    def encode(self, message: T) -> bytes:
        if self._encoding is None:
            if isinstance(message, (bytes, bytearray, memoryview)):
                return bytes(message) + self._sep
        elif isinstance(message, str):
            try:
                return message.encode(self._encoding) + self._sep
            except UnicodeEncodeError as exc:
                raise EncodeError(f"cannot encode line as {self._encoding}: {exc}") from exc
        expected = "bytes" if self._encoding is None else "str"
        raise EncodeError(f"Lines expects {expected} messages, got {type(message).__name__}")
