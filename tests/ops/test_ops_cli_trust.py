"""`tcpkit run` flags of trust and TCP: --proxy-trust (TCPKIT_PROXY_TRUST), --tcp-keepalive."""

from __future__ import annotations

import argparse
import signal
import socket
from pathlib import Path

import pytest
from helpers import CliServer, run_cli

from tcpkit.proxy import V2_SIGNATURE
from tcpkit.runconfig import ConfigError, RunConfig, add_run_arguments, app_overrides

WHOAMI = """
from tcpkit import App

app = App()


@app.on_input
def answer(conn, line):
    conn.put(f"{conn.remote_ip}:{conn.remote_port} {line}")
"""


def config(*flags: str, env: dict[str, str] | None = None) -> RunConfig:
    parser = argparse.ArgumentParser()
    add_run_arguments(parser)
    return RunConfig.from_args(parser, parser.parse_args(["x:app", *flags]), env or {})


def test_proxy_trust_flags_and_variable_map_to_the_allowlist() -> None:
    flags = config("--proxy-trust", "10.1.2.3/8", "--proxy-trust", "::1")
    assert app_overrides(flags) == {"proxy_protocol": ("10.0.0.0/8", "::1/128")}
    env = config(env={"TCPKIT_PROXY_TRUST": "127.0.0.1, unix"})
    assert app_overrides(env) == {"proxy_protocol": ("127.0.0.1/32", "unix")}
    both = config("--proxy-protocol", "--proxy-trust", "127.0.0.1")  # the allowlist wins
    assert app_overrides(both) == {"proxy_protocol": ("127.0.0.1/32",)}
    assert app_overrides(config("--proxy-protocol")) == {"proxy_protocol": True}
    assert app_overrides(config()) == {}
    # the supervisor sends the settings to its workers as JSON
    assert RunConfig.from_json(flags.to_json()) == flags


def test_tcp_flags_map_to_app_options() -> None:
    assert app_overrides(config("--no-tcp-nodelay", "--tcp-keepalive", "45")) == {
        "tcp_nodelay": False,
        "tcp_keepalive": 45,
    }
    assert app_overrides(config(env={"TCPKIT_TCP_NODELAY": "0"})) == {"tcp_nodelay": False}
    assert app_overrides(config("--tcp-nodelay")) == {"tcp_nodelay": True}


def test_a_bad_network_in_the_variable_is_one_clear_error() -> None:
    with pytest.raises(ConfigError, match=r"TCPKIT_PROXY_TRUST='10\.0\.0\.0/33'"):
        config(env={"TCPKIT_PROXY_TRUST": "10.0.0.0/33"})


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--proxy-trust", "10.0.0.0/33"], "argument --proxy-trust: expected a network"),
        (["--proxy-trust", "proxy.local"], "got 'proxy.local'"),
        (["--tcp-keepalive", "-1"], "argument --tcp-keepalive: must be between 0 and 32767"),
    ],
)
def test_bad_flags_are_one_line(flags: list[str], message: str) -> None:
    result = run_cli("run", "examples/echo.py:app", *flags)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert message in result.stderr.strip().splitlines()[-1]


def v2_header(src: str, sport: int) -> bytes:
    body = socket.inet_aton(src) + socket.inet_aton("10.0.0.1") + sport.to_bytes(2, "big")
    body += (7000).to_bytes(2, "big")
    return V2_SIGNATURE + bytes([0x21, 0x11]) + len(body).to_bytes(2, "big") + body


def exchange(port: int, data: bytes) -> bytes:
    """Send ``data``, then read until the server closes or a line arrives."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        reply = b""
        while not reply.endswith(b"\n"):
            try:
                chunk = sock.recv(4096)
            except ConnectionResetError:
                break
            if not chunk:
                break
            reply += chunk
    return reply


def test_the_allowlist_from_the_command_line(tmp_path: Path) -> None:
    (tmp_path / "whoami.py").write_text(WHOAMI)
    run = ["run", f"{tmp_path / 'whoami.py'}:app", "--port", "0"]
    server = CliServer([*run, "--proxy-trust", "10.0.0.0/8"])
    port = server.wait_started()
    try:
        assert exchange(port, v2_header("192.0.2.1", 1111) + b"spoof\n") == b""
        server.wait_for("not a trusted PROXY peer")
    finally:
        code, _, err = server.stop(signal.SIGINT)
    assert code == 0, err
    server = CliServer(run, env={"TCPKIT_PROXY_TRUST": "10.0.0.0/8,127.0.0.1"})
    port = server.wait_started()
    try:
        assert (
            exchange(port, v2_header("192.0.2.1", 1111) + b"real\n") == b"192.0.2.1:1111 real\r\n"
        )
    finally:
        code, _, err = server.stop(signal.SIGINT)
    assert code == 0, err
