"""The codec property suite: :func:`check_codec` (spec §6), for your own codecs too.

This module imports hypothesis; :mod:`tcpkit.testing` imports it only when
``check_codec`` is first used, so hypothesis is never a runtime dependency.
"""

from __future__ import annotations

import itertools
import reprlib
from collections.abc import Sequence
from typing import Any, TypeVar

try:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st
except ImportError as exc:  # pragma: no cover - exercised in a test with hypothesis hidden
    raise ImportError(
        "tcpkit.testing.check_codec needs hypothesis: pip install hypothesis"
    ) from exc

from ..codecs.base import NEED_DATA, Codec, Decoder
from ..exceptions import FrameTooLarge, IncompleteFrame

__all__ = ["check_codec"]

T = TypeVar("T")

_repr = reprlib.Repr()
_repr.maxstring = 120
_repr.maxother = 120
_repr.maxlist = 12
_repr.maxdict = 12
_repr.maxlevel = 4


def check_codec(
    codec: Codec[T, T],
    messages: st.SearchStrategy[T],
    *,
    max_examples: int | None = None,
    oversized: st.SearchStrategy[bytes] | bytes | None = None,
    framed: bool = True,
    max_messages: int = 10,
) -> None:
    """Check that ``codec`` keeps the codec contract, with hypothesis.

    Call it from an ordinary test::

        def test_my_codec() -> None:
            check_codec(MyCodec(), st.binary(max_size=100), oversized=b"\\xff" * 9)

    One hypothesis test checks every property below on each example: a list
    of messages drawn from ``messages`` and random splits of their encoded
    bytes (empty and one-byte chunks included). The first property that fails
    raises, after hypothesis has shrunk the example, which it prints.

    - **round trip**: encoding the messages and decoding the bytes gives the
      same messages, of the same types; ``eof()`` then raises nothing; two
      decoders of the codec share no state.
    - **re-chunking**: any split of the byte stream, one byte at a time
      included, decodes to the same messages.
    - **limits** (with ``oversized``): the messages followed by ``oversized``
      raise :class:`~tcpkit.FrameTooLarge` however the bytes are split, without
      waiting for the end of the stream; the messages before it decode first.
    - **codec switch**: after any number of decoded messages,
      ``take_pending()`` hands over every undecoded byte: a fresh decoder fed
      those bytes and the rest of the stream decodes the remaining messages,
      and the old decoder is left empty.
    - **end of stream** (framed codecs): a stream cut inside a frame decodes
      the whole messages before the cut, then ``eof()`` raises
      :class:`~tcpkit.IncompleteFrame`.
    - **message in progress** (framed codecs whose decoder overrides
      ``Decoder.in_progress``): it is false at every message boundary and
      true once part of a frame is buffered (``message_timeout`` relies on it).

    Args:
        codec: the codec under test (a prototype: it is asked for many decoders
            and encoders).
        messages: a hypothesis strategy of single messages that the codec must
            carry unchanged (within its limits, without its separators...).
        max_examples: how many examples to check; ``None`` keeps the current
            hypothesis profile's setting.
        oversized: bytes (or a strategy of bytes) that must raise
            ``FrameTooLarge`` before the end of the stream. Give only the start
            of an oversized frame (a length header over the limit, a line longer
            than ``max_length`` without its terminator): that also proves the
            decoder does not wait for, and buffer, the whole frame. ``None``
            skips the limits property.
        framed: ``False`` for a codec without message boundaries, such as
            :class:`~tcpkit.Raw`: messages must then be ``bytes``, only their
            concatenation is compared, and the end-of-stream property is skipped.
        max_messages: the longest list of messages drawn per example.

    Raises:
        AssertionError: a property does not hold; the message names the
            property, the codec and what differed.
        TypeError: ``codec`` is not a :class:`~tcpkit.codecs.Codec`.
    """
    if not isinstance(codec, Codec):  # pyright: ignore[reportUnnecessaryIsInstance]
        raise TypeError(f"check_codec expects a Codec instance, got {codec!r}")
    big = st.just(oversized) if isinstance(oversized, bytes) else oversized
    suite = _Suite(codec, framed, big)

    def codec_properties(messages: list[Any], data: st.DataObject) -> None:
        suite.check(messages, data)

    # Hypothesis keys its example database on the test function; adding the
    # codec to the key (as its pytest plugin does for parametrized tests) gives
    # each codec its own saved failures.
    codec_properties._hypothesis_internal_add_digest = repr(codec).encode()  # type: ignore[attr-defined]
    test = given(st.lists(messages, max_size=max_messages), st.data())(codec_properties)
    _settings(max_examples)(test)()


def _reports_progress(decoder: Decoder[Any]) -> bool:
    """Whether the decoder says when a message is in progress (overrides ``in_progress``)."""
    return type(decoder).in_progress is not Decoder.in_progress


def _settings(max_examples: int | None) -> settings:
    parent = settings()  # the current profile
    checks = [*parent.suppress_health_check, HealthCheck.too_slow, HealthCheck.data_too_large]
    # One AssertionError (the first property that fails), not an exception group.
    options: dict[str, Any] = {
        "deadline": None,
        "suppress_health_check": checks,
        "report_multiple_bugs": False,
    }
    if max_examples is not None:
        options["max_examples"] = max_examples
    return settings(parent, **options)


def _chunkings(stream: bytes) -> st.SearchStrategy[list[bytes]]:
    """Splits of ``stream`` into chunks, empty chunks included."""
    size = len(stream)

    def split(cuts: list[int]) -> list[bytes]:
        bounds = [0, *sorted(cuts), size]
        return [stream[a:b] for a, b in itertools.pairwise(bounds)]

    return st.lists(st.integers(0, size), max_size=min(size + 2, 64)).map(split)


class _Suite:
    """The properties, bound to one codec."""

    def __init__(
        self, codec: Codec[Any, Any], framed: bool, oversized: st.SearchStrategy[bytes] | None
    ) -> None:
        self.codec = codec
        self.framed = framed
        self.oversized = oversized

    def check(self, messages: list[Any], data: st.DataObject) -> None:
        self.round_trip(messages)
        self.rechunking(messages, data)
        self.codec_switch(messages, data)
        if self.oversized is not None:
            self.limits(messages, data.draw(self.oversized, label="oversized"), data)
        if self.framed and messages:
            self.end_of_stream(messages, data)
        if self.framed and _reports_progress(self.codec.decoder()):
            self.progress(messages, data)

    # -- helpers -------------------------------------------------------------

    def fail(self, prop: str, problem: str) -> AssertionError:
        return AssertionError(f"{self.codec!r} breaks the {prop} property: {problem}")

    def encode(self, prop: str, messages: Sequence[Any]) -> list[bytes]:
        encoder = self.codec.encoder()
        encoded: list[bytes] = []
        for message in messages:
            try:
                data = encoder.encode(message)
            except Exception as exc:
                raise self.fail(
                    prop,
                    f"encoding {_repr.repr(message)} (drawn from the messages strategy) "
                    f"raised {exc!r}",
                ) from exc
            if not isinstance(data, bytes):  # pyright: ignore[reportUnnecessaryIsInstance]
                raise self.fail(prop, f"the encoder returned {type(data).__name__}, not bytes")
            encoded.append(data)
        return encoded

    def decode(
        self, prop: str, decoder: Decoder[Any], chunks: Sequence[bytes], eof: bool = True
    ) -> list[Any]:
        got: list[Any] = []
        try:
            for chunk in chunks:
                got += decoder.feed(chunk)
            if eof:
                got += decoder.eof()
        except Exception as exc:
            raise self.fail(
                prop,
                f"decoding valid bytes raised {exc!r} (after {len(got)} messages; "
                f"chunks {_repr.repr(list(chunks))})",
            ) from exc
        return got

    def same(self, prop: str, expected: Sequence[Any], got: Sequence[Any], context: str) -> None:
        if not self.framed:
            want, have = b"".join(expected), b"".join(got)
            if want != have:
                raise self.fail(
                    prop, f"{context}: the bytes {_repr.repr(have)} != {_repr.repr(want)}"
                )
            return
        if list(got) != list(expected):
            raise self.fail(
                prop,
                f"{context}: decoded {_repr.repr(list(got))}, "
                f"expected {_repr.repr(list(expected))}",
            )
        for want_item, got_item in zip(expected, got, strict=True):
            if type(got_item) is not type(want_item):
                raise self.fail(
                    prop,
                    f"{context}: decoded a {type(got_item).__name__} for the "
                    f"{type(want_item).__name__} {_repr.repr(want_item)}",
                )

    # -- the properties ---------------------------------------------------------

    def round_trip(self, messages: list[Any]) -> None:
        prop = "round trip"
        stream = b"".join(self.encode(prop, messages))
        half = len(stream) // 2
        first = self.codec.decoder()
        second = self.codec.decoder()
        if first is second:
            raise self.fail(prop, "decoder() returned the same decoder twice (it must be fresh)")
        if self.codec.encoder() is self.codec.encoder():
            raise self.fail(prop, "encoder() returned the same encoder twice (it must be fresh)")
        got_first = self.decode(prop, first, [stream[:half]], eof=False)
        self.same(prop, messages, self.decode(prop, second, [stream]), "the whole stream at once")
        got_first += self.decode(prop, first, [stream[half:]])
        self.same(
            prop,
            messages,
            got_first,
            "in two halves, with another decoder of the codec used in between "
            "(decoders must share no state)",
        )

    def rechunking(self, messages: list[Any], data: st.DataObject) -> None:
        prop = "re-chunking"
        stream = b"".join(self.encode(prop, messages))
        chunks = data.draw(_chunkings(stream), label="chunks")
        got = self.decode(prop, self.codec.decoder(), chunks)
        self.same(prop, messages, got, f"split as {_repr.repr(chunks)}")
        single = [stream[i : i + 1] for i in range(len(stream))]
        got = self.decode(prop, self.codec.decoder(), single)
        self.same(prop, messages, got, "one byte at a time")

    def limits(self, messages: list[Any], oversized: bytes, data: st.DataObject) -> None:
        prop = "limits"
        stream = b"".join(self.encode(prop, messages)) + oversized
        chunks = data.draw(_chunkings(stream), label="chunks")
        decoder = self.codec.decoder()
        got: list[Any] = []
        try:
            for chunk in chunks:
                decoder.push(chunk)
                while (message := decoder.next_message()) is not NEED_DATA:
                    got.append(message)
        except FrameTooLarge:
            self.same(prop, messages, got, "the messages before the oversized frame")
            return
        except Exception as exc:
            raise self.fail(
                prop,
                f"the oversized input raised {exc!r} instead of FrameTooLarge "
                f"(chunks {_repr.repr(chunks)})",
            ) from exc
        raise self.fail(
            prop,
            f"no FrameTooLarge before the end of the stream with {_repr.repr(oversized)} "
            f"split as {_repr.repr(chunks)}: the decoder is holding an oversized frame",
        )

    def codec_switch(self, messages: list[Any], data: st.DataObject) -> None:
        prop = "codec switch"
        stream = b"".join(self.encode(prop, messages))
        chunks = data.draw(_chunkings(stream), label="chunks")
        switch_after = data.draw(st.integers(0, len(messages)), label="switch_after")
        first = self.codec.decoder()
        before: list[Any] = []
        fed = 0
        try:
            while len(before) < switch_after:
                message = first.next_message()
                if message is not NEED_DATA:
                    before.append(message)
                elif fed < len(chunks):
                    first.push(chunks[fed])
                    fed += 1
                else:
                    break
        except Exception as exc:
            raise self.fail(prop, f"decoding valid bytes raised {exc!r}") from exc
        pending = first.take_pending()
        if not isinstance(pending, bytes):  # pyright: ignore[reportUnnecessaryIsInstance]
            raise self.fail(prop, f"take_pending() returned {type(pending).__name__}, not bytes")
        left = first.take_pending()
        if left or first.next_message() is not NEED_DATA:
            raise self.fail(prop, "the decoder still holds data after take_pending()")
        second = self.codec.decoder()
        after = self.decode(prop, second, [pending, *chunks[fed:]])
        context = f"switching after {len(before)} messages, {len(pending)} bytes pending"
        if self.framed:
            self.same(prop, messages[: len(before)], before, context + " (before the switch)")
            self.same(prop, messages[len(before) :], after, context + " (after the switch)")
        else:
            self.same(prop, messages, before + after, context)

    def progress(self, messages: list[Any], data: st.DataObject) -> None:
        """``in_progress`` is false at every message boundary, true inside a frame."""
        prop = "message in progress"
        encoded = self.encode(prop, messages)
        decoder = self.codec.decoder()
        for index, frame in enumerate(encoded):
            cut = data.draw(st.integers(0, len(frame)), label=f"cut_{index}")
            self.decode(prop, decoder, [frame[:cut]], eof=False)
            if decoder.in_progress != (0 < cut < len(frame)):
                raise self.fail(
                    prop,
                    f"in_progress is {decoder.in_progress} after {cut} of the {len(frame)} "
                    f"bytes of message #{index}",
                )
            self.decode(prop, decoder, [frame[cut:]], eof=False)
            if decoder.in_progress:
                raise self.fail(prop, f"in_progress is still true after message #{index}")

    def end_of_stream(self, messages: list[Any], data: st.DataObject) -> None:
        prop = "end of stream"
        encoded = self.encode(prop, messages)
        candidates = [i for i, frame in enumerate(encoded) if len(frame) >= 2]
        if not candidates:
            return
        index = data.draw(st.sampled_from(candidates), label="cut_message")
        frame = encoded[index]
        cut = data.draw(st.integers(1, len(frame) - 1), label="cut_at")
        stream = b"".join(encoded[:index]) + frame[:cut]
        chunks = data.draw(_chunkings(stream), label="chunks")
        decoder = self.codec.decoder()
        got = self.decode(prop, decoder, chunks, eof=False)
        context = f"the stream cut after {cut} of the {len(frame)} bytes of message #{index}"
        self.same(prop, messages[:index], got, context)
        try:
            rest = decoder.eof()
        except IncompleteFrame:
            return
        except Exception as exc:
            raise self.fail(prop, f"{context}: eof() raised {exc!r}, not IncompleteFrame") from exc
        raise self.fail(
            prop,
            f"{context}: eof() returned {_repr.repr(rest)} instead of raising IncompleteFrame "
            "(a partial frame must not be dropped silently)",
        )
