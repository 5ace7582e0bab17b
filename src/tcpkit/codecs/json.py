"""JSON values over any framing (POE::Filter::Reference, with JSON as the serialiser)."""

from __future__ import annotations

import json
from typing import Any, Generic, TypeVar, overload

from ..exceptions import EncodeError, MalformedFrame
from .base import Layer

__all__ = ["Json"]

W = TypeVar("W", str, bytes)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


class Json(Layer[str | bytes, Any, Any, W], Generic[W]):
    """A layer of JSON values: stack it on a framing codec, as in ``Lines() | Json()``.

    Each frame below is one JSON text; handlers receive the decoded value
    (``dict``, ``list``, ``str``, ``int``, ``float``, ``bool`` or ``None``) and
    send any value :func:`json.dumps` accepts. Output is compact (no spaces)
    and strict RFC 8259 JSON: ``NaN`` and ``Infinity`` are refused both ways.
    Text frames (``str``) and binary frames (UTF-8 ``bytes``) are both decoded.

    Args:
        wire_type: what the layer hands to the codec below: ``str`` (the
            default, for ``Lines()``) or ``bytes`` (UTF-8, for the binary
            framings such as ``LengthPrefixed() | Json(bytes)``).
        ensure_ascii: escape every non-ASCII character (the default), so the
            output fits any text encoding and any line terminator.
        sort_keys: write object keys in sorted order.

    Raises:
        TypeError: ``wire_type`` is neither ``str`` nor ``bytes``.
    """

    @overload
    def __init__(
        self: Json[str],
        wire_type: type[str] = str,
        *,
        ensure_ascii: bool = True,
        sort_keys: bool = False,
    ) -> None: ...

    @overload
    def __init__(
        self: Json[bytes],
        wire_type: type[bytes],
        *,
        ensure_ascii: bool = True,
        sort_keys: bool = False,
    ) -> None: ...

    def __init__(
        self,
        wire_type: type[str] | type[bytes] = str,
        *,
        ensure_ascii: bool = True,
        sort_keys: bool = False,
    ) -> None:
        if wire_type is not str and wire_type is not bytes:
            raise TypeError(f"wire_type must be str or bytes, got {wire_type!r}")
        self.wire_type = wire_type
        self.ensure_ascii = ensure_ascii
        self.sort_keys = sort_keys
        self._binary = wire_type is bytes
        self._decoder = json.JSONDecoder(parse_constant=_reject_constant)
        self._encoder = json.JSONEncoder(
            separators=(",", ":"), ensure_ascii=ensure_ascii, allow_nan=False, sort_keys=sort_keys
        )

    def decode(self, message: str | bytes) -> Any:
        """Parse one JSON text.

        Raises:
            MalformedFrame: the frame is not valid UTF-8 or not exactly one JSON
                value (nesting too deep for the parser included).
        """
        try:
            if isinstance(message, (bytes, bytearray)):
                message = message.decode("utf-8")
            return self._decoder.decode(message)
        except UnicodeDecodeError as exc:
            raise MalformedFrame(f"JSON frame is not valid UTF-8: {exc.reason}") from exc
        except ValueError as exc:  # JSONDecodeError, NaN/Infinity, integers over the digit limit
            raise MalformedFrame(f"invalid JSON: {exc}") from exc
        except RecursionError as exc:
            raise MalformedFrame("JSON value is nested too deeply") from exc

    def encode(self, message: Any) -> W:
        """Serialise one value (``str``, or UTF-8 ``bytes`` with ``wire_type=bytes``).

        Raises:
            EncodeError: the value is not JSON-serialisable (an unsupported type,
                a circular reference, NaN or an infinity, nesting too deep).
        """
        try:
            text = self._encoder.encode(message)
            return text.encode("utf-8") if self._binary else text  # type: ignore[return-value]
        except (TypeError, ValueError, RecursionError) as exc:
            raise EncodeError(f"cannot encode as JSON: {exc}") from exc

    def __repr__(self) -> str:
        wire = "" if self.wire_type is str else "bytes"
        options = [wire] if wire else []
        if not self.ensure_ascii:
            options.append("ensure_ascii=False")
        if self.sort_keys:
            options.append("sort_keys=True")
        return f"Json({', '.join(options)})"
