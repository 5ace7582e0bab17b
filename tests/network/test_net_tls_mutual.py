"""Mutual TLS: the client's certificate, reachable as ``conn.peer_certificate``."""

from __future__ import annotations

import signal
import socket
import ssl
from pathlib import Path
from typing import Any

import anyio
import pytest
import trustme
from helpers import CliServer, LineClient

from tcpkit import App, Connection
from tcpkit.observer import Observer, Rejection


class Rejections(Observer):
    def __init__(self) -> None:
        self.seen: list[Rejection] = []

    def connection_rejected(self, rejection: Rejection) -> None:
        self.seen.append(rejection)


def subject_of(cert: dict[str, Any] | None) -> str:
    """``CN=alice,O=Example`` from ``getpeercert()``'s nested tuples, or ``-``."""
    if not cert:
        return "-"
    names = {key: value for rdn in cert["subject"] for key, value in rdn}
    return f"CN={names.get('commonName')},O={names.get('organizationName')}"


def tls_identity_app() -> App[str, str]:
    """Answers each line with the client certificate's subject, the TLS version and cipher."""
    app: App[str, str] = App()

    @app.on_input
    def answer(conn: Connection[str, str], line: str) -> None:
        cipher = conn.cipher
        conn.put(
            f"{subject_of(conn.peer_certificate)} {conn.tls_version} "
            f"{cipher[0] if cipher else None} {line}"
        )

    return app


class Pki:
    """A CA, a server certificate, and a client certificate for ``alice``."""

    def __init__(self) -> None:
        self.ca = trustme.CA()
        self.server_cert = self.ca.issue_cert("localhost", "127.0.0.1")
        self.client_cert = self.ca.issue_cert(
            "alice@example.com", common_name="alice", organization_name="Example"
        )
        self.stranger = trustme.CA().issue_cert("mallory@example.com", common_name="mallory")

    def server(self, verify: ssl.VerifyMode) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.server_cert.configure_cert(context)
        self.ca.configure_trust(context)
        context.verify_mode = verify
        return context

    def client(self, cert: trustme.LeafCert | None) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        self.ca.configure_trust(context)
        if cert is not None:
            cert.configure_cert(context)
        return context


@pytest.fixture(scope="module")
def pki() -> Pki:
    return Pki()


async def tls_connect(port: int, context: ssl.SSLContext) -> LineClient:
    stream = await anyio.connect_tcp(
        "127.0.0.1",
        port,
        ssl_context=context,
        tls_hostname="localhost",
        tls_standard_compatible=False,
    )
    return LineClient(stream)


async def refused(port: int, context: ssl.SSLContext) -> bool:
    """Whether the server refuses this client (during, or in TLS 1.3 right after, the handshake)."""
    try:
        async with await tls_connect(port, context) as client:
            await client.send("x")
            return await client.recv_until_closed() == b""
    except (ssl.SSLError, anyio.BrokenResourceError, anyio.EndOfStream, OSError):
        return True


@pytest.mark.anyio
async def test_required_client_certificate(pki: Pki) -> None:
    app = tls_identity_app()
    watcher = Rejections()
    async with app.start(ssl=pki.server(ssl.CERT_REQUIRED), observers=[watcher]) as server:
        port = server.port or 0
        assert await refused(port, pki.client(None))  # no certificate
        assert await refused(port, pki.client(pki.stranger))  # one from another CA
        with anyio.fail_after(10):
            while server.stats.rejected < 2:
                await anyio.sleep(0.01)
        async with await tls_connect(port, pki.client(pki.client_cert)) as alice:
            await alice.send("hello")
            reply = await alice.recv_line()
            assert reply.startswith("CN=alice,O=Example TLSv1.3 TLS_")
            assert reply.endswith(" hello")
            (conn,) = server.connections
            cert = conn.peer_certificate
            assert cert is not None and "notAfter" in cert and "issuer" in cert
    assert [r.reason for r in watcher.seen] == ["setup-failed", "setup-failed"]
    assert all(isinstance(r.error, ssl.SSLError) for r in watcher.seen)


@pytest.mark.anyio
async def test_optional_client_certificate(pki: Pki) -> None:
    app = tls_identity_app()
    async with app.start(ssl=pki.server(ssl.CERT_OPTIONAL)) as server:
        port = server.port or 0
        async with await tls_connect(port, pki.client(None)) as anonymous:
            await anonymous.send("anon")
            assert (await anonymous.recv_line()).startswith("- TLSv1.3 ")
        async with await tls_connect(port, pki.client(pki.client_cert)) as alice:
            await alice.send("me")
            assert (await alice.recv_line()).startswith("CN=alice,O=Example TLSv1.3 ")


@pytest.mark.anyio
async def test_plain_connections_have_no_tls_attributes() -> None:
    app = tls_identity_app()
    async with (
        app.start() as server,
        LineClient(await anyio.connect_tcp("127.0.0.1", server.port or 0)) as client,
    ):
        await client.send("plain")
        assert await client.recv_line() == "- None None plain"


APP_FILE = """
from tcpkit import App

app = App()


@app.on_input
def answer(conn, line):
    cert = conn.peer_certificate or {}
    names = [value for rdn in cert.get("subject", ()) for key, value in rdn if key == "commonName"]
    conn.put(f"{','.join(names) or '-'} {line}")
"""


def ask_over_tls(context: ssl.SSLContext, port: int) -> None:
    """Send a line; raise if refused (in TLS 1.3 the refusal comes after the handshake)."""
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        tls.sendall(b"x\n")
        if not tls.recv(100):
            raise EOFError


def test_cli_mutual_tls_the_app_sees_the_subject(pki: Pki, tmp_path: Path) -> None:
    certfile, cafile, clientfile = tmp_path / "server.pem", tmp_path / "ca.pem", tmp_path / "c.pem"
    pki.server_cert.private_key_and_cert_chain_pem.write_to_path(str(certfile))
    pki.ca.cert_pem.write_to_path(str(cafile))
    pki.client_cert.private_key_and_cert_chain_pem.write_to_path(str(clientfile))
    (tmp_path / "whois.py").write_text(APP_FILE)
    server = CliServer(
        [
            *("run", f"{tmp_path / 'whois.py'}:app", "--port", "0"),
            *("--ssl-certfile", str(certfile), "--ssl-ca-certs", str(cafile)),
            *("--ssl-cert-reqs", "required"),
        ]
    )
    port = server.wait_started()
    try:
        anonymous = ssl.create_default_context(cafile=str(cafile))
        with pytest.raises((ssl.SSLError, ConnectionResetError, BrokenPipeError, EOFError)):
            ask_over_tls(anonymous, port)
        known = ssl.create_default_context(cafile=str(cafile))
        known.load_cert_chain(str(clientfile))
        with (
            socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
            known.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
        ):
            tls.sendall(b"who\n")
            assert tls.recv(100) == b"alice who\r\n"
    finally:
        code, _, err = server.stop(signal.SIGINT)
    assert code == 0, err
