"""The real HAProxy's PROXY v2 TLVs, checksum included, as ``conn.proxy`` reads them.

HAProxy terminates TLS (with a client certificate) and forwards to tcpkit
with ``send-proxy-v2`` and every TLV option it has: a CRC32C checksum, the
unique id, the authority (SNI), and the SSL TLV with its sub-TLVs. tcpkit
trusts only 127.0.0.1 (``proxy_protocol=["127.0.0.1"]``). This checks the
checksum against an implementation other than tcpkit's and its tests'.
"""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import time
from pathlib import Path
from typing import Any

import anyio
import pytest
import trustme

from tcpkit import App, Connection
from tcpkit.proxy import ProxyHeader

HAPROXY = shutil.which("haproxy")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.anyio,
    pytest.mark.skipif(HAPROXY is None, reason="haproxy is not installed"),
]

CONFIG = """
global
    log stderr format short local0 info

defaults
    mode tcp
    log global
    timeout connect 2s
    timeout client 30s
    timeout server 30s

frontend front
    bind 127.0.0.1:{front} ssl crt {server_pem} ca-file {ca_pem} verify optional alpn x-test
    unique-id-format conn-%ci-%cp
    default_backend app

backend app
    server app 127.0.0.1:{port} send-proxy-v2 proxy-v2-options {options}
"""
OPTIONS = "crc32c,unique-id,authority,ssl,cert-cn,ssl-cipher,cert-sig,cert-key"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ask(port: int, context: ssl.SSLContext, proc: subprocess.Popen[str]) -> bytes:
    """Connect through HAProxy (retrying while it starts), send a line, read the answer."""
    deadline = time.monotonic() + 20
    while True:
        assert proc.poll() is None, "haproxy exited"
        try:
            raw = socket.create_connection(("127.0.0.1", port), timeout=10)
            break
        except OSError:
            assert time.monotonic() < deadline, "haproxy does not listen"
            time.sleep(0.05)
    with raw, context.wrap_socket(raw, server_hostname="localhost") as tls:
        tls.sendall(b"hello\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = tls.recv(4096)
            if not chunk:
                break
            data += chunk
    return data


async def test_haproxy_v2_tlvs_and_checksum(tmp_path: Path) -> None:
    assert HAPROXY is not None
    ca = trustme.CA()
    server_pem, ca_pem = tmp_path / "server.pem", tmp_path / "ca.pem"
    ca.issue_cert("localhost").private_key_and_cert_chain_pem.write_to_path(str(server_pem))
    ca.cert_pem.write_to_path(str(ca_pem))
    client = ssl.create_default_context(cafile=str(ca_pem))
    ca.issue_cert("alice@example.com", common_name="alice").configure_cert(client)
    client.set_alpn_protocols(["x-test"])

    seen: list[tuple[ProxyHeader | None, Any]] = []
    app: App[str, str] = App(proxy_protocol=["127.0.0.1"])

    @app.on_input
    def answer(conn: Connection[str, str], line: str) -> None:
        seen.append((conn.proxy, conn.remote_addr))
        conn.put(f"ok {line}")

    async with app.start() as server:
        front = free_port()
        config = tmp_path / "haproxy.cfg"
        config.write_text(
            CONFIG.format(
                front=front,
                server_pem=server_pem,
                ca_pem=ca_pem,
                port=server.port,
                options=OPTIONS,
            )
        )
        proc = subprocess.Popen(
            [HAPROXY, "-f", str(config), "-db"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            reply = await anyio.to_thread.run_sync(ask, front, client, proc)
        finally:
            proc.terminate()
            _, log = proc.communicate(timeout=10)
        assert reply == b"ok hello\r\n", log[-2000:]
        assert server.stats.rejected == 0
    ((header, remote),) = seen
    assert header is not None and header.version == 2 and header.command == "PROXY"
    assert header.source == remote and remote[0] == "127.0.0.1"
    assert header.crc32c is not None  # present, and it matched (else: rejected)
    assert header.unique_id == f"conn-127.0.0.1-{remote[1]}".encode()
    assert header.authority == "localhost"
    assert header.alpn == b"x-test"
    ssl_info = header.ssl
    assert ssl_info is not None
    assert ssl_info.client_ssl and ssl_info.client_cert_conn and ssl_info.verified
    assert ssl_info.cn == "alice"
    assert ssl_info.version is not None and ssl_info.version.startswith("TLSv1")
    assert ssl_info.cipher and ssl_info.sig_alg and ssl_info.key_alg
