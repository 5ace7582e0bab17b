"""``on_flushed`` after output from every kind of handler: a download driven by it.

A command starts a download; every ``on_flushed`` sends the next chunk (POE's
ClientFlushed pattern for streaming). Every chunk must arrive, whichever
handler kind started it and on every backend.
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from tcpkit import App, Connection

pytestmark = pytest.mark.anyio

CHUNKS = 50


def download_app(kind: str) -> App[str, str]:
    app: App[str, str] = App(state=dict)

    def start(conn: Connection[str, str]) -> None:
        conn.state["left"] = CHUNKS - 1
        conn.put("chunk 0")

    if kind == "def":

        @app.on_input
        def handle(conn: Connection[str, str], line: str) -> None:
            start(conn)

    elif kind == "async":

        @app.on_input
        async def handle_async(conn: Connection[str, str], line: str) -> None:
            start(conn)

    else:

        @app.on_input
        async def handle_waiting(conn: Connection[str, str], line: str) -> None:
            await anyio.sleep(0)
            start(conn)

    @app.on_flushed
    def more(conn: Connection[str, str]) -> None:
        left: Any = conn.state.get("left", 0)
        if left:
            conn.state["left"] = left - 1
            conn.put(f"chunk {CHUNKS - left}")
        elif left == 0 and "left" in conn.state:
            del conn.state["left"]
            conn.put("done")

    return app


@pytest.mark.parametrize("kind", ["def", "async", "async-waiting"])
async def test_a_download_continued_from_on_flushed_delivers_every_chunk(kind: str) -> None:
    app = download_app(kind)
    async with app.start() as server:
        assert server.port is not None
        async with await anyio.connect_tcp("127.0.0.1", server.port) as client:
            await client.send(b"go\r\n")
            data = b""
            with anyio.fail_after(10):
                while not data.endswith(b"done\r\n"):
                    data += await client.receive()
    lines = data.decode().split("\r\n")[:-1]
    assert lines == [f"chunk {i}" for i in range(CHUNKS)] + ["done"]
