"""The codec's message types flow to the handlers: checked by mypy and pyright, never run.

``make typecheck`` runs ``mypy --strict tests/typing`` and ``pyright tests/typing``.
Every ``assert_type`` must hold in both. Every line that must be rejected carries
one ignore per checker, naming the error; mypy's ``warn_unused_ignores`` (part
of ``--strict``) and pyright's ``reportUnnecessaryTypeIgnoreComment`` (turned on
for this directory in ``pyproject.toml``, where pyright is also told to read
only its own ignores) fail the check if an ignore is not needed, which is how
these lines prove that the error is detected.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st
from typing_extensions import assert_type

from tcpkit import (
    App,
    Connection,
    Filter,
    FixedBlocks,
    Json,
    LengthPrefixed,
    Lines,
    Map,
    Netstrings,
    Raw,
)
from tcpkit.codecs import Codec, Layer
from tcpkit.testing import check_codec


def default_app_is_str() -> None:
    app = App()
    assert_type(app, App[str, str])
    app.on_input(lambda conn, message: assert_type(message, str))


def lines_app_is_str() -> None:
    app = App(codec=Lines())
    assert_type(app, App[str, str])
    app.on_input(lambda conn, message: assert_type(message, str))

    @app.on_input
    async def echo(conn: Connection[str, str], line: str) -> None:
        await conn.send(line.upper())
        await conn.send(42)  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]
        conn.put(b"bytes")  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]


def a_handler_for_the_wrong_type_is_rejected() -> None:
    app = App(codec=Lines())

    async def wants_bytes(conn: Connection[bytes, bytes], data: bytes) -> None: ...

    app.add_on_input(wants_bytes)  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]


def bytes_lines_app_is_bytes() -> None:
    app = App(codec=Lines(encoding=None))
    assert_type(app, App[bytes, bytes])

    @app.on_input
    async def echo(conn: Connection[bytes, bytes], line: bytes) -> None:
        await conn.send(line)
        await conn.send("text")  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]


def binary_codecs_are_bytes() -> None:
    assert_type(App(codec=Raw()), App[bytes, bytes])
    assert_type(App(codec=FixedBlocks(16)), App[bytes, bytes])
    assert_type(App(codec=Netstrings()), App[bytes, bytes])
    app = App(codec=LengthPrefixed())
    assert_type(app, App[bytes, bytes])
    app.on_input(lambda conn, message: assert_type(message, bytes))

    @app.on_input
    async def echo(conn: Connection[bytes, bytes], frame: bytes) -> None:
        await conn.send(frame)
        await conn.send("text")  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]


def codec_classes_and_pairs() -> None:
    assert_type(App(codec=Raw), App[bytes, bytes])
    assert_type(App(codec=(LengthPrefixed, {"header": "!H"})), App[bytes, bytes])


def json_lines_are_json_values() -> None:
    codec = Lines() | Json()
    assert_type(codec, Codec[Any, Any])
    app = App(codec=codec)
    assert_type(app, App[Any, Any])

    @app.on_input
    async def handle(conn: Connection[Any, Any], request: dict[str, Any]) -> None:
        await conn.send({"ok": True, "echo": request})

    assert_type(LengthPrefixed() | Json(bytes), Codec[Any, Any])
    assert_type(Json(), Json[str])
    assert_type(Json(bytes), Json[bytes])


def json_must_match_the_framing_below() -> None:
    _ = LengthPrefixed() | Json()  # type: ignore[operator]  # pyright: ignore[reportOperatorIssue, reportUnknownVariableType]
    _ = Lines() | Json(bytes)  # type: ignore[operator]  # pyright: ignore[reportOperatorIssue, reportUnknownVariableType]


def show(number: int) -> str:
    return str(number)


def map_types_flow() -> None:
    codec = Lines() | Map(decode=int, encode=show)
    assert_type(codec, Codec[int, int])
    app = App(codec=codec)
    assert_type(app, App[int, int])

    @app.on_input
    async def double(conn: Connection[int, int], number: int) -> None:
        await conn.send(number * 2)
        await conn.send("2")  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]


def a_map_must_accept_what_the_codec_decodes() -> None:
    def from_bytes(data: bytes) -> int:
        return len(data)

    layer = Map(decode=from_bytes, encode=show)
    _ = Lines() | layer  # type: ignore[operator]  # pyright: ignore[reportOperatorIssue, reportUnknownVariableType]


@dataclass
class Point:
    x: int
    y: int


def parse_point(value: Any) -> Point:
    return Point(int(value["x"]), int(value["y"]))


def dump_point(point: Point) -> dict[str, int]:
    return {"x": point.x, "y": point.y}


def layers_compose_and_keep_their_types() -> None:
    layer = Json() | Map(decode=parse_point, encode=dump_point)
    assert_type(layer, Layer[str | bytes, Point, Point, str])
    app = App(codec=Lines() | layer)
    assert_type(app, App[Point, Point])

    @app.on_input
    async def move(conn: Connection[Point, Point], point: Point) -> None:
        await conn.send(Point(point.x + 1, point.y))
        await conn.send({"x": 1, "y": 2})  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]


def not_empty(line: str) -> bool:
    return bool(line)


def filter_keeps_the_type() -> None:
    codec = Lines() | Filter(not_empty)
    assert_type(codec, Codec[str, str])
    assert_type(App(codec=codec), App[str, str])


def check_codec_matches_messages_to_the_codec() -> None:
    check_codec(Lines(), st.text())
    check_codec(LengthPrefixed() | Json(bytes), st.integers())
    check_codec(Lines(), st.binary())  # type: ignore[misc]  # pyright: ignore[reportArgumentType]
