"""The codec protocol: typed, sans-IO framing ("filters" in POE).

A :class:`Codec` is a factory. Each connection asks it for its own
:class:`Decoder` (bytes in, messages out) and :class:`Encoder` (messages in,
bytes out), so no state is ever shared between connections and a codec
instance can serve as a prototype.

Decoders work one message at a time (:meth:`Decoder.next_message`), so that a
connection that switches codecs after a message hands every byte after that
message to the new codec (:meth:`Decoder.take_pending`). :meth:`Decoder.feed`
is the convenient whole-batch form.

Nothing in this package imports an I/O library or touches a socket.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, Final, Generic, TypeAlias, TypeVar, Union, cast

from ..exceptions import FrameError, IncompleteFrame

__all__ = [
    "NEED_DATA",
    "Codec",
    "CodecSpec",
    "Decoder",
    "Encoder",
    "Layer",
    "NeedData",
    "Stacked",
    "resolve_codec",
]

T_co = TypeVar("T_co", covariant=True)
T_contra = TypeVar("T_contra", contravariant=True)
In_co = TypeVar("In_co", covariant=True)
Out_contra = TypeVar("Out_contra", contravariant=True)
LoIn_contra = TypeVar("LoIn_contra", contravariant=True)
HiIn_co = TypeVar("HiIn_co", covariant=True)
HiOut_contra = TypeVar("HiOut_contra", contravariant=True)
LoOut_co = TypeVar("LoOut_co", covariant=True)
X = TypeVar("X")
Y = TypeVar("Y")
I = TypeVar("I")  # noqa: E741
O = TypeVar("O")  # noqa: E741


class NeedData(enum.Enum):
    """The type of :data:`NEED_DATA`."""

    NEED_DATA = "NEED_DATA"

    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA: Final = NeedData.NEED_DATA
"""Returned by :meth:`Decoder.next_message` when no complete message is buffered
(and by a :class:`Layer` that drops a message)."""


class Decoder(ABC, Generic[T_co]):
    """Turns a byte stream into messages; one instance per connection.

    Subclasses implement :meth:`push`, :meth:`next_message` and
    :meth:`take_pending`. A decoder must keep its buffer bounded: when the
    undecoded bytes can no longer become a valid frame within the codec's
    limit, :meth:`next_message` raises :class:`~tcpkit.FrameTooLarge`,
    whatever way the bytes were split.
    """

    __slots__ = ()

    @abstractmethod
    def push(self, data: bytes) -> None:
        """Append received bytes to the buffer (decodes nothing yet)."""

    @abstractmethod
    def next_message(self) -> T_co | NeedData:
        """Decode and return the next complete message, or :data:`NEED_DATA`.

        Raises:
            FrameError: the buffered bytes are malformed or too large. The bad
                frame is consumed (or discarded up to the next frame boundary), so
                decoding may go on afterwards.
        """

    @abstractmethod
    def take_pending(self) -> bytes:
        """Remove and return every byte not yet decoded (for a codec switch)."""

    @property
    def in_progress(self) -> bool:
        """Whether a message has begun and is not complete yet.

        ``True`` once bytes of a frame are buffered (or an oversized one is
        being skipped) and :meth:`next_message` has no whole message to give;
        ``False`` when everything buffered has been decoded. A connection's
        ``message_timeout`` runs from the first byte of such a message.

        This default says ``False`` always: a decoder that does not override
        it takes no part in ``message_timeout``. The built-in codecs do;
        :func:`tcpkit.testing.check_codec` checks a decoder that overrides it.
        """
        return False

    def feed(self, data: bytes) -> list[T_co]:
        """Push ``data`` and return every message that is now complete.

        Raises:
            FrameError: a bad frame. The messages decoded before it in this call
                are not lost: they are in the exception's ``decoded`` attribute,
                and decoding may go on with the next call.
        """
        self.push(data)
        messages: list[T_co] = []
        try:
            while (message := self.next_message()) is not NEED_DATA:
                messages.append(message)
        except FrameError as exc:
            exc.decoded = list(messages)
            raise
        return messages

    def eof(self) -> list[T_co]:
        """Signal end of stream: return the last messages, or raise on a partial frame.

        Raises:
            IncompleteFrame: bytes remain that do not make a whole frame.
        """
        messages = self.feed(b"")
        pending = self.take_pending()
        if pending:
            raise IncompleteFrame(len(pending))
        return messages


class Encoder(ABC, Generic[T_contra]):
    """Turns one message into bytes; one instance per connection."""

    __slots__ = ()

    @abstractmethod
    def encode(self, message: T_contra) -> bytes:
        """Return the bytes for ``message``.

        Raises:
            EncodeError: ``message`` cannot be encoded by this codec.
        """


class Codec(ABC, Generic[In_co, Out_contra]):
    """A framing: a factory of per-connection decoders and encoders.

    ``In_co`` is the type of the messages handlers receive, ``Out_contra`` the
    type of the messages they may send. ``codec | layer`` stacks a
    :class:`Layer` on top (POE's Filter::Stackable).
    """

    @abstractmethod
    def decoder(self) -> Decoder[In_co]:
        """Return a fresh decoder (no state shared with any other)."""

    @abstractmethod
    def encoder(self) -> Encoder[Out_contra]:
        """Return a fresh encoder (no state shared with any other)."""

    def __or__(self, layer: Layer[In_co, X, Y, Out_contra]) -> Codec[X, Y]:
        return Stacked(self, layer)


class Layer(ABC, Generic[LoIn_contra, HiIn_co, HiOut_contra, LoOut_co]):
    """A message-to-message transformation stacked on a codec with ``|``.

    ``decode`` maps a message of the codec below to a message for the handlers
    (or :data:`NEED_DATA` to drop it); ``encode`` maps a message from the
    handlers to a message for the codec below (or :data:`NEED_DATA` to drop
    it). Layers hold no per-connection state.
    """

    @abstractmethod
    def decode(self, message: LoIn_contra) -> HiIn_co | NeedData:
        """Transform one decoded message (raise :class:`~tcpkit.FrameError` if it is bad)."""

    @abstractmethod
    def encode(self, message: HiOut_contra) -> LoOut_co | NeedData:
        """Transform one message on its way out."""

    def __or__(
        self, other: Layer[HiIn_co, X, Y, HiOut_contra]
    ) -> Layer[LoIn_contra, X, Y, LoOut_co]:
        return _LayerPair(self, other)


class _LayerPair(Layer[Any, Any, Any, Any]):
    def __init__(self, lower: Layer[Any, Any, Any, Any], upper: Layer[Any, Any, Any, Any]) -> None:
        self.lower = lower
        self.upper = upper

    def decode(self, message: Any) -> Any:
        message = self.lower.decode(message)
        return message if message is NEED_DATA else self.upper.decode(message)

    def encode(self, message: Any) -> Any:
        message = self.upper.encode(message)
        return message if message is NEED_DATA else self.lower.encode(message)

    def __repr__(self) -> str:
        return f"{self.lower!r} | {self.upper!r}"


class Stacked(Codec[X, Y]):
    """A codec with a layer on top; built by ``codec | layer``."""

    def __init__(self, codec: Codec[Any, Any], layer: Layer[Any, X, Y, Any]) -> None:
        self.codec = codec
        self.layer = layer

    def decoder(self) -> Decoder[X]:
        return _StackedDecoder(self.codec.decoder(), self.layer)

    def encoder(self) -> Encoder[Y]:
        return _StackedEncoder(self.codec.encoder(), self.layer)

    def __repr__(self) -> str:
        return f"{self.codec!r} | {self.layer!r}"


class _StackedDecoder(Decoder[X]):
    __slots__ = ("_inner", "_layer")

    def __init__(self, inner: Decoder[Any], layer: Layer[Any, X, Any, Any]) -> None:
        self._inner = inner
        self._layer = layer

    def push(self, data: bytes) -> None:
        self._inner.push(data)

    def next_message(self) -> X | NeedData:
        while True:
            message = self._inner.next_message()
            if message is NEED_DATA:
                return NEED_DATA
            decoded = self._layer.decode(message)
            if decoded is not NEED_DATA:
                return decoded

    def take_pending(self) -> bytes:
        return self._inner.take_pending()

    @property
    def in_progress(self) -> bool:
        return self._inner.in_progress


class _StackedEncoder(Encoder[Y]):
    __slots__ = ("_inner", "_layer")

    def __init__(self, inner: Encoder[Any], layer: Layer[Any, Any, Y, Any]) -> None:
        self._inner = inner
        self._layer = layer

    def encode(self, message: Y) -> bytes:
        lowered = self._layer.encode(message)
        return b"" if lowered is NEED_DATA else self._inner.encode(lowered)


CodecSpec: TypeAlias = Union[
    "Codec[I, O]",
    "type[Codec[I, O]]",
    "tuple[Callable[..., Codec[I, O]], dict[str, Any]]",
]
"""What ``App(codec=...)`` accepts: an instance, a class, or ``(class, kwargs)``."""


def resolve_codec(spec: CodecSpec[I, O]) -> Codec[I, O]:
    """Turn a codec, a codec class, or a ``(class, kwargs)`` pair into a codec instance.

    Raises:
        TypeError: ``spec`` is none of those.
    """
    obj = cast(object, spec)  # checked at run time: callers may pass anything
    if isinstance(obj, Codec):
        return obj  # pyright: ignore[reportUnknownVariableType]
    if isinstance(obj, tuple) and len(obj) == 2:  # pyright: ignore[reportUnknownArgumentType]
        factory, kwargs = obj  # pyright: ignore[reportUnknownVariableType]
        codec = cast(object, factory(**kwargs))
    elif isinstance(obj, type):
        codec = obj()
    else:
        raise TypeError(f"expected a Codec, a Codec class or (class, kwargs), got {spec!r}")
    if not isinstance(codec, Codec):
        raise TypeError(f"{spec!r} did not produce a Codec")
    return codec  # pyright: ignore[reportUnknownVariableType]
