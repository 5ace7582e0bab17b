"""Test helpers: a line client over a real socket, and a subprocess runner for the CLI."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import anyio
import anyio.abc

ROOT = Path(__file__).resolve().parent.parent


class LineClient:
    """A minimal CRLF line client used to talk to servers under test."""

    def __init__(self, stream: anyio.abc.ByteStream) -> None:
        self.stream = stream
        self.buffer = b""

    @classmethod
    async def connect(cls, port: int, host: str = "127.0.0.1") -> LineClient:
        return cls(await anyio.connect_tcp(host, port))

    async def send(self, *lines: str, newline: str = "\r\n") -> None:
        await self.stream.send("".join(line + newline for line in lines).encode())

    async def send_raw(self, data: bytes) -> None:
        await self.stream.send(data)

    async def recv_line(self, timeout: float = 10) -> str:
        """One line without its terminator; raises EOFError if the server closed first."""
        with anyio.fail_after(timeout):
            while b"\n" not in self.buffer:
                try:
                    chunk = await self.stream.receive()
                except (anyio.EndOfStream, anyio.BrokenResourceError) as exc:
                    raise EOFError(f"closed; buffered {self.buffer!r}") from exc
                self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line.removesuffix(b"\r").decode()

    async def recv_lines(self, count: int, timeout: float = 10) -> list[str]:
        return [await self.recv_line(timeout) for _ in range(count)]

    async def recv_until_closed(self, timeout: float = 10) -> bytes:
        """Every byte until the server closes (EOF or reset)."""
        with anyio.fail_after(timeout):
            while True:
                try:
                    self.buffer += await self.stream.receive()
                except (anyio.EndOfStream, anyio.BrokenResourceError, OSError):
                    data, self.buffer = self.buffer, b""
                    return data

    async def send_eof(self) -> None:
        await self.stream.send_eof()

    async def aclose(self) -> None:
        await self.stream.aclose()

    async def __aenter__(self) -> LineClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


STARTUP = re.compile(r"running on \w+ (?:\[(?P<v6>[^\]]+)\]|(?P<host>[\d.]+)):(?P<port>\d+)")


class CliServer:
    """``python -m tcpkit run ...`` in a subprocess; the port is read from the startup line."""

    def __init__(self, args: Sequence[str], env: dict[str, str] | None = None) -> None:
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tcpkit", *args],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=full_env,
        )
        self.startup = ""
        self.port = 0

    def wait_started(self, timeout: float = 20) -> int:
        assert self.proc.stdout is not None
        import selectors

        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        deadline = anyio_time() + timeout
        while anyio_time() < deadline:
            if not sel.select(timeout=max(0.0, deadline - anyio_time())):
                break
            line = self.proc.stdout.readline()
            if not line:
                break
            match = STARTUP.search(line)
            if match:
                self.startup = line
                self.port = int(match["port"])
                return self.port
        self.proc.kill()
        out, err = self.proc.communicate(timeout=10)
        raise AssertionError(f"server did not start; stdout={out!r} stderr={err!r}")

    def stop(self, sig: int = 2, timeout: float = 20) -> tuple[int, str, str]:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate(timeout=10)
            raise AssertionError(f"server did not stop; stderr={err!r}") from None
        return self.proc.returncode, out, err


def anyio_time() -> float:
    import time

    return time.monotonic()


def run_cli(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Run ``python -m tcpkit ARGS`` to completion."""
    return subprocess.run(
        [sys.executable, "-m", "tcpkit", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
