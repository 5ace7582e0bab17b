"""Drop the messages a predicate rejects (POE::Filter::Grep)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from ..exceptions import EncodeError, FrameError, MalformedFrame
from .base import NEED_DATA, Layer, NeedData

__all__ = ["Filter"]

T = TypeVar("T")


class Filter(Layer[T, T, T, T]):
    """A layer that lets through only the messages a predicate accepts.

    ``Filter(predicate)`` applies to both directions (a rejected message in is
    never handled, a rejected message out is never sent). ``decode=`` and
    ``encode=`` give a direction its own predicate instead; a direction with no
    predicate lets everything through, as POE::Filter::Grep's ``Get`` and ``Put``.

    A predicate that raises on input becomes a :class:`~tcpkit.MalformedFrame`
    (a :class:`~tcpkit.FrameError` passes through as it is); on output, an
    :class:`~tcpkit.EncodeError`.

    Args:
        predicate: keeps a message when it returns a true value.
        decode: the predicate of incoming messages (overrides ``predicate``).
        encode: the predicate of outgoing messages (overrides ``predicate``).

    Raises:
        TypeError: no predicate at all was given.
    """

    def __init__(
        self,
        predicate: Callable[[T], object] | None = None,
        *,
        decode: Callable[[T], object] | None = None,
        encode: Callable[[T], object] | None = None,
    ) -> None:
        if predicate is None and decode is None and encode is None:
            raise TypeError("Filter needs a predicate (or decode=/encode= predicates)")
        self._keep_in = decode if decode is not None else predicate
        self._keep_out = encode if encode is not None else predicate

    def decode(self, message: T) -> T | NeedData:
        """Return ``message``, or :data:`~tcpkit.codecs.NEED_DATA` to drop it.

        Raises:
            MalformedFrame: the predicate raised (a ``FrameError`` is re-raised as is).
        """
        keep = self._keep_in
        if keep is None:
            return message
        try:
            return message if keep(message) else NEED_DATA
        except FrameError:
            raise
        except Exception as exc:
            raise MalformedFrame(f"Filter predicate failed: {exc!r}") from exc

    def encode(self, message: T) -> T | NeedData:
        """Return ``message``, or :data:`~tcpkit.codecs.NEED_DATA` to drop it (nothing is sent).

        Raises:
            EncodeError: the predicate raised.
        """
        keep = self._keep_out
        if keep is None:
            return message
        try:
            return message if keep(message) else NEED_DATA
        except EncodeError:
            raise
        except Exception as exc:
            raise EncodeError(f"Filter predicate failed: {exc!r}") from exc

    def __repr__(self) -> str:
        return f"Filter(decode={_name(self._keep_in)}, encode={_name(self._keep_out)})"


def _name(func: object) -> str:
    if func is None:
        return "None"
    name = getattr(func, "__qualname__", None)
    return name if isinstance(name, str) else repr(func)
