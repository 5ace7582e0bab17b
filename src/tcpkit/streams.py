"""Small anyio byte-stream wrappers used during connection setup."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import anyio
import anyio.abc
import anyio.lowlevel

__all__ = ["ReplayStream"]


class ReplayStream(anyio.abc.ByteStream):
    """A byte stream that returns some already-received bytes before reading on.

    Everything else (send, send_eof, aclose, extra attributes such as the
    socket's addresses) is the inner stream's.
    """

    def __init__(self, stream: anyio.abc.ByteStream, pending: bytes) -> None:
        self._stream = stream
        self._pending = pending

    async def receive(self, max_bytes: int = 65536) -> bytes:
        if self._pending:
            await anyio.lowlevel.checkpoint()
            return self._take_pending(max_bytes)
        return await self._stream.receive(max_bytes)

    def _take_pending(self, max_bytes: int) -> bytes:
        """Up to ``max_bytes`` of the bytes still to replay (there are some)."""
        data = self._pending[:max_bytes]
        self._pending = self._pending[max_bytes:]
        return data

    async def send(self, item: bytes) -> None:
        await self._stream.send(item)

    async def send_eof(self) -> None:
        await self._stream.send_eof()

    async def aclose(self) -> None:
        self._pending = b""
        await self._stream.aclose()

    @property
    def extra_attributes(self) -> Mapping[Any, Callable[[], Any]]:
        inner = self._stream
        return inner.extra_attributes  # pyright: ignore[reportUnknownMemberType, reportUnknownVariableType]
