"""examples/chat.py over loopback: broadcast, /nick, /who, /msg, /quit."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import pytest
from helpers import LineClient

from examples.chat import app
from tcpkit import Server

pytestmark = pytest.mark.anyio

WELCOME = "Commands: /nick NAME, /who, /msg NAME TEXT, /quit"


@asynccontextmanager
async def join(server: Server[str, str]) -> AsyncIterator[LineClient]:
    async with await LineClient.connect(server.port or 0) as client:
        welcome = await client.recv_line()
        assert welcome.endswith(WELCOME)
        yield client


async def test_lines_go_to_everyone_else() -> None:
    async with app.start() as server, join(server) as ann, join(server) as jos:
        assert await ann.recv_line() == "* guest2 joined"
        await jos.send("hello, everyone", "/who")
        assert await ann.recv_line() == "<guest2> hello, everyone"
        # Nobody hears their own lines: jos's next line is the answer to /who.
        assert await jos.recv_line() == "* 2 connected: guest1, guest2"
        await ann.send("hi jos", "", "   ", "bye jos")  # blank lines are not broadcast
        assert await jos.recv_lines(2) == ["<guest1> hi jos", "<guest1> bye jos"]


async def test_nick_changes_are_checked_and_announced() -> None:
    async with app.start() as server, join(server) as ann, join(server) as jos:
        assert await ann.recv_line() == "* guest2 joined"
        await ann.send("/nick ann")
        assert await ann.recv_line() == "* you are now ann"
        assert await jos.recv_line() == "* guest1 is now ann"
        await jos.send("/nick ANN")
        assert await jos.recv_line() == "* ANN is already taken"
        await jos.send("/nick no spaces")
        assert await jos.recv_line() == "* a nickname is 1 to 20 letters, digits, '_' or '-'"
        await jos.send("/nick " + "j" * 21)
        assert await jos.recv_line() == "* a nickname is 1 to 20 letters, digits, '_' or '-'"
        await jos.send("/nick jos")
        assert await jos.recv_line() == "* you are now jos"
        assert await ann.recv_line() == "* guest2 is now jos"
        await ann.send("/nick Ann")  # one's own nickname, in another case
        assert await ann.recv_line() == "* you are now Ann"
        assert await jos.recv_line() == "* ann is now Ann"
        await jos.send("/who")
        assert await jos.recv_line() == "* 2 connected: Ann, jos"


async def test_private_messages_reach_one_person() -> None:
    async with (
        app.start() as server,
        join(server) as ann,
        join(server) as jos,
        join(server) as eve,
    ):
        assert await ann.recv_lines(2) == ["* guest2 joined", "* guest3 joined"]
        assert await jos.recv_line() == "* guest3 joined"
        await ann.send("/msg guest2 psst")
        assert await jos.recv_line() == "*guest1* psst"
        await ann.send("/msg nobody hello", "/msg guest2")
        usage = "* usage: /msg NAME TEXT (NAME must be connected; see /who)"
        assert await ann.recv_lines(2) == [usage, usage]
        await eve.send("/who")  # eve heard no private message: this comes first
        assert await eve.recv_line() == "* 3 connected: guest1, guest2, guest3"


async def test_quit_says_goodbye_and_the_others_are_told() -> None:
    async with app.start() as server, join(server) as ann, join(server) as jos:
        assert await ann.recv_line() == "* guest2 joined"
        await jos.send("/quit", "this line comes after /quit")
        assert await jos.recv_line() == "* Bye!"
        assert await jos.recv_until_closed() == b""
        # The line after /quit was never broadcast: "left" comes next.
        assert await ann.recv_line() == "* guest2 left"


async def test_a_client_that_just_disconnects_is_announced() -> None:
    async with app.start() as server, join(server) as ann:
        async with join(server):
            assert await ann.recv_line() == "* guest2 joined"
        assert await ann.recv_line() == "* guest2 left"
        with anyio.fail_after(5):
            while server.connection_count != 1:
                await anyio.sleep(0.01)


async def test_unknown_commands_get_help() -> None:
    async with app.start() as server, join(server) as ann:
        await ann.send("/dance")
        assert await ann.recv_line() == "* unknown command /dance; try /nick, /who, /msg or /quit"
