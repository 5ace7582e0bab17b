"""Past one machine: two ``tcpkit run`` replicas behind the real HAProxy (PROXY v2, health checks).

HAProxy sends the PROXY v2 header and checks each replica's ``/healthz`` on
its ``--metrics`` port (503 from the moment it drains). Stopping one replica
(SIGTERM: it drains) while clients keep connecting through HAProxy: the
other takes the new connections, and clients that reconnect lose nothing.
"""

from __future__ import annotations

import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
from helpers import CliServer
from reload_load import Load

HAPROXY = shutil.which("haproxy")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(HAPROXY is None, reason="haproxy is not installed"),
]

REPLICA_APP = """
import os

from tcpkit import App

NAME = {name!r}
LOG = {log!r}

app = App(name=NAME)


@app.on_input
def answer(conn, line):
    with open(LOG, "a") as log:
        log.write(line + "\\n")
    conn.put(f"{{NAME}} {{os.getpid()}} {{line}} {{conn.remote_ip}}:{{conn.remote_port}}")
"""

HAPROXY_CONFIG = """
global
    log stderr format short local0 info

defaults
    mode tcp
    log global
    option tcplog
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    retries 3
    option redispatch 1

frontend front
    bind 127.0.0.1:{front}
    default_backend replicas

backend replicas
    balance roundrobin
    option httpchk GET /healthz
    http-check expect status 200
    default-server send-proxy-v2 check inter 100ms fall 1 rise 2
    server app1 127.0.0.1:{port1} port {metrics1}
    server app2 127.0.0.1:{port2} port {metrics2}
"""


def free_port() -> int:
    """A port that was free a moment ago (HAProxy's config needs a number)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout: float = 20) -> None:
    """Poll a connect until HAProxy accepts (bounded)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
            return
        except OSError:
            assert time.monotonic() < deadline, f"nothing listens on {port}"
            time.sleep(0.02)


def ask(port: int, line: str) -> tuple[str, int, str, int]:
    """One request through the front: (replica, pid, client address seen, our own port)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(line.encode() + b"\n")
        data = b""
        while b"\n" not in data:
            chunk = sock.recv(4096)
            assert chunk, f"closed without a reply ({data!r})"
            data += chunk
        own = sock.getsockname()[1]
    name, pid, echoed, seen = data.decode().strip().split(" ")
    assert echoed == line
    return name, int(pid), seen, own


def test_two_replicas_behind_haproxy_one_stops(tmp_path: Path) -> None:
    assert HAPROXY is not None
    logs = [tmp_path / "app1.log", tmp_path / "app2.log"]
    replicas: list[CliServer] = []
    for i, log in enumerate(logs, start=1):
        (tmp_path / f"app{i}.py").write_text(REPLICA_APP.format(name=f"app{i}", log=str(log)))
        log.write_text("")
        app = f"{tmp_path / f'app{i}.py'}:app"
        replicas.append(
            CliServer(["run", app, "--port", "0", "--proxy-protocol", "--metrics", "127.0.0.1:0"])
        )
    ports = [replica.wait_started() for replica in replicas]
    metrics = []
    for replica in replicas:
        found = re.search(r"metrics at http://127\.0\.0\.1:(\d+)/", replica.wait_for("metrics at"))
        assert found is not None
        metrics.append(int(found[1]))
    front = free_port()
    config = tmp_path / "haproxy.cfg"
    config.write_text(
        HAPROXY_CONFIG.format(
            front=front, port1=ports[0], port2=ports[1], metrics1=metrics[0], metrics2=metrics[1]
        )
    )
    haproxy = subprocess.Popen(
        [HAPROXY, "-f", str(config), "-db"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for_port(front)
        # both replicas answer, and each sees the real client (PROXY v2), not HAProxy
        names: set[str] = set()
        for n in range(20):
            name, _, seen, own = ask(front, f"hello{n}")
            assert seen == f"127.0.0.1:{own}"
            names.add(name)
            if names == {"app1", "app2"}:
                break
        assert names == {"app1", "app2"}

        with Load(front, threads=4) as load:
            deadline = time.monotonic() + 30
            while len(load.seen.replies) < 200:
                assert time.monotonic() < deadline and not load.seen.errors, load.seen.errors
                time.sleep(0.02)
            stopped_at = time.monotonic()
            replicas[0].proc.send_signal(signal.SIGTERM)  # app1 drains and stops
            code, _, err = replicas[0].stop(None)
            assert code == 0, err
            before = dict(load.seen.versions)
            load.wait_for("app2", before.get("app2", 0) + 200)
            after_stop = {k: v - before.get(k, 0) for k, v in load.seen.versions.items()}
        assert after_stop.get("app1", 0) == 0, after_stop  # the survivor took every request
        seen = load.seen
        handled = set(logs[0].read_text().split()) | set(logs[1].read_text().split())
        lost = {rid for rid in handled if not rid.startswith("hello")} - set(seen.replies)
        during = sum(1 for t in seen.connect_times if t >= stopped_at)
        print(
            f"\nhaproxy: {seen.connects} connects ({during} after app1 was stopped), "
            f"{len(seen.replies)} replies, refused={seen.refused}, resets={seen.resets}, "
            f"lost replies={len(lost)}, retried after a graceful close={seen.retried}"
        )
        assert not seen.errors, seen.errors
        assert seen.refused == 0  # resets are counted and retried: lost says what counts
        assert lost == set()
    finally:
        haproxy.terminate()
        try:
            _, haproxy_log = haproxy.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            haproxy.kill()
            _, haproxy_log = haproxy.communicate()
        for replica in replicas:
            if replica.proc.poll() is None:
                replica.stop(signal.SIGTERM)
    assert "app1 is DOWN" in haproxy_log, haproxy_log[-2000:]
