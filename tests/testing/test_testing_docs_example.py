"""Tests for a small chat server: a complete file to copy and adapt (docs/testing.md)."""

from __future__ import annotations

import anyio
import pytest

from tcpkit import App, Connection
from tcpkit.pytest_plugin import ClientFactory, ServerFactory, tcpkit_backends
from tcpkit.testing import TestClient, TestServer

# -- the app under test (in your project: `from myproject.server import app`) --

app = App(name="chat")


@app.on_connect
async def welcome(conn: Connection[str, str]) -> None:
    await conn.send(f"welcome, {conn.remote_ip}")


@app.on_input
async def said(conn: Connection[str, str], line: str) -> None:
    if line == "/quit":
        await conn.send("bye")
        conn.shutdown()
    elif line == "/crash":
        raise RuntimeError("a bug in the handler")
    else:
        conn.server.broadcast(f"{conn.id}: {line}", exclude=conn)


# -- run every test on asyncio and on trio ---------------------------------------


@pytest.fixture(params=tcpkit_backends("asyncio", "trio"))
def anyio_backend(request: pytest.FixtureRequest) -> object:
    return request.param


pytestmark = pytest.mark.anyio


# -- the tests ---------------------------------------------------------------------


async def test_welcome_and_quit() -> None:
    async with TestClient(app, remote_addr=("192.0.2.7", 40000)) as client:
        assert await client.receive() == "welcome, 192.0.2.7"
        await client.send("/quit")
        assert [line async for line in client] == ["bye"]  # then the server closes


async def test_lines_go_to_everyone_else() -> None:
    async with TestServer(app) as chat:
        ann, bob = await chat.connect(), await chat.connect()
        assert await ann.receive() == "welcome, 127.0.0.1"
        assert await bob.receive() == "welcome, 127.0.0.1"
        await ann.send("hi bob")
        assert await bob.receive() == "1: hi bob"
        await anyio.wait_all_tasks_blocked()  # let everything settle, then:
        with pytest.raises(anyio.WouldBlock):
            ann.receive_nowait()  # nobody hears their own lines


async def test_a_handler_bug_fails_the_test() -> None:
    async with TestClient(app) as client:
        await client.receive()
        await client.send("/crash")
        with pytest.raises(RuntimeError, match="a bug in the handler"):
            await client.receive()


async def test_with_the_plugin_fixtures(
    tcpkit_client: ClientFactory, tcpkit_server: ServerFactory
) -> None:
    async with tcpkit_client(app) as client:  # in memory
        assert await client.receive() == "welcome, 127.0.0.1"
    async with tcpkit_server(app) as live, live.connect() as channel:  # a real socket
        assert await channel.receive() == "welcome, 127.0.0.1"
        await channel.send("/quit")
        assert await channel.receive() == "bye"
