"""EMFILE: with every fd in use, the server backs off (no spinning) and recovers."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

HERE = Path(__file__).parent
FD_LIMIT = 40


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # utime + stime


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.settimeout(10)
    return sock


def echo(sock: socket.socket, text: str) -> str:
    sock.sendall(text.encode() + b"\n")
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(1024)
        if not chunk:
            raise EOFError("closed")
        data += chunk
    return data.decode().strip()


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc for CPU time")
@pytest.mark.parametrize("backend", ["asyncio", "uvloop", "trio"])
def test_emfile_backs_off_without_spinning_and_recovers(backend: str) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "emfile_server.py"), backend, str(FD_LIMIT), str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(HERE.parent.parent / "src")},
    )
    clients: list[socket.socket] = []
    try:
        deadline = time.monotonic() + 20
        while True:  # wait for the port (bounded), not a blind sleep
            try:
                first = connect(port)
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise AssertionError(proc.communicate(timeout=5)) from None
                time.sleep(0.05)
        clients.append(first)
        assert echo(first, "first") == "first"
        # Open more clients than the server has fds: the extra ones wait in the backlog.
        for _ in range(FD_LIMIT + 10):
            clients.append(connect(port))
        time.sleep(0.5)  # let the server hit EMFILE and settle into its back-off
        before = cpu_seconds(proc.pid)
        time.sleep(1.5)  # the saturated window
        used = cpu_seconds(proc.pid) - before
        assert used < 0.5, f"server used {used:.2f} CPU s in 1.5 s while saturated: spinning"
        assert echo(first, "still served") == "still served"  # existing clients go on
        # Free fds: every client still waiting in the backlog is accepted and served.
        for sock in clients[1:-1]:
            sock.close()
        late = clients[-1]
        assert echo(late, "late") == "late"
    finally:
        for sock in clients:
            sock.close()
        proc.terminate()
        try:
            _, err = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
    bursts = err.count("backing off")
    assert 1 <= bursts <= 3, err  # logged once per burst, not once per attempt
    assert proc.returncode == 0, err
