"""A minimal RESP2/RESP3 client for the tests of examples/resp.py (any anyio backend)."""

from __future__ import annotations

from typing import Any

import anyio
import anyio.abc


class ErrorReply(str):
    """An error reply (``-ERR ...``), as its text."""


def encode_command(*args: bytes | str | int) -> bytes:
    """One command as a RESP array of bulk strings."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


class Incomplete(Exception):
    pass


def parse(buf: bytes | bytearray, pos: int = 0) -> tuple[Any, int]:
    """Parse one reply at ``pos``; return it and the position after it.

    Raises:
        Incomplete: the reply is not all there yet.
    """
    end = buf.find(b"\r\n", pos)
    if end < 0:
        raise Incomplete
    kind, line, after = buf[pos : pos + 1], bytes(buf[pos + 1 : end]), end + 2
    if kind == b"+":
        return line.decode(), after
    if kind == b"-":
        return ErrorReply(line.decode()), after
    if kind == b":":
        return int(line), after
    if kind == b"_":
        return None, after
    if kind == b"#":
        return line == b"t", after
    if kind == b",":
        return float(line), after
    if kind == b"$":
        size = int(line)
        if size < 0:
            return None, after
        if len(buf) < after + size + 2:
            raise Incomplete
        assert buf[after + size : after + size + 2] == b"\r\n"
        return bytes(buf[after : after + size]), after + size + 2
    if kind in (b"*", b"%"):
        count = int(line)
        if count < 0:
            return None, after
        items: list[Any] = []
        for _ in range(count * (2 if kind == b"%" else 1)):
            item, after = parse(buf, after)
            items.append(item)
        if kind == b"%":
            return dict(zip(items[::2], items[1::2], strict=True)), after
        return items, after
    raise AssertionError(f"unexpected reply type {kind!r} in {bytes(buf[pos : pos + 40])!r}")


class RespClient:
    """Send commands, read replies; every read is bounded by a timeout."""

    def __init__(self, stream: anyio.abc.ByteStream) -> None:
        self.stream = stream
        self.buffer = bytearray()

    @classmethod
    async def connect(cls, port: int) -> RespClient:
        return cls(await anyio.connect_tcp("127.0.0.1", port))

    async def send_raw(self, data: bytes) -> None:
        await self.stream.send(data)

    async def command(self, *args: bytes | str | int) -> Any:
        await self.send_raw(encode_command(*args))
        return await self.reply()

    async def reply(self, timeout: float = 10) -> Any:
        with anyio.fail_after(timeout):
            while True:
                try:
                    value, used = parse(self.buffer)
                except Incomplete:
                    self.buffer += await self.stream.receive()
                    continue
                del self.buffer[:used]
                return value

    async def replies(self, count: int, timeout: float = 10) -> list[Any]:
        return [await self.reply(timeout) for _ in range(count)]

    async def closed(self, timeout: float = 10) -> bool:
        """True once the server has closed the connection (after any buffered bytes)."""
        with anyio.fail_after(timeout):
            try:
                while True:
                    self.buffer += await self.stream.receive()
            except (anyio.EndOfStream, anyio.BrokenResourceError, OSError):
                return True

    async def aclose(self) -> None:
        await self.stream.aclose()

    async def __aenter__(self) -> RespClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
