"""Every example runs with ``tcpkit run examples/NAME.py:app`` and says how to try it."""

from __future__ import annotations

import importlib
import socket

import pytest
from helpers import CliServer

EXAMPLES = {
    # name: (bytes to send, what the first reply starts with)
    "chat": (b"", b"* Welcome, guest1!"),
    "chargen": (b"", b" !\"#$%&'()*+,-./0123456789"),
    "acceptor": (b"rocco\r\n", b"Login: rocco"),
    "limited": (b"", b"hello, client 1 of at most 2"),
    "json_rpc": (b'{"jsonrpc":"2.0","id":1,"method":"add","params":[1,2]}\n', b'{"jsonrpc"'),
    "resp": (b"*1\r\n$4\r\nPING\r\n", b"+PONG\r\n"),
}


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_docstring_says_how_to_run_and_try_it(name: str) -> None:
    module = importlib.import_module(f"examples.{name}")
    doc = module.__doc__ or ""
    assert f"tcpkit run examples/{name}.py:app" in doc
    assert any(tool in doc for tool in ("nc ", "socat ", "redis-cli ")), doc


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_runs_under_the_cli(name: str) -> None:
    send, expected = EXAMPLES[name]
    server = CliServer(["run", f"examples/{name}.py:app", "--port", "0"])
    try:
        port = server.wait_started()
        assert f"examples/{name}.py:app" in server.startup
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(send)
            received = b""
            while len(received) < len(expected):
                chunk = sock.recv(4096)
                if not chunk:
                    break
                received += chunk
        assert received.startswith(expected), received
    finally:
        code, _, err = server.stop()
    assert code == 0, err
    assert "Traceback" not in err, err
