"""The code in docs/: snippets run and pass their checks, and every Python block compiles."""

from __future__ import annotations

import ast
import hashlib
import re
import sys

import anyio
import pytest
from helpers import ROOT, LineClient
from hypothesis import strategies as st

from tcpkit.testing import check_codec

DOCS = ROOT / "docs"
sys.path.insert(0, str(DOCS / "snippets"))

import chat_basic  # noqa: E402
import hello  # noqa: E402
import tlv  # noqa: E402
import upload  # noqa: E402

FENCE = re.compile(
    r"^(?P<indent>[ \t]*)```(?:python|py)\b[^\n]*\n(?P<body>.*?)^(?P=indent)```", re.M | re.S
)


# The pages of the docs/examples issue; the others' pages are their owners' to test.
MY_PAGES = [
    "index.md",
    "getting-started.md",
    "tutorial.md",
    "codecs.md",
    "server-control.md",
    "examples.md",
    "poe.md",
]


def python_blocks() -> list[tuple[str, int, str]]:
    blocks = []
    for page in sorted(DOCS / name for name in MY_PAGES):
        text = page.read_text()
        for match in FENCE.finditer(text):
            body = match["body"]
            if "--8<--" in body:
                continue  # an included file, checked as a file
            indent = match["indent"]
            lines = [line.removeprefix(indent) for line in body.splitlines()]
            line_number = text.count("\n", 0, match.start()) + 2
            blocks.append((page.name, line_number, "\n".join(lines)))
    return blocks


@pytest.mark.parametrize(
    ("page", "line", "code"), python_blocks(), ids=lambda v: str(v) if isinstance(v, int) else None
)
def test_python_blocks_compile(page: str, line: int, code: str) -> None:
    flags = ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
    compile(code, f"{page}:{line}", "exec", flags=flags, dont_inherit=True)


def test_tlv_codec_keeps_the_codec_contract() -> None:
    records = st.builds(tlv.Record, st.integers(0, 255), st.binary(max_size=300))
    check_codec(tlv.TLV(max_length=4096), records, oversized=tlv.HEADER.pack(1, 4097))


@pytest.mark.anyio
async def test_upload_switches_codecs_within_one_read() -> None:
    async with upload.app.start() as server, await LineClient.connect(server.port or 0) as c:
        await c.send_raw(b"UPLOAD 5\r\nhelloUPLOAD 3\r\nabc" + b"UPLOAD x\r\n")
        digest = hashlib.sha256(b"hello").hexdigest()
        assert await c.recv_lines(5) == [
            "READY",
            f"RECEIVED 5 bytes, sha256 {digest}",
            "READY",
            f"RECEIVED 3 bytes, sha256 {hashlib.sha256(b'abc').hexdigest()}",
            "ERROR expected UPLOAD <1..1048576>",
        ]


@pytest.mark.anyio
async def test_tutorial_chat() -> None:
    app = chat_basic.app
    async with app.start() as server, await LineClient.connect(server.port or 0) as ann:
        assert await ann.recv_line() == ("* Welcome, guest1! /nick NAME to rename, /quit to leave.")
        async with await LineClient.connect(server.port or 0) as jos:
            await jos.recv_line()
            assert await ann.recv_line() == "* guest2 joined"
            await jos.send("hi", "/nick jos")
            assert await ann.recv_lines(2) == ["<guest2> hi", "* guest2 is now jos"]
            assert await jos.recv_line() == "* guest2 is now jos"
            await jos.send("/quit")
            assert await jos.recv_line() == "* Bye!"
            assert await ann.recv_line() == "* jos left"


# Every constructor parameter, event and reserved HEAP member of the seed manual.
POE_NAMES = [
    "Acceptor",
    "Address",
    "Alias",
    "Concurrency",
    "Domain",
    "Error",
    "Hostname",
    "InlineStates",
    "ObjectStates",
    "PackageStates",
    "Port",
    "Started",
    "Stopped",
    "ListenerArgs",
    "ClientArgs",
    "ClientConnected",
    "ClientDisconnected",
    "ClientError",
    "ClientFilter",
    "ClientFlushed",
    "ClientInput",
    "ClientInputFilter",
    "ClientOutputFilter",
    "ClientPreConnect",
    "ClientShutdownOnError",
    "SessionParams",
    "SessionType",
]
POE_EVENTS = ["disconnected", "set_concurrency", "shutdown"]
POE_HEAP = [
    "alias",
    "concurrency",
    "connections",
    "listener",
    "client",
    "got_an_error",
    "remote_ip",
    "remote_port",
    "remote_addr",
    "shutdown",
    "shutdown_on_error",
]


def test_the_poe_page_maps_every_parameter_event_and_heap_member() -> None:
    text = (DOCS / "poe.md").read_text()
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    for name in POE_NAMES:
        assert any(row.startswith(f"| `{name}` |") for row in rows), name
    for event in POE_EVENTS:
        assert any(row.startswith(f"| `{event}` (") for row in rows), event
    for member in POE_HEAP:
        assert f"| `$_[HEAP]{{{member}}}` |" in text, member


@pytest.mark.anyio
async def test_getting_started_hello_over_a_socket() -> None:
    async with (
        hello.app.start() as server,  # the page's "A first test"
        await anyio.connect_tcp("127.0.0.1", server.port or 0) as stream,
    ):
        greeting = await stream.receive()
        assert greeting.startswith(b"Hello, 127.0.0.1!")
        await stream.send(b"bye\r\n")
        assert await stream.receive() == b"Goodbye.\r\n"


@pytest.mark.anyio
async def test_getting_started_hello_with_test_client() -> None:
    from tcpkit.testing import TestClient

    async with TestClient(hello.app) as client:
        assert (await client.receive()).startswith("Hello")
        await client.send("hi")
        assert await client.receive() == "You said: hi"
