"""Fixed-size blocks (POE::Filter::Block with BlockSize)."""

from __future__ import annotations

from ..exceptions import EncodeError
from ._buffer import BufferedDecoder, as_bytes
from .base import NEED_DATA, Codec, Decoder, Encoder, NeedData

__all__ = ["FixedBlocks"]


class FixedBlocks(Codec[bytes, bytes]):
    """Every message is a ``bytes`` block of exactly ``size`` bytes.

    The decoder never holds more than ``size - 1`` bytes of an unfinished
    block. At end of stream, a partial block raises
    :class:`~tcpkit.IncompleteFrame`.

    Args:
        size: the length of every block, in bytes.

    Raises:
        TypeError: ``size`` is not an ``int``.
        ValueError: ``size`` is less than 1.
    """

    def __init__(self, size: int) -> None:
        if isinstance(size, bool) or not isinstance(size, int):  # pyright: ignore[reportUnnecessaryIsInstance]
            raise TypeError(f"size must be an int, got {type(size).__name__}")
        if size < 1:
            raise ValueError(f"size must be at least 1, got {size}")
        self.size = size

    def decoder(self) -> Decoder[bytes]:
        return _FixedBlocksDecoder(self.size)

    def encoder(self) -> Encoder[bytes]:
        return _FixedBlocksEncoder(self.size)

    def __repr__(self) -> str:
        return f"FixedBlocks({self.size})"


class _FixedBlocksDecoder(BufferedDecoder[bytes]):
    __slots__ = ("_size",)

    def __init__(self, size: int) -> None:
        super().__init__()
        self._size = size

    def next_message(self) -> bytes | NeedData:
        start = self._start
        end = start + self._size
        if end > len(self._buf):
            return NEED_DATA
        self._start = end
        return self._frame(start, end)


class _FixedBlocksEncoder(Encoder[bytes]):
    __slots__ = ("_size",)

    def __init__(self, size: int) -> None:
        self._size = size

    def encode(self, message: bytes) -> bytes:
        """Return ``message`` itself.

        Raises:
            EncodeError: ``message`` is not bytes, or not exactly ``size`` bytes long.
        """
        data = as_bytes(message, "FixedBlocks")
        if len(data) != self._size:
            raise EncodeError(
                f"FixedBlocks({self._size}) expects blocks of exactly {self._size} bytes, "
                f"got {len(data)}"
            )
        return data
