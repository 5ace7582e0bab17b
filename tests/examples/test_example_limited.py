"""examples/limited.py over loopback: max_connections and set_max_connections."""

from __future__ import annotations

import pytest
from helpers import LineClient

from examples.limited import app

pytestmark = pytest.mark.anyio


async def status(client: LineClient) -> str:
    await client.send("status")
    return await client.recv_line()


async def test_a_third_client_waits_until_a_slot_frees() -> None:
    async with app.start() as server:
        one = await LineClient.connect(server.port or 0)
        assert await one.recv_line() == "hello, client 1 of at most 2"
        two = await LineClient.connect(server.port or 0)
        assert await two.recv_line() == "hello, client 2 of at most 2"
        # The third connect succeeds (the kernel's backlog), but it is not accepted.
        three = await LineClient.connect(server.port or 0)
        await three.send("status")
        assert await status(one) == "connections 2, limit at most 2, accepted 2 in all"
        await one.send("quit")
        assert await one.recv_line() == "bye"
        assert await one.recv_until_closed() == b""
        # Now it is accepted, greeted, and its early "status" is answered.
        assert await three.recv_line() == "hello, client 2 of at most 2"
        assert await three.recv_line() == "connections 2, limit at most 2, accepted 3 in all"
        for client in (one, two, three):
            await client.aclose()


async def test_close_and_open_change_the_limit_at_run_time() -> None:
    async with app.start() as server, await LineClient.connect(server.port or 0) as admin:
        assert await admin.recv_line() == "hello, client 1 of at most 2"
        await admin.send("close")
        assert await admin.recv_line() == "closed: no new clients until 'open'"
        assert server.max_connections == 0
        waiting = await LineClient.connect(server.port or 0)
        assert await status(admin) == "connections 1, limit at most 0, accepted 1 in all"
        await admin.send("open 5")
        assert await admin.recv_line() == "open: at most 5 clients"
        assert await waiting.recv_line() == "hello, client 2 of at most 5"
        await admin.send("unlimited")
        assert await admin.recv_line() == "open: unlimited clients"
        assert server.max_connections is None
        others = [await LineClient.connect(server.port or 0) for _ in range(4)]
        greetings = sorted([await client.recv_line() for client in others])
        assert greetings == [f"hello, client {n} of unlimited" for n in range(3, 7)]
        await admin.send("open")
        assert await admin.recv_line() == "open: at most 2 clients"
        # Lowering the limit closes nobody.
        assert await status(admin) == "connections 6, limit at most 2, accepted 6 in all"
        for client in [waiting, *others]:
            await client.aclose()


async def test_bad_commands_get_usage() -> None:
    async with app.start() as server, await LineClient.connect(server.port or 0) as client:
        await client.recv_line()
        await client.send("open many", "open 1 2", "dance", "")
        assert await client.recv_lines(4) == [
            "usage: open [N]",
            "usage: open [N]",
            "commands: status, close, open [N], unlimited, quit",
            "commands: status, close, open [N], unlimited, quit",
        ]
        assert server.max_connections == 2


async def test_each_server_starts_with_the_apps_limit() -> None:
    async with app.start() as server, await LineClient.connect(server.port or 0) as client:
        await client.recv_line()
        await client.send("unlimited")
        await client.recv_line()
    async with app.start() as server:  # set_max_connections changed the server, not the app
        assert server.max_connections == 2
