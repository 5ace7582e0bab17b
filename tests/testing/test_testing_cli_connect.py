"""``tcpkit connect``: a netcat that speaks codecs, against ``tcpkit run`` servers."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme
from helpers import ROOT, CliServer


@pytest.fixture
def echo_port() -> Iterator[int]:
    server = CliServer(["run", "examples/echo.py:app", "--port", "0"])
    try:
        yield server.wait_started()
    finally:
        server.stop()


def tcpkit_connect(
    *args: str, stdin: bytes = b"", timeout: float = 30
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "tcpkit", "connect", *args],
        cwd=ROOT,
        input=stdin,
        capture_output=True,
        timeout=timeout,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def test_lines_in_lines_out(echo_port: int) -> None:
    started = time.monotonic()
    done = tcpkit_connect(
        f"127.0.0.1:{echo_port}", "--wait", "20", stdin="hello\nwörld\r\n\nlast".encode()
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode() == "hello\nwörld\n\nlast\n"
    assert done.stderr == b""
    # stdin's EOF is passed on; the server closes after its replies: no --wait.
    assert time.monotonic() - started < 15


def test_json_lines(echo_port: int) -> None:
    stdin = b'{"b": [1, 2.5, null], "a": "\\u00e9"}\nnot json\n\n  \n"text"\n'
    done = tcpkit_connect(f"127.0.0.1:{echo_port}", "--codec", "json-lines", stdin=stdin)
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode().splitlines() == ['{"b": [1, 2.5, null], "a": "é"}', '"text"']
    assert b"skipping stdin line 2: not JSON" in done.stderr


def test_raw_bytes(echo_port: int) -> None:
    done = tcpkit_connect(f"127.0.0.1:{echo_port}", "--codec", "raw", stdin=b"one\ntwo\n")
    assert done.returncode == 0, done.stderr
    assert done.stdout == b"one\r\ntwo\r\n"


def test_exits_when_the_server_closes_though_stdin_stays_open(tmp_path: Path) -> None:
    (tmp_path / "bye.py").write_text(
        textwrap.dedent(
            """
            from tcpkit import App

            app = App()

            @app.on_connect
            async def bye(conn):
                await conn.send("bye")
                conn.shutdown()
            """
        )
    )
    server = CliServer(["run", f"{tmp_path / 'bye.py'}:app", "--port", "0"])
    try:
        port = server.wait_started()
        client = subprocess.Popen(
            [sys.executable, "-m", "tcpkit", "connect", f"127.0.0.1:{port}"],
            cwd=ROOT,
            stdin=subprocess.PIPE,  # left open: the client must not wait for it
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            out, err = client.communicate(timeout=20)
        finally:
            if client.poll() is None:
                client.kill()
                client.communicate()
            assert client.stdin is not None
            client.stdin.close()
        assert client.returncode == 0, err
        assert out == b"bye\n"
    finally:
        server.stop()


def test_unix_socket(tmp_path: Path) -> None:
    path = str(tmp_path / "echo.sock")
    server = CliServer(["run", "examples/echo.py:app", "--uds", path])
    try:
        assert f"running on unix:{path}" in startup_line(server)
        done = tcpkit_connect("--uds", path, stdin=b"via unix\n")
        assert done.returncode == 0, done.stderr
        assert done.stdout == b"via unix\n"
    finally:
        server.stop()


def startup_line(server: CliServer, timeout: float = 20) -> str:
    """The server's "running on" line (CliServer.wait_started wants a TCP port)."""
    return server.wait_line("running on", timeout)


def test_tls(tmp_path: Path) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "server.pem"))
    server = CliServer(
        [
            "run",
            "examples/echo.py:app",
            "--port",
            "0",
            "--ssl-certfile",
            str(tmp_path / "server.pem"),
        ]
    )
    try:
        port = server.wait_started()
        done = tcpkit_connect(f"127.0.0.1:{port}", "--tls", "--insecure", stdin=b"secret\n")
        assert done.returncode == 0, done.stderr
        assert done.stdout == b"secret\n"
        # The test CA is not trusted by default: a clear error, no traceback.
        done = tcpkit_connect(f"127.0.0.1:{port}", "--tls", stdin=b"secret\n")
        assert done.returncode == 1
        assert b"CERTIFICATE_VERIFY_FAILED" in done.stderr
        assert b"Traceback" not in done.stderr
        # --cafile trusts it (and implies --tls): the certificate is verified
        ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
        done = tcpkit_connect(
            f"127.0.0.1:{port}", "--cafile", str(tmp_path / "ca.pem"), stdin=b"v\n"
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout == b"v\n"
    finally:
        server.stop()


def test_self_signed_server_with_cafile(tmp_path: Path) -> None:
    """The tls_echo example's self-signed certificate, trusted with --cafile (no CA at all)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            *(openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"),
            *("-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    server = CliServer(
        [
            *("run", "examples/echo.py:app", "--port", "0"),
            *("--ssl-certfile", str(cert), "--ssl-keyfile", str(key)),
        ]
    )
    try:
        port = server.wait_started()
        done = tcpkit_connect(f"127.0.0.1:{port}", "--cafile", str(cert), stdin=b"self\n")
        assert done.returncode == 0, done.stderr
        assert done.stdout == b"self\n"
    finally:
        server.stop()


def test_host_and_port_as_two_arguments(echo_port: int) -> None:
    done = tcpkit_connect("127.0.0.1", str(echo_port), stdin=b"nc style\n")
    assert done.returncode == 0, done.stderr
    assert done.stdout == b"nc style\n"


PIPE_TO_HEAD = ("bash", "-c", 'set -o pipefail; "$0" -m tcpkit connect "$1" | head -n 3')


def test_a_closed_stdout_ends_quietly_with_status_0() -> None:
    """``tcpkit connect HOST:PORT | head -n 3`` against an endless stream (chargen)."""
    server = CliServer(["run", "examples/chargen.py:app", "--port", "0"])
    try:
        port = server.wait_started()
        done = subprocess.run(
            [*PIPE_TO_HEAD, sys.executable, f"127.0.0.1:{port}"],
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=30,
        )
    finally:
        server.stop()
    assert done.returncode == 0, done.stderr  # pipefail: tcpkit's own status too
    assert len(done.stdout.splitlines()) == 3
    assert done.stderr == b""


def test_a_refused_connection_is_one_line() -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    done = tcpkit_connect(f"127.0.0.1:{port}")
    assert done.returncode == 1
    assert done.stderr.decode().splitlines() == [
        f"tcpkit: error: [Errno 111] cannot connect to 127.0.0.1:{port}: Connection refused"
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "or --uds PATH"),
        (("127.0.0.1:1", "--uds", "/x"), "or --uds PATH"),
        (("127.0.0.1", "1", "--uds", "/x"), "give either HOST PORT or --uds PATH"),
        (("127.0.0.1", "port"), "bad port 'port'"),
        (("127.0.0.1:1", "--cafile", "/no/such/ca.pem"), "--cafile '/no/such/ca.pem'"),
        (("127.0.0.1:1", "--cafile", "/x", "--insecure"), "contradict"),
        (("127.0.0.1",), "expected HOST:PORT"),
        (("127.0.0.1:1", "--insecure"), "--insecure needs --tls"),
        (("127.0.0.1:1", "--wait", "-1"), "--wait must be >= 0"),
    ],
)
def test_usage_errors(args: tuple[str, ...], message: str) -> None:
    done = tcpkit_connect(*args)
    assert done.returncode == 1
    assert message in done.stderr.decode()
    assert b"Traceback" not in done.stderr
