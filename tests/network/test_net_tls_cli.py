"""TLS from the command line (--ssl-certfile/--ssl-keyfile) and the tls_echo example."""

from __future__ import annotations

import signal
import socket
import ssl

import anyio
import pytest
from helpers import CliServer, LineClient, run_cli
from netutil import Certs

from examples.tls_echo import app, server_context


@pytest.mark.anyio
async def test_tls_echo_example(certs: Certs) -> None:
    context = server_context(str(certs.certfile), str(certs.keyfile))
    async with app.start(ssl=context) as server:
        stream = await anyio.connect_tcp(
            "127.0.0.1",
            server.port or 0,
            ssl_context=certs.client,
            tls_hostname="localhost",
            tls_standard_compatible=False,
        )
        async with LineClient(stream) as client:
            assert await client.recv_line() == "hello over TLSv1.3"
            await client.send("ping")
            assert await client.recv_line() == "ping"


@pytest.mark.slow
def test_cli_serves_tls_from_cert_files(certs: Certs) -> None:
    server = CliServer(
        [
            "run",
            "examples/tls_echo.py:app",
            "--port",
            "0",
            "--ssl-certfile",
            str(certs.certfile),
            "--ssl-keyfile",
            str(certs.keyfile),
        ]
    )
    try:
        port = server.wait_started()
        assert "running on tls 127.0.0.1:" in server.startup
        with (
            socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
            certs.client.wrap_socket(raw, server_hostname="localhost") as tls,
        ):
            assert tls.version() == "TLSv1.3"
            reader = tls.makefile("rb")
            assert reader.readline() == b"hello over TLSv1.3\r\n"
            tls.sendall(b"over the cli\r\n")
            assert reader.readline() == b"over the cli\r\n"
            reader.close()
        # a plain client is refused without stopping the server
        with socket.create_connection(("127.0.0.1", port), timeout=10) as plain:
            plain.sendall(b"clear text\r\n")
            try:
                assert b"clear text" not in plain.recv(1024)
            except ConnectionResetError:
                pass
    finally:
        code, _, err = server.stop(signal.SIGINT)
    assert code == 0, err


def test_cli_keyfile_needs_a_certfile(certs: Certs) -> None:
    result = run_cli("run", "examples/tls_echo.py:app", "--ssl-keyfile", str(certs.keyfile))
    assert result.returncode == 1
    assert result.stderr.strip() == "tcpkit: error: --ssl-keyfile needs --ssl-certfile"


def test_cli_bad_certificate_is_a_one_line_error() -> None:
    result = run_cli("run", "examples/tls_echo.py:app", "--ssl-certfile", "/nonexistent.pem")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "tcpkit: error: --ssl-certfile: no such file: '/nonexistent.pem'"
    ]


def test_server_context_is_tls_1_2_or_newer(certs: Certs) -> None:
    context = server_context(str(certs.certfile), str(certs.keyfile))
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2
