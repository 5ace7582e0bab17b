"""A load that talks to a server continuously through a reload, and what it saw.

Clients run in threads. Each request is one line ``ID`` and each reply is
``VERSION PID ID``; an attempt that ends without its reply (the server shut
the connection down while draining) is retried on a new connection with a
new attempt id. The server app writes every attempt id it handled to a log,
so a *lost reply* is an attempt the server handled whose reply never reached
its client.

A drained connection is closed gracefully (FIN) after tcpkit has read and
dropped what the client still sent (its linger); a client that sends only
after that may get a reset instead of an end of file. Either way its
request was not handled, it is retried, and nothing is lost: ``resets`` is
reported, ``lost`` is what must stay empty.
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

APP_TEMPLATE = """
import os

from tcpkit import App

VERSION = "{version}"
LOG = {log!r}

app = App(name="reloadable")


@app.on_input
def answer(conn, line):
    with open(LOG, "a") as log:
        log.write(line + "\\n")
    conn.put(f"{{VERSION}} {{os.getpid()}} {{line}}")
"""


def write_app(path: Path, version: str, log: Path) -> None:
    """(Re)write the app module: its replies start with ``version``."""
    path.write_text(APP_TEMPLATE.format(version=version, log=str(log)))


@dataclass
class Seen:
    """What the clients saw (updated under ``lock``)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    connects: int = 0
    refused: int = 0
    resets: int = 0
    retried: int = 0
    replies: dict[str, str] = field(default_factory=dict[str, str])  # attempt id -> version
    pids: set[int] = field(default_factory=set[int])
    versions: dict[str, int] = field(default_factory=dict[str, int])
    connect_times: list[float] = field(default_factory=list[float])
    errors: list[str] = field(default_factory=list[str])


class Load:
    """``threads`` clients: half open a connection per request, half keep one open."""

    def __init__(self, port: int, threads: int = 4, unix: str | None = None) -> None:
        self.port = port
        self.unix = unix
        self.seen = Seen()
        self.stop = threading.Event()
        self.threads = [
            threading.Thread(target=self._client, args=(n, n % 2 == 0), daemon=True)
            for n in range(threads)
        ]

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(30)

    def _connect(self) -> socket.socket:
        seen = self.seen
        while True:
            try:
                if self.unix is not None:
                    sock = socket.socket(socket.AF_UNIX)
                    sock.settimeout(30)
                    sock.connect(self.unix)
                else:
                    sock = socket.create_connection(("127.0.0.1", self.port), timeout=30)
            except ConnectionRefusedError:
                with seen.lock:
                    seen.refused += 1
                if self.stop.is_set():
                    raise
                time.sleep(0.01)
                continue
            with seen.lock:
                seen.connects += 1
                seen.connect_times.append(time.monotonic())
            return sock

    def _client(self, number: int, short: bool) -> None:
        seen = self.seen
        sock: socket.socket | None = None
        buffer = b""
        request = 0
        try:
            while not self.stop.is_set():
                request += 1
                attempt = 0
                while True:  # until this request is answered
                    attempt += 1
                    rid = f"c{number}-r{request}-a{attempt}"
                    if sock is None:
                        sock = self._connect()
                        buffer = b""
                    try:
                        sock.sendall(rid.encode() + b"\n")
                        while b"\n" not in buffer:
                            chunk = sock.recv(4096)
                            if not chunk:
                                raise EOFError
                            buffer += chunk
                    except (EOFError, BrokenPipeError, ConnectionResetError) as exc:
                        with seen.lock:
                            if isinstance(exc, ConnectionResetError):
                                seen.resets += 1
                            seen.retried += 1
                        sock.close()
                        sock = None
                        continue
                    line, _, buffer = buffer.partition(b"\n")
                    version, pid, echoed = line.decode().rstrip("\r").split(" ", 2)
                    if echoed.split(" ")[0] != rid:  # (an app may add words after the id)
                        seen.errors.append(f"asked {rid}, got {line!r}")
                    with seen.lock:
                        seen.replies[rid] = version
                        seen.pids.add(int(pid))
                        seen.versions[version] = seen.versions.get(version, 0) + 1
                    break
                if short:
                    sock.close()
                    sock = None
        except Exception as exc:  # report, the test fails on it
            seen.errors.append(f"client {number}: {type(exc).__name__}: {exc}")
        finally:
            if sock is not None:
                sock.close()

    def wait_for(self, version: str, count: int, timeout: float = 60) -> None:
        """Wait until ``count`` replies came from ``version`` (bounded)."""
        deadline = time.monotonic() + timeout
        while self.seen.versions.get(version, 0) < count:
            assert not self.seen.errors, self.seen.errors
            assert time.monotonic() < deadline, f"only {self.seen.versions} replies"
            time.sleep(0.02)

    def lost(self, log: Path) -> set[str]:
        """Attempts the server handled whose reply did not reach the client."""
        handled = set(log.read_text().split())
        return handled - set(self.seen.replies)
