"""Helpers to test tcpkit apps and codecs.

:class:`TestClient` (and :class:`TestServer` for several clients) drives an
app through its real pipeline over in-memory streams, on asyncio or trio;
:func:`live_server` serves it on loopback for tests that need a real socket.
:class:`MemoryListener` is the in-memory listener under them, for tests that
want to serve an app to in-memory streams of their own.

:func:`check_codec` is the property suite for codecs, and :func:`fuzz_app`
(with :func:`fuzz_scripts` and :class:`FuzzScript`) fuzzes an app with
abusive clients. They need hypothesis (``pip install hypothesis``), imported
on first use, so ``import tcpkit.testing`` works without it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._client import LiveServer, TestClient, TestServer, client_codec, live_server
from ._memory import MemoryByteStream, MemoryListener, memory_stream_pair

if TYPE_CHECKING:
    from ._codecs import check_codec
    from ._fuzz import FuzzAction, FuzzFailure, FuzzScript, fuzz_app, fuzz_scripts

__all__ = [
    "FuzzAction",
    "FuzzFailure",
    "FuzzScript",
    "LiveServer",
    "MemoryByteStream",
    "MemoryListener",
    "TestClient",
    "TestServer",
    "check_codec",
    "client_codec",
    "fuzz_app",
    "fuzz_scripts",
    "live_server",
    "memory_stream_pair",
]


_FUZZ_NAMES = frozenset({"FuzzAction", "FuzzFailure", "FuzzScript", "fuzz_app", "fuzz_scripts"})


def __getattr__(name: str) -> Any:
    if name == "check_codec":
        from ._codecs import check_codec

        return check_codec
    if name in _FUZZ_NAMES:
        from . import _fuzz

        return getattr(_fuzz, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
