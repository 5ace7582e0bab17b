"""tcpkit's pytest plugin: fixtures to test tcpkit apps, on asyncio and trio.

pytest loads it by itself once tcpkit is installed (entry point ``pytest11``).
Async tests run under anyio's pytest plugin (``@pytest.mark.anyio``).

Fixtures:

* ``tcpkit_client`` -- ``async with tcpkit_client(app) as client:`` drives the
  app in memory: a :class:`tcpkit.testing.TestClient` (no socket, no port).
* ``tcpkit_server`` -- ``async with tcpkit_server(app) as live:`` serves the app
  on 127.0.0.1 and a port the OS picks: a :class:`tcpkit.testing.LiveServer`
  (``live.port``, ``live.server``, ``async with live.connect() as channel``).

Backends: anyio's own ``anyio_backend`` fixture decides where async tests
run (anyio 4.12 and later: on every installed backend, asyncio and trio;
before: asyncio only). This plugin defines no such fixture, so a project's
own one always wins; :func:`tcpkit_backends` gives the parameters to choose
the backends explicitly, uvloop included::

    # conftest.py
    import pytest
    from tcpkit.pytest_plugin import tcpkit_backends

    @pytest.fixture(params=tcpkit_backends(), scope="session")
    def anyio_backend(request):
        return request.param

or, for one module, ``pytestmark = pytest.mark.parametrize("anyio_backend",
tcpkit_backends())``.

tcpkit itself is imported only when a fixture is used, so that loading the
plugin does not import the package before a coverage tool starts measuring.
"""

from __future__ import annotations

import importlib.util
import sys
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import pytest

if TYPE_CHECKING:
    import ssl

    from _pytest.mark.structures import ParameterSet

    from .app import App
    from .testing import LiveServer, TestClient

__all__ = ["ClientFactory", "ServerFactory", "tcpkit_backends"]

In = TypeVar("In")
Out = TypeVar("Out")

_BACKENDS: dict[str, tuple[str, dict[str, Any]]] = {
    "asyncio": ("asyncio", {}),
    "uvloop": ("asyncio", {"use_uvloop": True}),
    "trio": ("trio", {}),
}
_LIBRARY = {"uvloop": "uvloop", "trio": "trio"}
_DEFAULT_BACKENDS = ("asyncio", "trio")


def tcpkit_backends(*names: str) -> list[ParameterSet]:
    """Parameters for anyio's ``anyio_backend`` fixture: the backends to run tests on.

    Use them as ``@pytest.fixture(params=tcpkit_backends(), scope="session")``
    on an ``anyio_backend`` fixture, or in ``pytest.mark.parametrize(
    "anyio_backend", tcpkit_backends())``. Each value is anyio's
    ``(backend_name, backend_options)`` pair, with the test id ``asyncio``,
    ``uvloop`` or ``trio``. A backend whose library is not installed is kept
    and skipped, so that it shows in the report instead of vanishing.

    Args:
        names: any of ``"asyncio"``, ``"uvloop"`` (asyncio with uvloop's event
            loop) and ``"trio"``; default ``"asyncio", "trio"``.

    Raises:
        ValueError: an unknown or repeated backend name.
    """
    chosen = names or _DEFAULT_BACKENDS
    if len(set(chosen)) != len(chosen):
        raise ValueError(f"a backend is named twice in {chosen!r}")
    params: list[ParameterSet] = []
    for name in chosen:
        if name not in _BACKENDS:
            known = ", ".join(repr(known) for known in _BACKENDS)
            raise ValueError(f"unknown backend {name!r}; choose among {known}")
        marks: list[pytest.MarkDecorator] = []
        library = _LIBRARY.get(name)
        if library is not None and importlib.util.find_spec(library) is None:
            marks.append(pytest.mark.skip(reason=f"{library} is not installed"))
        elif name == "uvloop" and sys.platform == "win32":
            marks.append(pytest.mark.skip(reason="uvloop does not run on Windows"))
        backend, options = _BACKENDS[name]
        params.append(pytest.param((backend, dict(options)), id=name, marks=marks))
    return params


class ClientFactory(Protocol):
    """The ``tcpkit_client`` fixture: builds a :class:`~tcpkit.testing.TestClient`."""

    def __call__(
        self,
        app: App[In, Out],
        *,
        raise_app_exceptions: bool = True,
        remote_addr: tuple[str, int] | str = ("127.0.0.1", 50000),
        buffer_size: int = 65536,
    ) -> TestClient[In, Out]:
        """``async with tcpkit_client(app) as client:``; see :class:`~tcpkit.testing.TestClient`."""
        ...


class ServerFactory(Protocol):
    """The ``tcpkit_server`` fixture: serves an app on loopback (see ``live_server``)."""

    def __call__(
        self,
        app: App[In, Out],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        ssl: ssl.SSLContext | None = None,
    ) -> AbstractAsyncContextManager[LiveServer[In, Out]]:
        """``async with tcpkit_server(app) as live:``; see :func:`~tcpkit.testing.live_server`."""
        ...


@pytest.fixture
def tcpkit_client() -> ClientFactory:
    """Drive an app in memory: ``async with tcpkit_client(app) as client:``.

    ``client`` is a :class:`tcpkit.testing.TestClient`: ``await
    client.send(message)``, ``await client.receive()``, ``async for``,
    ``client.connection``, ``await client.connect()`` for more clients. An
    exception the app raises (and would only log) is raised in the test.
    Leaving the block shuts the app down.
    """
    from .testing import TestClient

    return TestClient


@pytest.fixture
def tcpkit_server() -> ServerFactory:
    """Serve an app on a real socket: ``async with tcpkit_server(app) as live:``.

    The app listens on 127.0.0.1 and a port the OS picks (``live.port``);
    ``async with live.connect() as channel:`` is a :func:`tcpkit.connect`
    speaking the app's codecs. Leaving the block shuts the server down as
    leaving ``app.start()`` does.
    """
    from .testing import live_server

    return live_server
