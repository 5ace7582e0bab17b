"""check_codec itself: it passes good codecs (see test_codec_conformance) and catches bad ones."""

from __future__ import annotations

import importlib
import sys
from typing import Any

import pytest
from hypothesis import strategies as st

import tcpkit.testing
from tcpkit import FrameTooLarge, IncompleteFrame, Lines, Raw
from tcpkit.codecs import NEED_DATA, Codec, Decoder, Encoder, NeedData
from tcpkit.testing import check_codec

FAST = 60  # examples: enough to find these bugs, quick to run

# A correct codec to break in various ways: "<n>:" + n bytes (no limit check).


class _Encoder(Encoder[bytes]):
    def encode(self, message: bytes) -> bytes:
        return b"%d:%s" % (len(message), message)


class _Decoder(Decoder[bytes]):
    def __init__(self) -> None:
        self.buf = b""

    def push(self, data: bytes) -> None:
        self.buf += data

    def next_message(self) -> bytes | NeedData:
        head, colon, rest = self.buf.partition(b":")
        if not colon:
            return NEED_DATA
        size = int(head)
        if len(rest) < size:
            return NEED_DATA
        self.buf = rest[size:]
        return rest[:size]

    def take_pending(self) -> bytes:
        pending, self.buf = self.buf, b""
        return pending


class Good(Codec[bytes, bytes]):
    decoder_class: type[_Decoder] = _Decoder

    def decoder(self) -> Decoder[bytes]:
        return self.decoder_class()

    def encoder(self) -> Encoder[bytes]:
        return _Encoder()

    def __repr__(self) -> str:
        return type(self).__name__ + "()"


def test_the_reference_codec_passes() -> None:
    check_codec(Good(), st.binary(max_size=20), max_examples=FAST)


class DropsPartialFrameAtEof(Good):
    class decoder_class(_Decoder):
        def eof(self) -> list[bytes]:
            messages = self.feed(b"")
            self.take_pending()
            return messages


class LosesPendingBytes(Good):
    class decoder_class(_Decoder):
        def take_pending(self) -> bytes:
            pending, self.buf = self.buf[1:], b""
            return pending

        def eof(self) -> list[bytes]:
            messages = self.feed(b"")
            if self.buf:
                raise IncompleteFrame(len(self.buf))
            return messages


class AssumesWholeFrames(Good):
    class decoder_class(_Decoder):
        def push(self, data: bytes) -> None:
            if data:  # keeps only the last chunk
                self.buf = self.buf if b":" not in data else data


class SharedState(Good):
    def __init__(self) -> None:
        self.shared = _Decoder()

    def decoder(self) -> Decoder[bytes]:
        return self.shared


class NoLimit(Good):
    pass


class LimitOnlyWhole(Good):
    """Checks the limit only once the whole frame is buffered (too late)."""

    class decoder_class(_Decoder):
        def next_message(self) -> bytes | NeedData:
            head, colon, rest = self.buf.partition(b":")
            if colon and int(head) > 100 and len(rest) >= int(head):
                raise FrameTooLarge(int(head), 100)
            return super().next_message()


class LeaksBytearray(Good):
    class decoder_class(_Decoder):
        def next_message(self) -> Any:
            message = super().next_message()
            return message if message is NEED_DATA else bytearray(message)


class ReportsProgress(Good):
    """The reference codec, saying when a message is in progress (as it should)."""

    class decoder_class(_Decoder):
        @property
        def in_progress(self) -> bool:
            return bool(self.buf)


class ForgetsTheHeader(Good):
    """Says no message is in progress while only its length header is buffered."""

    class decoder_class(_Decoder):
        @property
        def in_progress(self) -> bool:
            return b":" in self.buf


def test_a_codec_that_reports_progress_passes() -> None:
    check_codec(ReportsProgress(), st.binary(max_size=20), max_examples=FAST)


@pytest.mark.parametrize(
    ("codec", "options", "match"),
    [
        (ForgetsTheHeader(), {}, "message in progress"),
        (DropsPartialFrameAtEof(), {}, "end of stream"),
        (LosesPendingBytes(), {}, "codec switch"),
        (AssumesWholeFrames(), {}, "round trip|re-chunking"),
        (SharedState(), {}, "same decoder twice"),
        (NoLimit(), {"oversized": b"1000000:"}, "no FrameTooLarge"),
        (LimitOnlyWhole(), {"oversized": b"1000:" + b"x" * 10}, "no FrameTooLarge"),
        (LeaksBytearray(), {}, "decoded a bytearray"),
        (Raw(), {}, "re-chunking|round trip"),  # Raw is not framed
    ],
    ids=lambda value: value if isinstance(value, str) else None,
)
def test_broken_codecs_are_caught(
    codec: Codec[Any, Any], options: dict[str, Any], match: str
) -> None:
    with pytest.raises(AssertionError, match=match):
        check_codec(codec, st.binary(max_size=20), max_examples=FAST, **options)


def test_messages_the_codec_cannot_encode_are_reported() -> None:
    with pytest.raises(AssertionError, match="drawn from the messages strategy"):
        check_codec(Lines(encoding="ascii"), st.just("caf\u00e9"), max_examples=5)


def test_the_failure_names_the_codec() -> None:
    with pytest.raises(
        AssertionError, match=r"^DropsPartialFrameAtEof\(\) breaks the end of stream"
    ):
        check_codec(DropsPartialFrameAtEof(), st.binary(max_size=20), max_examples=FAST)


def test_not_a_codec() -> None:
    with pytest.raises(TypeError, match="Codec instance"):
        check_codec(Lines, st.text())  # type: ignore[arg-type]


def test_hypothesis_is_imported_lazily_with_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tcpkit, "testing", tcpkit.testing)  # restored afterwards
    monkeypatch.setitem(sys.modules, "hypothesis", None)  # makes "import hypothesis" fail
    monkeypatch.delitem(sys.modules, "tcpkit.testing._codecs")
    monkeypatch.delitem(sys.modules, "tcpkit.testing")
    testing = importlib.import_module("tcpkit.testing")  # works without hypothesis
    with pytest.raises(ImportError, match="pip install hypothesis"):
        testing.check_codec  # noqa: B018


def test_unknown_attribute() -> None:
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        tcpkit.testing.nope  # type: ignore[attr-defined]  # noqa: B018
