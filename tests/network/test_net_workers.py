"""``tcpkit run --workers N`` in a subprocess: several pids on one port, restarts, drain."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import CliServer, run_cli

from tcpkit.runconfig import RunConfig
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
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("tcpkit run: error: argument --workers: must be >= 1, got '0'")


def test_workers_port_in_use_is_a_one_line_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("run", PID_APP, "--workers", "2", "--port", str(port))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines[-1] == f"tcpkit: error: cannot listen on 127.0.0.1:{port}: address already in use"


def test_a_crashing_worker_is_restarted_with_a_growing_delay() -> None:
    server = CliServer(["run", "tests/network/crash_app.py:app", "--workers", "1", "--port", "0"])
    try:
        port = server.wait_started()
        server.wait_for("worker(s) serving")
        for done in range(1, 4):  # each connection kills the worker that accepts it
            with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
                sock.settimeout(20)
                try:
                    assert sock.recv(16) == b""
                except ConnectionResetError:
                    pass
            server.wait_for("restarting it in", done)
            server.wait_for("started (pid", done + 1)
    finally:
        code, _, err = server.stop(signal.SIGTERM)
    delays = [float(d) for d in re.findall(r"restarting it in ([\d.]+) s", err)]
    assert delays[:3] == [0.2, 0.4, 0.8]
    assert code == 0, err


@pytest.mark.parametrize(
    ("app", "env", "why"),
    [
        ("app", {"TCPKIT_TEST_BOOT_FAIL": "1"}, "this app cannot be loaded in a worker"),
        ("early", {}, "exited with status 1"),
    ],
)
def test_a_worker_that_dies_before_serving_stops_the_supervisor(
    app: str, env: dict[str, str], why: str
) -> None:
    server = CliServer(
        ["run", f"tests/network/crash_app.py:{app}", "--workers", "2", "--port", "0"], env=env
    )
    server.wait_started()
    try:
        server.proc.wait(timeout=20)  # it stops by itself
    finally:
        code, _, err = server.stop(signal.SIGTERM)
    assert code == 1
    last = err.strip().splitlines()[-1]
    assert last.startswith("tcpkit: error: worker "), err
    assert "could not start serving" in last and why in last, err
    assert "restarting" not in err


def test_sigterm_to_the_whole_process_group_is_one_graceful_stop() -> None:
    """As systemd (default KillMode) does: supervisor and workers all get SIGTERM."""
    server = CliServer(["run", PID_APP, "--workers", "2", "--port", "0"], start_new_session=True)
    try:
        port = server.wait_started()
        server.wait_for("worker(s) serving")  # both workers handle signals now
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"held\r\n")
            assert b"held" in sock.recv(1024)
            os.killpg(server.proc.pid, signal.SIGTERM)
            rest = b""
            while chunk := sock.recv(1024):  # the open connection is closed cleanly
                rest += chunk
            assert rest == b""
        code, _, err = server.stop(None)  # no signal of our own: the group's was the one
    finally:
        if server.proc.poll() is None:
            os.killpg(server.proc.pid, signal.SIGKILL)
            server.proc.communicate(timeout=10)
    assert code == 0, err
    assert "SIGQUIT" not in err and "received again" not in err
    assert len(re.findall(r"worker \d \(pid \d+\): SIGTERM received", err)) == 2, err


def test_a_second_signal_makes_the_workers_abort_and_exits_1() -> None:
    server = CliServer(["run", PID_APP, "--workers", "2", "--port", "0"])
    try:
        server.wait_started()
        server.wait_for("worker(s) serving")
        server.proc.send_signal(signal.SIGTERM)
        server.wait_for("SIGTERM received")
        server.proc.send_signal(signal.SIGINT)
    finally:
        code, _, err = server.stop(signal.SIGTERM)
    assert code == 1, err
    assert "SIGINT received again, workers abort their connections" in err


def test_worker_settings_round_trip_through_json() -> None:
    config = RunConfig(
        app="m:app",
        backend="trio",
        max_connections=5,
        proxy_protocol=True,
        ssl_certfile="/c.pem",
        ssl_keyfile_password="secret",
        drain_timeout=1.5,
        host=("127.0.0.1", "::1"),
    )
    settings = WorkerSettings(config, fds=(3, 4), slot=2, control="/tmp/x/w2-3.sock")
    assert WorkerSettings.from_json(settings.to_json()) == settings
    with pytest.raises(ValueError, match="JSON object"):
        WorkerSettings.from_json("[1, 2]")
    with pytest.raises(ValueError, match="numbers"):
        WorkerSettings.from_json('{"config": {"app": "m:a"}, "fds": ["3"]}')


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
