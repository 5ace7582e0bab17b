"""A custom ``@app.acceptor`` gets the same setup as default handling (SPEC.md §11).

PROXY header parsed (``remote_addr`` is the real client), TLS done (the
acceptor reads plaintext), ``setup_timeout`` applied; handlers that an
acceptor makes unused are refused at registration, like ``on_input``.
Per backend, not per path: an acceptor replaces the connection machinery.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio
import anyio.abc
import pytest
from pathharness import Harness
from pathmatrix import Path, per_backend

from tcpkit import App, RegistrationError

pytestmark = pytest.mark.anyio


def line_acceptor(h: Harness, bound: float) -> Callable[..., Any]:
    """An acceptor that reads one line (bounded by ``bound`` s) and answers ``got:<line>``."""

    async def acceptor(stream: anyio.abc.ByteStream, remote_addr: Any) -> None:
        h.rec.note(f"accepted from {remote_addr!r}")
        data = b""
        with anyio.move_on_after(bound):
            while b"\n" not in data:
                try:
                    data += await stream.receive()
                except (anyio.EndOfStream, anyio.BrokenResourceError):
                    break
        h.rec.note(f"read {data!r}")
        if data.endswith(b"\n"):
            await stream.send(b"got:" + data)

    return acceptor


@per_backend(stream="tls")
async def test_an_acceptor_with_tls_reads_plaintext(path: Path, h: Harness) -> None:
    app: App[str, str] = App()
    app.add_acceptor(line_acceptor(h, 2 * h.timeout))
    async with h.serve(app) as served:
        client = await served.connect()  # the TLS handshake is the server's to do
        await client.send(b"hello\n")
        assert await client.recv_lines(1) == ["got:hello"]
    assert h.rec.log[1:] == ["read b'hello\\n'"]


@per_backend()
async def test_an_acceptor_behind_a_proxy_sees_the_real_client_and_not_the_header(
    path: Path, h: Harness
) -> None:
    app: App[str, str] = App(proxy_protocol=True)
    app.add_acceptor(line_acceptor(h, 2 * h.timeout))
    async with h.serve(app) as served:
        client = await served.connect()
        await client.send(b"PROXY TCP4 203.0.113.7 127.0.0.1 4242 80\r\nhello\n")
        lines = await client.recv_lines(1)
    assert h.rec.log == ["accepted from ('203.0.113.7', 4242)", "read b'hello\\n'"]
    assert lines == ["got:hello"]


@per_backend()
async def test_an_acceptors_setup_is_bounded_by_setup_timeout(path: Path, h: Harness) -> None:
    app: App[str, str] = App(proxy_protocol=True, setup_timeout=0.2)
    app.add_acceptor(line_acceptor(h, 2 * h.timeout))
    async with h.serve(app) as served:
        client = await served.connect()  # and never sends its PROXY header
        ending = await client.recv_until_closed()
    assert ending.data == b""
    assert h.rec.log == []  # the acceptor never ran


# -- registration -------------------------------------------------------------------------


def _register(app: App[str, str], kind: str) -> None:
    def func(*args: Any) -> None:
        pass

    if kind == "on_event":
        app.add_on_event("tick", func)
    else:
        getattr(app, f"add_{kind}")(func)


@pytest.mark.parametrize("acceptor_first", [True, False], ids=["acceptor-first", "handler-first"])
@pytest.mark.parametrize(
    "kind", ["pre_connect", "on_connect", "on_disconnect", "on_error", "on_flushed", "on_event"]
)
def test_handlers_an_acceptor_makes_unused_are_refused(kind: str, acceptor_first: bool) -> None:
    app: App[str, str] = App()
    if acceptor_first:
        app.add_acceptor(lambda stream, addr: None)
        with pytest.raises(RegistrationError, match="acceptor"):
            _register(app, kind)
    else:
        _register(app, kind)
        with pytest.raises(RegistrationError, match="acceptor"):
            app.add_acceptor(lambda stream, addr: None)


@pytest.mark.parametrize("acceptor_first", [True, False], ids=["acceptor-first", "handler-first"])
def test_on_input_with_an_acceptor_is_refused(acceptor_first: bool) -> None:
    app: App[str, str] = App()
    steps = [lambda: app.add_acceptor(lambda s, a: None), lambda: _register(app, "on_input")]
    first, second = steps if acceptor_first else steps[::-1]
    first()
    with pytest.raises(RegistrationError, match="acceptor"):
        second()


@pytest.mark.parametrize("kind", ["on_started", "on_stopped", "on_listen_error"])
def test_server_handlers_go_with_an_acceptor(kind: str) -> None:
    app: App[str, str] = App()
    app.add_acceptor(lambda stream, addr: None)
    _register(app, kind)  # no error: the server still starts, stops, listens
