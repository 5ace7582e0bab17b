r"""JSON-RPC 2.0 over newline-delimited JSON: ``App(codec=Lines() | Json())``.

Each line is one JSON-RPC request (or a batch: a JSON array of requests);
each answer is one line. The codec turns lines into JSON values and back, so
the handler works with dicts and lists only. Methods:

- ``echo(value)``: returns ``value``;
- ``add(a, b)``: returns ``a + b`` (params ``[2, 3]`` or ``{"a": 2, "b": 3}``);
- ``sum(numbers)``: returns the sum of a list of numbers;
- ``upper(text)``: returns ``text`` in upper case;
- ``methods()``: lists the methods.

A line that is not JSON gets a ``-32700 Parse error`` reply and the connection
goes on (``shutdown_on_error=False``); a request without an ``id`` is a
notification and gets no reply.

Try it::

    tcpkit run examples/json_rpc.py:app --port 12345
    printf '{"jsonrpc":"2.0","id":1,"method":"add","params":[2,3]}\n' | nc -q 1 127.0.0.1 12345
    # {"jsonrpc":"2.0","id":1,"result":5}
    socat - TCP:127.0.0.1:12345    # then type requests, one per line:
    # {"jsonrpc":"2.0","id":2,"method":"upper","params":["hi"]}
    # {"jsonrpc":"2.0","id":2,"result":"HI"}
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeAlias, cast

from tcpkit import App, Connection, FrameError
from tcpkit.codecs import Json, Lines

JSON: TypeAlias = Any
"""A decoded JSON value: dict, list, str, int, float, bool or None."""

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603

app = App(codec=Lines() | Json(), name="json-rpc", shutdown_on_error=False)


def _number(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"expected a number, got {json_type(value)}")
    return value


def json_type(value: object) -> str:
    """The JSON name of a decoded value's type, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def echo(value: JSON) -> JSON:
    return value


def add(a: JSON, b: JSON) -> JSON:
    return _number(a) + _number(b)


def sum_(numbers: JSON) -> JSON:
    if not isinstance(numbers, list):
        raise TypeError(f"expected an array of numbers, got {json_type(numbers)}")
    items = cast("list[object]", numbers)
    total: float = 0
    for n in items:
        total += _number(n)
    return total


def upper(text: JSON) -> JSON:
    if not isinstance(text, str):
        raise TypeError(f"expected a string, got {json_type(text)}")
    return text.upper()


def methods() -> JSON:
    return sorted(METHODS)


METHODS: dict[str, Callable[..., JSON]] = {
    "echo": echo,
    "add": add,
    "sum": sum_,
    "upper": upper,
    "methods": methods,
}


def error(code: int, message: str, request_id: JSON = None) -> dict[str, JSON]:
    return {"jsonrpc": "2.0", "id": request_id, "error": {"code": code, "message": message}}


def handle(request: object) -> dict[str, JSON] | None:
    """The response to one request, or ``None`` for a notification."""
    if not isinstance(request, dict):
        return error(INVALID_REQUEST, "Invalid Request")
    fields = cast("dict[str, JSON]", request)
    if fields.get("jsonrpc") != "2.0":
        return error(INVALID_REQUEST, "Invalid Request")
    request_id: JSON = fields.get("id")
    is_notification = "id" not in fields
    method: JSON = fields.get("method")
    params: JSON = fields.get("params", [])
    if not isinstance(method, str) or not isinstance(params, (list, dict)):
        return error(INVALID_REQUEST, "Invalid Request", request_id)
    func = METHODS.get(method)
    if func is None:
        response = error(METHOD_NOT_FOUND, f"Method not found: {method}", request_id)
    else:
        try:
            result = func(*params) if isinstance(params, list) else func(**params)
        except TypeError as exc:
            response = error(INVALID_PARAMS, f"Invalid params: {exc}", request_id)
        except Exception as exc:
            response = error(INTERNAL_ERROR, f"Internal error: {exc}", request_id)
        else:
            response = {"jsonrpc": "2.0", "id": request_id, "result": result}
    return None if is_notification else response


@app.on_input
def request(conn: Connection[JSON, JSON], message: JSON) -> None:
    if isinstance(message, list):  # a batch
        batch = cast("list[object]", message)
        if not batch:
            conn.put(error(INVALID_REQUEST, "Invalid Request"))
            return
        responses = [r for r in map(handle, batch) if r is not None]
        if responses:
            conn.put(responses)
        return
    response = handle(message)
    if response is not None:
        conn.put(response)


@app.on_error
def bad_line(conn: Connection[JSON, JSON], exc: Exception) -> None:
    # Json raises MalformedFrame (a FrameError) for a line that is not JSON;
    # Lines raises FrameTooLarge for a line over 64 KiB. Both are parse errors
    # here, and the connection goes on (shutdown_on_error=False). A socket
    # error also arrives here, on a connection that is already closing.
    if conn.shutting_down:
        return
    if isinstance(exc, FrameError):
        conn.put(error(PARSE_ERROR, f"Parse error: {exc}"))
    else:
        conn.put(error(INTERNAL_ERROR, "Internal error"))


if __name__ == "__main__":
    app.run(port=12345)
