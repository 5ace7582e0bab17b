"""Fixtures of the operations tests: no server process outlives its test."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import CliServer


@pytest.fixture(autouse=True)
def _reap_servers() -> Iterator[None]:
    """Kill the ``tcpkit run`` processes a test started and left running (when it failed)."""
    before = len(CliServer.started)
    yield
    for server in CliServer.started[before:]:
        server.kill()
    del CliServer.started[before:]


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    """A short directory for Unix sockets (a socket path is limited to about 100 bytes)."""
    directory = Path(tempfile.mkdtemp(prefix="tcpkit-", dir="/tmp"))
    yield directory
    shutil.rmtree(directory, ignore_errors=True)
