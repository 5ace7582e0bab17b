"""``tcpkit run --workers N`` in a subprocess: several pids on one port, restarts, drain."""

from __future__ import annotations

import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import ROOT, STARTUP, CliServer, run_cli

from tcpkit.workers import EXIT_BOOT_FAILED, WORKER_COMMAND, WorkerSettings

pytestmark = pytest.mark.slow

PID_APP = "tests/network/pid_app.py:app"


def ask_pid(port: int) -> int:
    """Connect, send one line, return the pid of the worker that answered."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"who\r\n")
        data = b""
        while b"\n" not in data:
            chunk = sock.recv(1024)
            if not chunk:
                raise AssertionError(f"closed without an answer; got {data!r}")
            data += chunk
    pid, _, rest = data.decode().partition(" ")
    assert rest.strip() == "who"
    return int(pid)


def pids_seen(port: int, want: int, attempts: int = 1000, timeout: float = 20) -> set[int]:
    """Ask repeatedly (bounded in count and time) until ``want`` distinct pids answered."""
    seen: set[int] = set()
    deadline = time.monotonic() + timeout
    for _ in range(attempts):
        # several connections at once, so that more than one worker is woken
        socks = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(8)]
        try:
            for sock in socks:
                sock.sendall(b"who\r\n")
            for sock in socks:
                data = b""
                while b"\n" not in data:
                    chunk = sock.recv(1024)
                    assert chunk, "a worker closed a connection without answering"
                    data += chunk
                seen.add(int(data.split(b" ", 1)[0]))
        finally:
            for sock in socks:
                sock.close()
        if len(seen) >= want or time.monotonic() > deadline:
            break
        time.sleep(0.01)  # a worker may still be starting: bound by time, not just count
    return seen


def test_workers_share_one_port_restart_and_drain() -> None:
    server = CliServer(["run", PID_APP, "--workers", "2", "--port", "0"])
    try:
        port = server.wait_started()
        assert "[workers 2]" in server.startup
        assert "[backend asyncio]" in server.startup
        first = pids_seen(port, 2)
        assert len(first) == 2, f"only {first} answered"
        assert server.proc.pid not in first  # the supervisor itself does not serve

        victim = min(first)
        os.kill(victim, signal.SIGKILL)
        survivor = (first - {victim}).pop()
        # the server keeps answering while the replacement starts
        for _ in range(5):
            assert ask_pid(port) != victim
        later = pids_seen(port, 2)
        assert victim not in later
        assert survivor in later
        assert len(later) == 2, f"no replacement worker answered: {later}"
    finally:
        code, _, err = server.stop(signal.SIGTERM)
    assert code == 0, err
    assert "was killed by SIGKILL; restarting" in err
    assert "all workers stopped" in err


def test_workers_on_trio_and_a_unix_socket(sock_dir: Path) -> None:
    path = str(sock_dir / "w.sock")
    server = CliServer(
        ["run", PID_APP, "--workers", "2", "--uds", path, "--backend", "trio", "--port", "0"]
    )
    try:
        server.wait_started()
        assert "[backend trio]" in server.startup
        assert f"unix:{path}" in server.startup
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(10)
            sock.connect(path)
            sock.sendall(b"unix\r\n")
            data = b""
            while b"\n" not in data:
                chunk = sock.recv(1024)
                assert chunk
                data += chunk
        assert data.decode().split()[1] == "unix"
    finally:
        code, _, err = server.stop(signal.SIGINT)
    assert code == 0, err
    assert not os.path.exists(path), "the supervisor removes its socket file"


def test_workers_must_be_at_least_one() -> None:
    result = run_cli("run", PID_APP, "--workers", "0")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == ["tcpkit: error: --workers must be at least 1"]


def test_workers_port_in_use_is_a_one_line_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("run", PID_APP, "--workers", "2", "--port", str(port))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines[-1] == f"tcpkit: error: cannot listen on 127.0.0.1:{port}: address already in use"


def read_stderr_until(
    proc: subprocess.Popen[str], needle: str, count: int, timeout: float = 20
) -> str:
    """Read ``proc``'s stderr until ``needle`` appeared ``count`` times (bounded in time).

    Reads the raw descriptor (never the buffered text wrapper, which could hide
    lines from ``select``), so a later ``communicate()`` gets exactly the rest.
    """
    assert proc.stderr is not None
    fd = proc.stderr.fileno()
    selector = selectors.DefaultSelector()
    selector.register(fd, selectors.EVENT_READ)
    data = b""
    deadline = time.monotonic() + timeout
    while data.decode(errors="replace").count(needle) < count:
        left = deadline - time.monotonic()
        if left <= 0 or not selector.select(timeout=left):
            raise AssertionError(f"{needle!r} not seen {count} times: {data.decode()}")
        chunk = os.read(fd, 65536)
        if not chunk:
            raise AssertionError(f"stderr closed: {data.decode()}")
        data += chunk
    selector.close()
    return data.decode()


def test_a_crashing_worker_is_restarted_with_a_growing_delay() -> None:
    server = CliServer(["run", "tests/network/crash_app.py:app", "--workers", "1", "--port", "0"])
    try:
        server.wait_started()
        text = read_stderr_until(server.proc, "restarting it in", 3)
    finally:
        code, _, err = server.stop(signal.SIGTERM)
    delays = [float(d) for d in re.findall(r"restarting it in ([\d.]+) s", text + err)]
    assert delays[:3] == [0.2, 0.4, 0.8]
    assert code == 0, err


def test_a_worker_that_cannot_load_the_app_stops_the_supervisor() -> None:
    server = CliServer(
        ["run", "tests/network/crash_app.py:app", "--workers", "2", "--port", "0"],
        env={"TCPKIT_TEST_BOOT_FAIL": "1"},
    )
    server.wait_started()
    try:
        server.proc.wait(timeout=20)  # it stops by itself
    finally:
        code, _, err = server.stop(signal.SIGTERM)
    assert code == 1
    assert "could not load the app; stopping" in err


def test_sigterm_to_the_whole_process_group_is_one_graceful_stop() -> None:
    """As systemd (default KillMode) does: supervisor and workers all get SIGTERM."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tcpkit", "run", PID_APP, "--workers", "2", "--port", "0"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        selector = selectors.DefaultSelector()
        selector.register(proc.stdout, selectors.EVENT_READ)
        assert selector.select(timeout=20), "no startup line"
        match = STARTUP.search(proc.stdout.readline())
        assert match, "no startup line"
        port = int(match["port"])
        before = read_stderr_until(proc, " serving", 2)  # both workers handle signals now
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"held\r\n")
            assert b"held" in sock.recv(1024)
            os.killpg(proc.pid, signal.SIGTERM)
            rest = b""
            while chunk := sock.recv(1024):  # the open connection is closed cleanly
                rest += chunk
            assert rest == b""
        _, err = proc.communicate(timeout=20)
        err = before + err
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert "aborting" not in err
    assert err.count("SIGTERM, draining") == 2


def test_a_second_signal_makes_the_workers_abort() -> None:
    server = CliServer(["run", PID_APP, "--workers", "2", "--port", "0"])
    try:
        server.wait_started()
        text = read_stderr_until(server.proc, " serving", 2)
        server.proc.send_signal(signal.SIGTERM)
        text += read_stderr_until(server.proc, "SIGTERM received", 1)
        server.proc.send_signal(signal.SIGINT)
    finally:
        code, _, err = server.stop(signal.SIGTERM)
    assert code == 0, text + err
    assert "SIGINT received again, workers abort their connections" in err


def test_worker_settings_round_trip_through_json() -> None:
    settings = WorkerSettings(
        app="m:app",
        backend="trio",
        max_connections=5,
        proxy_protocol=True,
        ssl_certfile="/c.pem",
        drain_timeout=1.5,
        fds=(3, 4),
    )
    assert WorkerSettings.from_json(settings.to_json()) == settings
    with pytest.raises(ValueError, match="JSON object"):
        WorkerSettings.from_json("[1, 2]")


def test_worker_with_bad_settings_exits_with_the_boot_failure_status() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tcpkit", WORKER_COMMAND, "not json"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == EXIT_BOOT_FAILED
    assert "bad settings" in result.stderr
