"""``--metrics HOST:PORT``: Prometheus text scraped over HTTP from a real ``tcpkit run``."""

from __future__ import annotations

import json
import re
import signal
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import CliServer, run_cli
from prometheus_client.parser import text_string_to_metric_families

METRICS = ("--metrics", "127.0.0.1:0")
WORKERS_2 = ("--workers", "2")

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]

METRICS_AT = re.compile(r"metrics at http://(?P<where>[^/]+)/metrics")


def scrape(base: str) -> Samples:
    with urllib.request.urlopen(f"{base}/metrics", timeout=10) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = response.read().decode()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def scrape_until(base: str, done: Callable[[Samples], bool], timeout: float = 20) -> Samples:
    """Scrape until ``done`` holds (closes are counted just after the client sees them)."""
    deadline = time.monotonic() + timeout
    while True:
        samples = scrape(base)
        if done(samples) or time.monotonic() > deadline:
            return samples
        time.sleep(0.05)


def exchange(port: int, payload: bytes, replies: int) -> bytes:
    """Send, read ``replies`` lines, half-close, read to the end."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(payload)
        data = b""
        while data.count(b"\n") < replies:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
        sock.shutdown(socket.SHUT_WR)
        try:
            while chunk := sock.recv(4096):
                data += chunk
        except ConnectionResetError:
            pass
    return data


def metrics_base(server: CliServer) -> str:
    match = METRICS_AT.search(server.wait_for(METRICS_AT))
    assert match is not None
    return f"http://{match['where']}"


def test_metrics_of_one_process() -> None:
    server = CliServer(["run", "examples/echo.py:app", "--port", "0", "--metrics", "127.0.0.1:0"])
    port = server.wait_started()
    base = metrics_base(server)
    for _ in range(3):
        assert exchange(port, b"ab\ncd\n", 2) == b"ab\r\ncd\r\n"
    exchange(port, b"\xff\xfe\n", 0)  # not UTF-8: a codec error closes that connection
    samples = scrape_until(
        base, lambda s: value(s, "tcpkit_connections_closed_total", reason="error") == 1
    )
    assert value(samples, "tcpkit_connections_accepted_total") == 4
    assert value(samples, "tcpkit_connections") == 0
    assert value(samples, "tcpkit_connections_closed_total", reason="eof") == 3
    assert value(samples, "tcpkit_connections_closed_total", reason="error") == 1
    assert value(samples, "tcpkit_errors_total", kind="MalformedFrame") == 1
    assert value(samples, "tcpkit_received_messages_total") == 6
    assert value(samples, "tcpkit_sent_messages_total") == 6
    assert value(samples, "tcpkit_received_bytes_total") == 3 * 6 + 3
    assert value(samples, "tcpkit_sent_bytes_total") == 3 * 8
    assert value(samples, "tcpkit_handler_seconds_count") == 6
    assert value(samples, "tcpkit_handler_seconds_bucket", le="+Inf") == 6
    assert value(samples, "tcpkit_handler_seconds_sum") > 0
    with urllib.request.urlopen(f"{base}/healthz", timeout=10) as response:
        assert response.status == 200 and response.read() == b"ok\n"
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(f"{base}/nothing", timeout=10)
    assert missing.value.code == 404
    missing.value.close()
    code, _, err = server.stop(signal.SIGINT)
    assert code == 0, err


def test_healthz_says_503_while_draining(sock_dir: Path) -> None:
    path = f"{sock_dir}/ctl.sock"
    server = CliServer(
        [
            "run",
            "examples/echo.py:app",
            "--port",
            "0",
            "--metrics",
            "127.0.0.1:0",
            "--control",
            path,
        ]
    )
    port = server.wait_started()
    base = metrics_base(server)
    held = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        held.sendall(b"x\n")
        assert held.recv(10) == b"x\r\n"
        assert json.loads(run_cli("ctl", path, "drain").stdout)["ok"]
        with pytest.raises(urllib.error.HTTPError) as draining:
            urllib.request.urlopen(f"{base}/healthz", timeout=10)
        assert draining.value.code == 503 and draining.value.read() == b"draining\n"
        draining.value.close()
    finally:
        held.close()
    code, _, err = server.stop(None)
    assert code == 0, err


@pytest.mark.slow
def test_metrics_under_workers_add_up_and_survive_a_rolling_restart() -> None:
    server = CliServer(
        [*("run", "tests/network/pid_app.py:app", "--port", "0"), *WORKERS_2, *METRICS]
    )
    port = server.wait_started()
    base = metrics_base(server)
    server.wait_for("2 worker(s) serving")
    pids: set[int] = set()
    for i in range(10):
        reply = exchange(port, f"m{i}\n".encode(), 1)
        pids.add(int(reply.split()[0]))
    samples = scrape_until(
        base, lambda s: value(s, "tcpkit_connections_closed_total", reason="eof") == 10
    )
    assert value(samples, "tcpkit_workers") == 2
    assert value(samples, "tcpkit_connections_accepted_total") == 10
    assert value(samples, "tcpkit_received_messages_total") == 10
    assert value(samples, "tcpkit_handler_seconds_count") == 10
    server.proc.send_signal(signal.SIGHUP)  # a rolling restart: new workers, new counters
    server.wait_for("reload done")
    server.wait_for(re.compile(r"worker \d \(pid \d+\) exited with status 0"), 2)
    samples = scrape(base)
    # the old workers' last counts are kept: counters never go back
    assert value(samples, "tcpkit_connections_accepted_total") == 10
    assert value(samples, "tcpkit_handler_seconds_count") == 10
    assert value(samples, "tcpkit_workers") == 2
    for i in range(2):
        reply = exchange(port, f"after{i}\n".encode(), 1)
        assert int(reply.split()[0]) not in pids  # the new workers answer
    samples = scrape_until(base, lambda s: value(s, "tcpkit_connections_accepted_total") == 12)
    assert value(samples, "tcpkit_connections_accepted_total") == 12
    assert value(samples, "tcpkit_received_messages_total") == 12
    code, _, err = server.stop(signal.SIGTERM)
    assert code == 0, err
