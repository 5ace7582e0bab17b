"""The path matrix's plumbing: rows as parameters, defaults vs ``slow``, known differences.

A check decorated with :func:`pathmatrix.matrix` or :func:`pathmatrix.per_backend`
and taking a ``path`` argument is parametrized over its rows; ``anyio_backend``
follows the row. Rows listed in :data:`pathdiffs.KNOWN_DIFFERENCES` are
``xfail(strict=True)``.

Rows outside the check's covering subset are marked ``slow`` and run only
with ``TCPKIT_PATH_MATRIX=full`` in the environment (``make test-slow``,
``make test-paths-full``); otherwise they are deselected, so that any other
run (``pytest -m slow`` included) runs the covering subset only.
"""

from __future__ import annotations

import os
import shutil
import ssl
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path as FsPath
from typing import Any

import pytest
import trustme
from pathclient import KNOWN_FAILURE_TIMEOUT, TIMEOUT
from pathdiffs import differences_for
from pathharness import Harness
from pathmatrix import Path, rows_of


@dataclass(frozen=True)
class Tls:
    server: ssl.SSLContext
    client: ssl.SSLContext


@pytest.fixture(scope="session")
def tls() -> Tls:
    """A throw-away CA (trustme) and a certificate for 127.0.0.1, as in tests/network."""
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1", "::1")
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server)
    client = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ca.configure_trust(client)
    return Tls(server, client)


@pytest.fixture
def sock_dir() -> Iterator[FsPath]:
    """A short directory for Unix sockets (a socket path is limited to about 100 bytes)."""
    directory = FsPath(tempfile.mkdtemp(prefix="tcpkit-", dir="/tmp"))
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def anyio_backend(path: Path) -> Any:
    """The row's backend (overrides the suite's three-backend parametrization)."""
    return path.anyio_backend


@pytest.fixture
def h(request: pytest.FixtureRequest, path: Path, tls: Tls, sock_dir: FsPath) -> Harness:
    """The check's harness; a known difference (xfail) gets short client waits."""
    known = request.node.get_closest_marker("xfail") is not None
    return Harness(
        path, tls.server, tls.client, sock_dir, KNOWN_FAILURE_TIMEOUT if known else TIMEOUT
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "path" not in metafunc.fixturenames:
        return
    rows = rows_of(metafunc.function)
    assert rows is not None, (
        f"{metafunc.function.__name__} takes `path` without @matrix/@per_backend"
    )
    metafunc.parametrize("path", rows.all, ids=[r.id for r in rows.all])


FULL = os.environ.get("TCPKIT_PATH_MATRIX") == "full"
"""Run the full product, not only the covering subset."""


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by marker
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = FsPath(__file__).parent
    kept: list[pytest.Item] = []
    deselected: list[pytest.Item] = []
    for item in items:
        kept.append(item)
        if not isinstance(item, pytest.Function) or item.path.parent != here:
            continue
        callspec = getattr(item, "callspec", None)
        path: Path | None = callspec.params.get("path") if callspec is not None else None
        rows = rows_of(item.function)
        if path is not None and rows is not None and path not in rows.default:
            if not FULL:
                deselected.append(kept.pop())
                continue
            item.add_marker(pytest.mark.slow)
        found = differences_for(item.originalname, path)
        if found:
            reason = "; ".join(d.reason for d in found)
            raises = found[0].raises if len(found) == 1 else None
            item.add_marker(pytest.mark.xfail(strict=True, reason=reason, raises=raises))
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = kept
