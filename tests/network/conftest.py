"""Fixtures for the network tests: a throw-away certificate authority, short socket paths.

Certificates come from ``trustme`` (a test CA): the server's certificate is
for ``localhost``, ``127.0.0.1`` and ``::1``.
"""

from __future__ import annotations

import shutil
import ssl
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme
from netutil import Certs


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1", "::1")
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server)
    client = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ca.configure_trust(client)
    directory = tmp_path_factory.mktemp("certs")
    certfile, keyfile, cafile = directory / "cert.pem", directory / "key.pem", directory / "ca.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(certfile))
    cert.private_key_pem.write_to_path(str(keyfile))
    ca.cert_pem.write_to_path(str(cafile))
    return Certs(server, client, certfile, keyfile, cafile)


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    """A short directory for Unix sockets (a socket path is limited to about 100 bytes)."""
    directory = Path(tempfile.mkdtemp(prefix="tcpkit-", dir="/tmp"))
    yield directory
    shutil.rmtree(directory, ignore_errors=True)
