"""examples/acceptor.py over loopback: a custom acceptor with its own framing."""

from __future__ import annotations

import anyio
import pytest
from helpers import LineClient

import examples.acceptor
from examples.acceptor import answer, app


def test_answers() -> None:
    assert answer("") == (
        "ann        Ann Barcomb\r\njos        Jos Boumans\r\nrocco      Rocco Caputo"
    )
    assert answer("/W") == answer("")
    assert answer("rocco") == (
        "Login: rocco      Name: Rocco Caputo\r\nPlan: Wrote POE::Component::Server::TCP."
    )
    assert answer("/W Rocco") == answer("rocco")
    assert answer("nobody") == "finger: nobody: no such user"
    assert answer("rocco@example.org") == "finger: forwarding is not supported"


async def finger(port: int, query: bytes) -> bytes:
    async with await LineClient.connect(port) as client:
        await client.send_raw(query)
        return await client.recv_until_closed()


@pytest.mark.anyio
async def test_one_query_one_answer_then_close() -> None:
    async with app.start() as server:
        assert await finger(server.port or 0, b"\r\n") == (answer("") + "\r\n").encode()
        assert await finger(server.port or 0, b"jos\n") == (answer("jos") + "\r\n").encode()
        assert await finger(server.port or 0, b"x" * 600) == b"finger: query too long\r\n"
        with anyio.fail_after(5):
            while server.connection_count:
                await anyio.sleep(0.01)
        assert server.stats.total == 3
        assert server.connections == []  # an acceptor's streams are not Connections


@pytest.mark.anyio
async def test_a_client_that_sends_more_still_gets_the_whole_answer() -> None:
    async with app.start() as server:
        reply = await finger(server.port or 0, b"rocco\r\nand more\r\n" + b"y" * 100_000)
        assert reply == (answer("rocco") + "\r\n").encode()


@pytest.mark.anyio
async def test_the_acceptor_holds_its_slot_until_it_returns(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(examples.acceptor, "QUERY_TIMEOUT", 0.2)
    async with app.start() as server, await LineClient.connect(server.port or 0) as silent:
        with anyio.fail_after(5):
            while server.connection_count != 1:
                await anyio.sleep(0.01)
        # A silent client is dropped after QUERY_TIMEOUT, without an answer.
        assert await silent.recv_until_closed() == b""
        with anyio.fail_after(5):
            while server.connection_count:
                await anyio.sleep(0.01)
