"""The control socket: `tcpkit run --control PATH` driven by `tcpkit ctl` (real processes)."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
from pathlib import Path
from typing import Any

import pytest
from helpers import CliServer, run_cli


def ctl(path: str, *words: str) -> tuple[int, dict[str, Any]]:
    """``tcpkit ctl PATH WORDS...``: its exit status and its JSON answer."""
    result = run_cli("ctl", path, *words)
    assert result.stdout, result.stderr
    return result.returncode, json.loads(result.stdout)


class LineConn:
    """A blocking line client."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=20)
        self.local_port: int = self.sock.getsockname()[1]
        self.buffer = b""

    def ask(self, line: str) -> str:
        self.sock.sendall(line.encode() + b"\n")
        while b"\n" not in self.buffer:
            chunk = self.sock.recv(4096)
            assert chunk, "closed"
            self.buffer += chunk
        reply, _, self.buffer = self.buffer.partition(b"\n")
        return reply.decode().rstrip("\r")

    def closed(self) -> bool:
        """Wait for the server's close: True at EOF (or a reset)."""
        try:
            while chunk := self.sock.recv(4096):
                self.buffer += chunk
        except ConnectionResetError:
            pass
        return True

    def close(self) -> None:
        self.sock.close()


def test_control_socket_commands(sock_dir: Path) -> None:
    path = str(sock_dir / "ctl.sock")
    server = CliServer(["run", "examples/echo.py:app", "--port", "0", "--control", path])
    port = server.wait_started()
    server.wait_for("control socket at unix:")
    mode = os.stat(path).st_mode
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600  # owner-only
    a, b = LineConn(port), LineConn(port)
    try:
        assert a.ask("one") == "one" and b.ask("two") == "two"
        code, reply = ctl(path, "stats")
        assert code == 0 and reply["ok"] is True
        assert reply["stats"]["current"] == 2 and reply["stats"]["messages_in"] == 2
        assert reply["pid"] == server.proc.pid and reply["closing"] is False
        assert sum(reply["latency"]["counts"]) == 2

        code, reply = ctl(path, "connections")
        listed = {c["peer"]: c for c in reply["connections"]}
        assert set(listed) == {f"127.0.0.1:{a.local_port}", f"127.0.0.1:{b.local_port}"}
        victim = listed[f"127.0.0.1:{a.local_port}"]
        assert victim["age"] >= 0 and victim["pending_output"] == 0

        code, reply = ctl(path, "kick", str(victim["id"]))
        assert (code, reply) == (0, {"ok": True, "kicked": victim["id"]})
        assert a.closed()
        assert b.ask("still here") == "still here"

        # set-max 0: accepting pauses; a new client waits in the backlog, then is served
        code, reply = ctl(path, "set-max", "0")
        assert reply == {"ok": True, "max_connections": 0}
        waiting = LineConn(port)
        waiting.sock.sendall(b"queued\n")
        code, reply = ctl(path, "stats")
        assert reply["stats"]["total"] == 2  # not accepted while paused
        code, reply = ctl(path, "set-max", "none")
        assert reply == {"ok": True, "max_connections": None}
        waiting.buffer = b""
        assert waiting.ask("now") in ("queued", "now")
        waiting.close()

        code, reply = ctl(path, "kick", "999")
        assert code == 1 and reply == {"ok": False, "error": "no live connection 999"}
        code, reply = ctl(path, "set-max", "-1")
        assert code == 1 and "must be >= 0" in reply["error"]
        code, reply = ctl(path, "frobnicate")
        assert code == 1 and "unknown command 'frobnicate'" in reply["error"]
        code, reply = ctl(path, "help")
        assert code == 0 and set(reply["commands"]) >= {"stats", "drain", "kick", "reload"}

        # drain: no new connection, the open one goes on, the process ends after it
        code, reply = ctl(path, "drain")
        assert code == 0 and reply["draining"] == 1
        server.wait_for("drain requested")
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=10)
        assert b.ask("after drain") == "after drain"
    finally:
        a.close()
        b.close()
    code, _, err = server.stop(None)  # it stops by itself once b has gone
    assert code == 0, err
    assert not os.path.exists(path), "the control socket file is removed at the end"


def test_ctl_errors_are_one_line(sock_dir: Path) -> None:
    result = run_cli("ctl", str(sock_dir / "none.sock"), "stats")
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"tcpkit: error: no control socket at '{sock_dir / 'none.sock'}' "
        "(is the server running with --control?)"
    )


def test_control_path_in_use_is_one_line(sock_dir: Path) -> None:
    path = str(sock_dir / "busy.sock")
    with socket.socket(socket.AF_UNIX) as busy:
        busy.bind(path)
        busy.listen()
        result = run_cli("run", "examples/echo.py:app", "--port", "0", "--control", path)
    assert result.returncode == 1
    assert result.stderr.strip().endswith("already in use by a running server")


@pytest.mark.slow
def test_control_under_workers_answers_for_all(sock_dir: Path) -> None:
    path = str(sock_dir / "ctl.sock")
    server = CliServer(
        ["run", "tests/network/pid_app.py:app", "--port", "0", "--workers", "2", "--control", path]
    )
    port = server.wait_started()
    server.wait_for("2 worker(s) serving")
    conns = [LineConn(port) for _ in range(6)]
    try:
        pids = {int(conn.ask("who").split()[0]) for conn in conns}
        code, reply = ctl(path, "stats")
        assert code == 0
        assert reply["stats"]["current"] == 6 and reply["stats"]["messages_in"] == 6
        assert reply["workers"] == 2 and len(reply["per_worker"]) == 2
        assert {w["pid"] for w in reply["per_worker"]} >= pids
        code, reply = ctl(path, "connections")
        listed = reply["connections"]
        assert len(listed) == 6
        target = next(c for c in listed if c["peer"] == f"127.0.0.1:{conns[0].local_port}")
        slot, _, conn_id = target["id"].partition(":")
        assert slot in ("1", "2") and conn_id.isdigit()
        code, reply = ctl(path, "kick", target["id"])
        assert code == 0 and reply["kicked"] == target["id"]
        assert conns[0].closed()
        code, reply = ctl(path, "set-max", "5")
        assert reply == {"ok": True, "max_connections": 5, "workers": 2}
        code, reply = ctl(path, "kick", "7:1")
        assert code == 1 and reply["error"] == "no worker 7"
    finally:
        for conn in conns:
            conn.close()
    code, _, err = server.stop(signal.SIGTERM)
    assert code == 0, err
