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
"""The startup line of ``tcpkit run`` (logged on stderr): ``... running on tcp HOST:PORT ...``."""


class CliServer:
    """``python -m tcpkit run ...`` (or ``command``) in a subprocess; the port comes from the
    startup line.

    tcpkit logs to stderr, the startup line included. This reads stderr from
    its descriptor (never through the buffered text wrapper, so nothing is
    hidden from ``select``) and keeps what it read: :meth:`stop` returns all
    of stderr, :attr:`err` what was read so far.
    """

    def __init__(
        self,
        args: Sequence[str],
        env: dict[str, str] | None = None,
        *,
        cwd: Path | None = None,
        start_new_session: bool = False,
        command: Sequence[str] | None = None,
        pass_fds: Sequence[int] = (),
    ) -> None:
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.proc = subprocess.Popen(
            list(command) if command is not None else [sys.executable, "-m", "tcpkit", *args],
            cwd=cwd or ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=full_env,
            start_new_session=start_new_session,
            pass_fds=tuple(pass_fds),
        )
        self.startup = ""
        self.port = 0
        self._err = b""
        CliServer.started.append(self)

    started: list[CliServer] = []  # noqa: RUF012
    """Every instance, so that a fixture can kill those a failed test left running."""

    def kill(self) -> None:
        """Kill the process if it still runs, and reap it."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.communicate(timeout=10)

    @property
    def err(self) -> str:
        """Everything read from stderr so far."""
        return self._err.decode(errors="replace")

    def wait_for(self, needle: str | re.Pattern[str], count: int = 1, timeout: float = 20) -> str:
        """Read stderr until ``needle`` occurs ``count`` times in all of it; return the text.

        Raises:
            AssertionError: it did not within ``timeout`` seconds, or stderr closed first.
        """
        import selectors

        assert self.proc.stderr is not None
        fd = self.proc.stderr.fileno()

        def found() -> bool:
            text = self.err
            if isinstance(needle, str):
                return text.count(needle) >= count
            return len(needle.findall(text)) >= count

        with selectors.DefaultSelector() as selector:
            selector.register(fd, selectors.EVENT_READ)
            deadline = anyio_time() + timeout
            while not found():
                left = deadline - anyio_time()
                if left <= 0 or not selector.select(timeout=left):
                    raise AssertionError(f"{needle!r} not seen {count} times: {self.err}")
                chunk = os.read(fd, 65536)
                if not chunk:
                    raise AssertionError(f"stderr closed before {needle!r}: {self.err}")
                self._err += chunk
        return self.err

    def wait_started(self, timeout: float = 20) -> int:
        """Wait for the startup line; return the TCP port it names."""
        try:
            text = self.wait_for(STARTUP, 1, timeout)
        except AssertionError:
            self.proc.kill()
            out, err = self.proc.communicate(timeout=10)
            raise AssertionError(
                f"server did not start; stdout={out!r} stderr={self.err + err!r}"
            ) from None
        match = STARTUP.search(text)
        assert match is not None
        line_start = text.rfind("\n", 0, match.start()) + 1
        line_end = text.find("\n", match.end())
        self.startup = text[line_start : line_end if line_end >= 0 else len(text)]
        self.port = int(match["port"])
        return self.port

    def wait_line(self, needle: str, timeout: float = 20) -> str:
        """Wait for a line containing ``needle`` (e.g. a Unix-socket-only startup line)."""
        text = self.wait_for(needle, 1, timeout)
        return next(line for line in text.splitlines() if needle in line)

    def stop(self, sig: int | None = 2, timeout: float = 20) -> tuple[int, str, str]:
        """Send ``sig`` (if still running and not None), wait; return ``(status, stdout, stderr)``.

        The stderr returned is all of it, including what :meth:`wait_for` read.
        """
        if sig is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate(timeout=10)
            raise AssertionError(f"server did not stop; stderr={self.err + err!r}") from None
        return self.proc.returncode, out, self.err + err


def anyio_time() -> float:
    import time

    return time.monotonic()


def run_cli(
    *args: str, timeout: float = 30, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m tcpkit ARGS`` to completion (``env`` adds to the environment)."""
    return subprocess.run(
        [sys.executable, "-m", "tcpkit", *args],
        cwd=cwd or ROOT,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
    )
