"""examples/json_rpc.py over loopback: JSON-RPC 2.0 on ``Lines() | Json()``."""

from __future__ import annotations

import json
from typing import Any

import pytest
from helpers import LineClient

from examples.json_rpc import app

pytestmark = pytest.mark.anyio


async def call(client: LineClient, request: Any) -> Any:
    await client.send(json.dumps(request))
    return json.loads(await client.recv_line())


def rpc(method: str, params: Any = None, request_id: Any = 1) -> dict[str, Any]:
    request: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "id": request_id}
    if params is not None:
        request["params"] = params
    return request


async def test_calls_and_results() -> None:
    async with app.start() as server, await LineClient.connect(server.port or 0) as client:
        assert await call(client, rpc("add", [2, 3])) == {"jsonrpc": "2.0", "id": 1, "result": 5}
        assert (await call(client, rpc("add", {"a": 1.5, "b": 2}, "x")))["result"] == 3.5
        assert (await call(client, rpc("sum", [[1, 2, 3, 4]])))["result"] == 10
        assert (await call(client, rpc("upper", ["été"])))["result"] == "ÉTÉ"
        value = {"nested": [1, None, True, "text"]}
        assert (await call(client, rpc("echo", [value])))["result"] == value
        methods = (await call(client, rpc("methods")))["result"]
        assert methods == ["add", "echo", "methods", "sum", "upper"]


async def test_output_is_one_compact_line_per_response() -> None:
    async with app.start() as server, await LineClient.connect(server.port or 0) as client:
        await client.send('{"jsonrpc":"2.0","id":7,"method":"echo","params":["a b"]}')
        assert await client.recv_line() == '{"jsonrpc":"2.0","id":7,"result":"a b"}'


async def test_errors() -> None:
    async with app.start() as server, await LineClient.connect(server.port or 0) as client:
        reply = await call(client, rpc("nope"))
        assert reply["error"] == {"code": -32601, "message": "Method not found: nope"}
        reply = await call(client, rpc("add", [1]))
        assert reply["error"]["code"] == -32602
        reply = await call(client, rpc("add", [1, "two"]))
        assert reply["error"]["code"] == -32602
        assert "expected a number, got string" in reply["error"]["message"]
        reply = await call(client, {"jsonrpc": "1.0", "method": "add", "id": 3})
        assert reply == {
            "jsonrpc": "2.0",
            "id": None,
            "error": {"code": -32600, "message": "Invalid Request"},
        }
        reply = await call(client, rpc("add", "not a list"))
        assert reply["error"]["code"] == -32600
        assert (await call(client, [])).get("error", {}).get("code") == -32600


async def test_a_bad_line_is_a_parse_error_and_the_connection_goes_on() -> None:
    async with app.start() as server, await LineClient.connect(server.port or 0) as client:
        await client.send("{not json")
        reply = json.loads(await client.recv_line())
        assert reply["id"] is None
        assert reply["error"]["code"] == -32700
        await client.send("[1, 2")
        assert json.loads(await client.recv_line())["error"]["code"] == -32700
        assert (await call(client, rpc("add", [1, 1])))["result"] == 2


async def test_notifications_get_no_reply() -> None:
    async with app.start() as server, await LineClient.connect(server.port or 0) as client:
        await client.send(json.dumps({"jsonrpc": "2.0", "method": "add", "params": [1, 2]}))
        # The first reply is the one for the request after the notification.
        assert await call(client, rpc("add", [3, 4], 2)) == {
            "jsonrpc": "2.0",
            "id": 2,
            "result": 7,
        }


async def test_batches() -> None:
    async with app.start() as server, await LineClient.connect(server.port or 0) as client:
        batch = [
            rpc("add", [1, 2], 1),
            {"jsonrpc": "2.0", "method": "echo", "params": ["notification"]},
            rpc("nope", None, 2),
            rpc("upper", ["a"], 3),
        ]
        replies = await call(client, batch)
        assert [r["id"] for r in replies] == [1, 2, 3]
        assert replies[0]["result"] == 3
        assert replies[1]["error"]["code"] == -32601
        assert replies[2]["result"] == "A"


async def test_pipelined_requests_are_answered_in_order() -> None:
    async with app.start() as server, await LineClient.connect(server.port or 0) as client:
        await client.send(*(json.dumps(rpc("add", [n, n], n)) for n in range(500)))
        replies = [json.loads(line) for line in await client.recv_lines(500)]
        assert [r["result"] for r in replies] == [2 * n for n in range(500)]


async def test_a_bad_line_in_the_middle_of_a_read_does_not_stall_the_rest() -> None:
    async with app.start() as server, await LineClient.connect(server.port or 0) as client:
        first, second = json.dumps(rpc("add", [1, 1], 1)), json.dumps(rpc("add", [2, 2], 2))
        await client.send(first, "{bad", second)  # one write, so usually one read
        replies = [json.loads(line) for line in await client.recv_lines(3, timeout=2)]
        assert [r.get("result") for r in replies] == [2, None, 4]
