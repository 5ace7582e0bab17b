"""Fuzzing a small key-value server: the example of docs/testing.md, "Fuzzing an app"."""

from __future__ import annotations

# --8<-- [start:app]
import pytest
from hypothesis import strategies as st

from tcpkit import App, Connection
from tcpkit.testing import TestClient, fuzz_app

# A key-value store, one per connection: "SET key value", "GET key", "DEL key".
app = App(name="kv", state=dict)


@app.on_input
def command(conn: Connection[str, str], line: str) -> None:
    store: dict[str, str] = conn.state
    match line.split(" ", 2):
        case ["SET", key, value]:
            store[key] = value
            conn.put("OK")
        case ["GET", key]:
            conn.put(store.get(key, "(nil)"))
        case ["DEL", key]:
            del store[key]
            conn.put("OK")
        case _:
            conn.put("ERROR unknown command")


# --8<-- [end:app]


# --8<-- [start:test]
# Valid commands on a few keys (fuzz_app adds junk, partial lines and resets).
commands = st.from_regex(r"(SET [ab] [a-z]{1,3}|GET [ab]|DEL [ab])", fullmatch=True)


async def still_works(client: TestClient[str, str]) -> None:
    """After the fuzzing, a fresh client is served as usual."""
    await client.send("SET a 1")
    assert await client.receive() == "OK"
    await client.send("GET a")
    assert await client.receive() == "1"


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_the_store_survives_fuzzing(backend: str) -> None:
    fuzz_app(app, commands, probe=still_works, backend=backend)


# --8<-- [end:test]


# The test above fails, as it should: tcpkit runs it here and checks the report.
test_the_store_survives_fuzzing.__test__ = False  # type: ignore[attr-defined]


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_fuzzing_finds_the_bug(backend: str) -> None:
    with pytest.raises(AssertionError) as failure:
        test_the_store_survives_fuzzing(backend)
    assert isinstance(failure.value.__cause__, KeyError)
    report = str(failure.value)
    assert "the app let an exception escape" in report, report
    # The smallest script: b"DEL a\r\n" (or "DEL b"), then the end of the stream.
    assert "        await client0.send_bytes(b'DEL " in report, report
    assert report.count("send_bytes") == 1, report


# --8<-- [start:fixed]
fixed = App(name="kv", state=dict)


@fixed.on_input
def fixed_command(conn: Connection[str, str], line: str) -> None:
    store: dict[str, str] = conn.state
    match line.split(" ", 2):
        case ["SET", key, value]:
            store[key] = value
            conn.put("OK")
        case ["GET", key]:
            conn.put(store.get(key, "(nil)"))
        case ["DEL", key]:
            conn.put("OK" if store.pop(key, None) is not None else "(nil)")
        case _:
            conn.put("ERROR unknown command")


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_the_fixed_store_survives_fuzzing(backend: str) -> None:
    fuzz_app(fixed, commands, probe=still_works, backend=backend)


# --8<-- [end:fixed]
