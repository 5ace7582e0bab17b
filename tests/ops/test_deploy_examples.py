"""examples/deploy/kubernetes.yaml: its probes and timings agree; its command runs as written."""

from __future__ import annotations

import re
import signal
import socket
import sys
import urllib.request
from typing import Any

import pytest
from helpers import ROOT, CliServer

yaml = pytest.importorskip("yaml")

MANIFEST = ROOT / "examples" / "deploy" / "kubernetes.yaml"


def deployment() -> dict[str, Any]:
    docs = [doc for doc in yaml.safe_load_all(MANIFEST.read_text()) if doc]
    kinds = {doc["kind"]: doc for doc in docs}
    assert set(kinds) == {"Deployment", "Service"}
    result: dict[str, Any] = kinds["Deployment"]
    return result


def test_probes_and_grace_period_agree() -> None:
    spec = deployment()["spec"]["template"]["spec"]
    [container] = spec["containers"]
    env = {item["name"]: item["value"] for item in container["env"]}
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert env["TCPKIT_METRICS"].endswith(f":{ports['metrics']}")
    assert env["TCPKIT_PORT"] == str(ports["app"])
    assert container["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "metrics"}
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    drain = float(env["TCPKIT_DRAIN_TIMEOUT"])
    assert float(pre_stop[1]) + drain < spec["terminationGracePeriodSeconds"]


def get(url: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status, response.read()


def test_the_container_command_runs_as_written() -> None:
    """The manifest's command and environment, with only the addresses made local."""
    [container] = deployment()["spec"]["template"]["spec"]["containers"]
    command: list[str] = container["command"]
    assert command[:2] == ["tcpkit", "run"]
    env = {item["name"]: item["value"] for item in container["env"]}
    local = ["--host", "127.0.0.1", "--port", "0", "--metrics", "127.0.0.1:0"]  # flags win
    server = CliServer([], command=[sys.executable, "-m", "tcpkit", *command[1:], *local], env=env)
    port = server.wait_started()
    metrics = re.search(r"metrics at http://(\S+)/metrics", server.wait_for("metrics at"))
    assert metrics is not None
    base = f"http://{metrics[1]}"
    assert get(f"{base}/healthz") == (200, b"ok\n")  # the readiness probe
    assert get(f"{base}/livez") == (200, b"alive\n")  # the liveness probe
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"from a pod\n")
        assert sock.recv(100) == b"from a pod\r\n"
    server.wait_for("closed (")  # TCPKIT_ACCESS_LOG=1
    code, _, err = server.stop(signal.SIGTERM)  # what the kubelet sends after preStop
    assert code == 0, err
    assert "SIGTERM received, shutting down" in err


def test_the_manifest_is_in_the_docs() -> None:
    page = (ROOT / "docs" / "deployment.md").read_text()
    assert '--8<-- "examples/deploy/kubernetes.yaml"' in page
