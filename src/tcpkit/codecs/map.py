"""Transform messages with two functions (POE::Filter::Map)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from ..exceptions import EncodeError, FrameError, MalformedFrame
from .base import Layer, NeedData

__all__ = ["Map"]

A_contra = TypeVar("A_contra", contravariant=True)
B_co = TypeVar("B_co", covariant=True)
C_contra = TypeVar("C_contra", contravariant=True)
D_co = TypeVar("D_co", covariant=True)


class Map(Layer[A_contra, B_co, C_contra, D_co]):
    """A layer that applies ``decode`` to every message in and ``encode`` to every message out.

    ``Lines() | Map(decode=int, encode=str)`` is a codec of ``int`` messages,
    one per line; the functions' types flow to the handlers. Either function
    may return :data:`~tcpkit.codecs.NEED_DATA` to drop a message.

    A ``decode`` function that raises is the peer's fault: its exception
    becomes a :class:`~tcpkit.MalformedFrame` (with the original as
    ``__cause__``); a :class:`~tcpkit.FrameError` passes through as it is. An
    exception from ``encode`` becomes an :class:`~tcpkit.EncodeError`.

    Args:
        decode: applied to each message decoded by the codec below.
        encode: applied to each message before the codec below encodes it.
    """

    def __init__(
        self,
        *,
        decode: Callable[[A_contra], B_co | NeedData],
        encode: Callable[[C_contra], D_co | NeedData],
    ) -> None:
        self._decode = decode
        self._encode = encode

    def decode(self, message: A_contra) -> B_co | NeedData:
        """Apply the ``decode`` function.

        Raises:
            MalformedFrame: the function raised (a ``FrameError`` is re-raised as is).
        """
        try:
            return self._decode(message)
        except FrameError:
            raise
        except Exception as exc:
            raise MalformedFrame(f"Map decode function failed: {exc!r}") from exc

    def encode(self, message: C_contra) -> D_co | NeedData:
        """Apply the ``encode`` function.

        Raises:
            EncodeError: the function raised.
        """
        try:
            return self._encode(message)
        except EncodeError:
            raise
        except Exception as exc:
            raise EncodeError(f"Map encode function failed: {exc!r}") from exc

    def __repr__(self) -> str:
        return f"Map(decode={_name(self._decode)}, encode={_name(self._encode)})"


def _name(func: object) -> str:
    name = getattr(func, "__qualname__", None)
    return name if isinstance(name, str) else repr(func)
