"""systemd: socket activation (LISTEN_FDS, --fd, the real systemd-socket-activate) and sd_notify.

sd_notify is tested with a datagram socket of our own as NOTIFY_SOCKET, both
a path and an abstract (``@name``) socket.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import ROOT, CliServer, run_cli

from tcpkit._systemd import Notifier, listen_fds

ACTIVATE = shutil.which("systemd-socket-activate")


class NotifySocket:
    """A datagram socket standing in for systemd's notify socket."""

    def __init__(self, address: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address if not address.startswith("@") else "\0" + address[1:])
        self.address = address
        self.messages: list[dict[str, str]] = []

    def receive(self, timeout: float = 20) -> dict[str, str]:
        self.sock.settimeout(timeout)
        data = self.sock.recv(65536).decode()
        fields = dict(line.split("=", 1) for line in data.splitlines() if "=" in line)
        self.messages.append(fields)
        return fields

    def wait_for(self, key: str, count: int = 1, timeout: float = 20) -> list[dict[str, str]]:
        """Receive until ``count`` messages had ``key``; return every message received."""
        deadline = time.monotonic() + timeout
        while sum(key in m for m in self.messages) < count:
            left = deadline - time.monotonic()
            assert left > 0, f"{key} not received {count} times: {self.messages}"
            self.receive(left)
        return self.messages

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(params=["path", "abstract"])
def notify_socket(request: pytest.FixtureRequest, sock_dir: Path) -> Iterator[NotifySocket]:
    if request.param == "path":
        address = str(sock_dir / "notify")
    else:
        address = f"@tcpkit-test-notify-{os.getpid()}-{time.monotonic_ns()}"
    sock = NotifySocket(address)
    yield sock
    sock.close()


def test_notifier_sends_datagrams(notify_socket: NotifySocket) -> None:
    notifier = Notifier({"NOTIFY_SOCKET": notify_socket.address})
    assert notifier.enabled
    notifier.ready("serving on tcp 127.0.0.1:1")
    assert notify_socket.receive() == {
        "READY": "1",
        "STATUS": "serving on tcp 127.0.0.1:1",
        "MAINPID": str(os.getpid()),
    }
    notifier.stopping("draining")
    assert notify_socket.receive() == {"STOPPING": "1", "STATUS": "draining"}
    notifier.reloading("reloading")
    reload = notify_socket.receive()
    assert reload["RELOADING"] == "1" and int(reload["MONOTONIC_USEC"]) > 0


def test_notifier_without_a_socket_does_nothing() -> None:
    notifier = Notifier({})
    assert not notifier.enabled and not notifier.notify("READY=1")
    assert notifier.watchdog_interval is None
    assert Notifier({"WATCHDOG_USEC": "4000000"}).watchdog_interval == 2.0
    assert Notifier({"WATCHDOG_USEC": "4000000", "WATCHDOG_PID": "1"}).watchdog_interval is None


def test_listen_fds_reads_and_clears_the_variables() -> None:
    env = {"LISTEN_FDS": "2", "LISTEN_PID": "1", "LISTEN_FDNAMES": "a:b"}
    assert listen_fds(env) == []  # for another process
    assert env == {}
    with pytest.raises(ValueError, match="expected numbers"):
        listen_fds({"LISTEN_FDS": "two"})


def test_cli_notifies_ready_watchdog_and_stopping(notify_socket: NotifySocket) -> None:
    server = CliServer(
        ["run", "examples/echo.py:app", "--port", "0"],
        env={"NOTIFY_SOCKET": notify_socket.address, "WATCHDOG_USEC": "100000"},
    )
    port = server.wait_started()
    messages = notify_socket.wait_for("READY")
    ready = next(m for m in messages if "READY" in m)
    assert ready["STATUS"] == f"serving on tcp 127.0.0.1:{port}"
    assert ready["MAINPID"] == str(server.proc.pid)
    notify_socket.wait_for("WATCHDOG", 3)  # every WATCHDOG_USEC / 2
    server.proc.send_signal(signal.SIGTERM)
    notify_socket.wait_for("STOPPING")
    code, _, err = server.stop(None)
    assert code == 0, err


@pytest.mark.slow
def test_under_workers_the_supervisor_notifies_once_all_serve(notify_socket: NotifySocket) -> None:
    server = CliServer(
        ["run", "tests/network/pid_app.py:app", "--port", "0", "--workers", "2"],
        env={"NOTIFY_SOCKET": notify_socket.address},
    )
    server.wait_started()
    messages = notify_socket.wait_for("READY")
    text = server.wait_for("2 worker(s) serving")  # logged as READY=1 is sent
    assert len(re.findall(r"worker \d \(pid \d+\) serving", text)) == 2  # both, before
    ready = next(m for m in messages if "READY" in m)
    assert ready["MAINPID"] == str(server.proc.pid) and ready["STATUS"] == "2 worker(s) serving"
    server.proc.send_signal(signal.SIGTERM)
    notify_socket.wait_for("STOPPING")
    code, _, err = server.stop(None)
    assert code == 0, err
    assert sum("READY" in m for m in notify_socket.messages) == 1  # workers do not notify


def listening_tcp() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock


def test_fd_serves_an_inherited_socket() -> None:
    with listening_tcp() as sock:
        fd = sock.fileno()
        os.set_inheritable(fd, True)
        server = CliServer(["run", "examples/echo.py:app", "--fd", str(fd)], pass_fds=(fd,))
        port = server.wait_started()
        assert port == sock.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
            client.sendall(b"inherited\n")
            assert client.recv(100) == b"inherited\r\n"
        code, _, err = server.stop(signal.SIGINT)
        assert code == 0, err


def test_bad_fd_is_one_line() -> None:
    read, write = os.pipe()
    try:
        result = run_cli("run", "examples/echo.py:app", "--fd", "97")
        assert result.returncode == 1
        assert result.stderr.strip() == "tcpkit: error: --fd 97: file descriptor 97 is not open"
        proc = subprocess.run(
            [sys.executable, "-m", "tcpkit", "run", "examples/echo.py:app", "--fd", str(read)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            pass_fds=(read,),
            timeout=30,
            check=False,
        )
        assert proc.returncode == 1
        assert proc.stderr.startswith(f"tcpkit: error: --fd {read}: file descriptor {read} is not")
    finally:
        os.close(read)
        os.close(write)


EXEC_WITH_LISTEN_FDS = """
import os, sys
os.dup2(int(sys.argv[1]), 3)
os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS="1", LISTEN_FDNAMES="app")
os.execv(sys.executable, [sys.executable, "-m", "tcpkit", "run", "examples/echo.py:app"])
"""


def test_listen_fds_from_a_program_that_execs_tcpkit(sock_dir: Path) -> None:
    """The LISTEN_FDS protocol alone: a launcher sets LISTEN_PID to its pid and execs."""
    path = str(sock_dir / "act.sock")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path)
    listener.listen()
    command = [sys.executable, "-c", EXEC_WITH_LISTEN_FDS, str(listener.fileno())]
    server = CliServer([], command=command, pass_fds=(listener.fileno(),))
    listener.close()
    line = server.wait_line("running on")
    assert f"running on unix:{path}" in line
    with socket.socket(socket.AF_UNIX) as client:
        client.settimeout(10)
        client.connect(path)
        client.sendall(b"activated\n")
        assert client.recv(100) == b"activated\r\n"
    code, _, err = server.stop(signal.SIGTERM)
    assert code == 0, err
    assert os.path.exists(path), "a socket tcpkit did not bind is not tcpkit's to remove"


@pytest.mark.skipif(ACTIVATE is None, reason="systemd-socket-activate is not installed")
def test_real_systemd_socket_activate(sock_dir: Path) -> None:
    """The first client's connect starts the server; it waits in the backlog and is answered."""
    assert ACTIVATE is not None
    path = str(sock_dir / "sd.sock")
    server = CliServer(
        [],
        command=[
            ACTIVATE,
            "-l",
            path,
            "--fdname=echo",
            sys.executable,
            "-m",
            "tcpkit",
            "run",
            "examples/echo.py:app",
        ],
    )
    server.wait_for(f"Listening on {path}")
    assert "running on" not in server.err  # not started yet: socket activation waits
    with socket.socket(socket.AF_UNIX) as client:
        client.settimeout(20)
        client.connect(path)  # waits in the backlog while tcpkit starts
        client.sendall(b"first client\n")
        assert client.recv(100) == b"first client\r\n"
    line = server.wait_line("running on")
    assert f"running on unix:{path}" in line
    code, _, err = server.stop(signal.SIGTERM)
    assert code == 0, err
