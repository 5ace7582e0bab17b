"""examples/resp.py: its RESP codec (sans-IO) and its commands over real sockets."""

from __future__ import annotations

import re

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st
from resp_client import ErrorReply, RespClient, encode_command

from examples.resp import Resp, RespError, Status, make_app
from tcpkit import FrameTooLarge, IncompleteFrame, MalformedFrame
from tcpkit.codecs import NEED_DATA

COMMANDS = [
    [b"PING"],
    [b"SET", b"key", b"value with spaces\r\nand CRLF"],
    [b"GET", b"key"],
    [b"ECHO", b""],
    [b"SET", b"big", b"x" * 5000],
]
STREAM = b"".join(encode_command(*command) for command in COMMANDS)


def decode_all(data: bytes, chunks: list[int] | None = None, **limits: int) -> list[list[bytes]]:
    decoder = Resp(**limits).decoder()
    if chunks is None:
        return decoder.feed(data)
    messages: list[list[bytes]] = []
    pos = 0
    for size in chunks:
        messages += decoder.feed(data[pos : pos + size])
        pos += size
    messages += decoder.feed(data[pos:])
    messages += decoder.eof()
    return messages


# -- the decoder -------------------------------------------------------------------


def test_decodes_arrays_whole() -> None:
    assert decode_all(STREAM) == COMMANDS


def test_decodes_arrays_one_byte_at_a_time() -> None:
    assert decode_all(STREAM, [1] * len(STREAM)) == COMMANDS


@given(st.lists(st.integers(min_value=1, max_value=300), max_size=60))
def test_any_chunking_decodes_the_same(chunks: list[int]) -> None:
    assert decode_all(STREAM, chunks) == COMMANDS


def test_inline_commands_and_empty_lines() -> None:
    data = b"PING\r\n\r\n  SET  a   b \n" + encode_command("GET", "a") + b"ECHO hi\r\n"
    assert decode_all(data) == [[b"PING"], [b"SET", b"a", b"b"], [b"GET", b"a"], [b"ECHO", b"hi"]]
    assert decode_all(data, [1] * len(data)) == decode_all(data)


def test_empty_arrays_are_skipped() -> None:
    assert decode_all(b"*0\r\n*-1\r\n" + encode_command("PING")) == [[b"PING"]]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"*1\r\n:5\r\n", "expected '$', got ':'"),
        (b"*x\r\n", "invalid multibulk count"),
        (b"*1\r\n$-3\r\n", "invalid bulk length"),
        (b"*1\r\n$2\r\nabcd\r\n", "not followed by CRLF"),
    ],
)
def test_malformed_input(data: bytes, message: str) -> None:
    decoder = Resp().decoder()
    decoder.push(data)
    with pytest.raises(MalformedFrame, match=re.escape(message)):
        decoder.next_message()


def test_bulk_over_the_limit_is_refused_before_its_payload_arrives() -> None:
    decoder = Resp(max_bulk=100).decoder()
    decoder.push(b"*2\r\n$3\r\nSET\r\n$101\r\n")
    with pytest.raises(FrameTooLarge):
        decoder.next_message()


def test_array_over_the_limit_is_refused() -> None:
    decoder = Resp(max_args=3).decoder()
    decoder.push(b"*4\r\n")
    with pytest.raises(FrameTooLarge):
        decoder.next_message()


def test_whole_command_over_the_limit_is_refused() -> None:
    decoder = Resp(max_bulk=100, max_command=150).decoder()
    decoder.push(b"*3\r\n$3\r\nSET\r\n$80\r\n" + b"k" * 80 + b"\r\n$80\r\n")
    with pytest.raises(FrameTooLarge):
        decoder.next_message()


def test_unterminated_inline_command_is_bounded_however_it_is_split() -> None:
    decoder = Resp(max_inline=64).decoder()
    for _ in range(65):  # 64 bytes and a CR may still end in LF
        decoder.push(b"A")
        assert decoder.next_message() is NEED_DATA
    decoder.push(b"A")
    with pytest.raises(FrameTooLarge):
        decoder.next_message()


def test_unterminated_header_is_bounded() -> None:
    decoder = Resp().decoder()
    decoder.push(b"*" + b"1" * 100)
    with pytest.raises(FrameTooLarge):
        decoder.next_message()


def test_take_pending_returns_a_partial_command_from_its_start() -> None:
    decoder = Resp().decoder()
    partial = b"*2\r\n$3\r\nGET\r\n$3\r\nke"
    decoder.push(encode_command("PING") + partial)
    assert decoder.next_message() == [b"PING"]
    assert decoder.next_message() is NEED_DATA
    assert decoder.take_pending() == partial


def test_partial_command_at_eof_is_an_error() -> None:
    decoder = Resp().decoder()
    decoder.push(b"*2\r\n$3\r\nGET\r\n")
    assert decoder.next_message() is NEED_DATA
    with pytest.raises(IncompleteFrame):
        decoder.eof()


# -- the encoder -------------------------------------------------------------------

REPLY = [Status("OK"), RespError("ERR no"), 7, b"bulk", "text", None, True, 1.5, {"k": [1]}]


def test_encodes_resp2() -> None:
    assert Resp(2).encoder().encode(REPLY) == (
        b"*9\r\n+OK\r\n-ERR no\r\n:7\r\n$4\r\nbulk\r\n$4\r\ntext\r\n$-1\r\n:1\r\n"
        b"$3\r\n1.5\r\n*2\r\n$1\r\nk\r\n*1\r\n:1\r\n"
    )


def test_encodes_resp3() -> None:
    assert Resp(3).encoder().encode(REPLY) == (
        b"*9\r\n+OK\r\n-ERR no\r\n:7\r\n$4\r\nbulk\r\n$4\r\ntext\r\n_\r\n#t\r\n"
        b",1.5\r\n%1\r\n$1\r\nk\r\n*1\r\n:1\r\n"
    )


def test_simple_strings_cannot_break_the_framing() -> None:
    assert Resp().encoder().encode(RespError("ERR a\r\nb")) == b"-ERR a  b\r\n"


# -- the server, over loopback on every backend -------------------------------------------


@pytest.mark.anyio
async def test_basic_commands() -> None:
    async with make_app().start() as server, await RespClient.connect(server.port or 0) as c:
        assert await c.command("PING") == "PONG"
        assert await c.command("PING", "hi") == b"hi"
        assert await c.command("ECHO", "hello") == b"hello"
        assert await c.command("SET", "k", "v") == "OK"
        assert await c.command("GET", "k") == b"v"
        assert await c.command("GET", "missing") is None
        assert await c.command("EXISTS", "k", "missing", "k") == 2
        assert await c.command("INCR", "n") == 1
        assert await c.command("INCRBY", "n", "10") == 11
        assert await c.command("DECR", "n") == 10
        assert await c.command("DECRBY", "n", "4") == 6
        assert await c.command("DEL", "k", "n", "missing") == 2
        assert await c.command("COMMAND") == []
        assert await c.command("COMMAND", "DOCS") == []


@pytest.mark.anyio
async def test_errors_are_replies_and_the_connection_goes_on() -> None:
    async with make_app().start() as server, await RespClient.connect(server.port or 0) as c:
        assert await c.command("SET", "k", "text") == "OK"
        reply = await c.command("INCR", "k")
        assert isinstance(reply, ErrorReply)
        assert reply == "ERR value is not an integer or out of range"
        reply = await c.command("NOSUCH", "a", "b")
        assert reply == "ERR unknown command 'NOSUCH', with args beginning with: 'a' 'b'"
        reply = await c.command("GET")
        assert reply == "ERR wrong number of arguments for 'get' command"
        assert await c.command("SET", "k", "v", "BOGUS") == "ERR syntax error"
        assert await c.command("PING") == "PONG"


@pytest.mark.anyio
async def test_set_options_and_expiry() -> None:
    async with make_app().start() as server, await RespClient.connect(server.port or 0) as c:
        assert await c.command("SET", "k", "1", "NX") == "OK"
        assert await c.command("SET", "k", "2", "NX") is None
        assert await c.command("SET", "other", "2", "XX") is None
        assert await c.command("SET", "k", "3", "XX") == "OK"
        assert await c.command("GET", "k") == b"3"
        assert await c.command("SET", "k", "4", "EX", "0") == (
            "ERR invalid expire time in 'set' command"
        )
        assert await c.command("SET", "k", "4", "EX", "100") == "OK"
        assert await c.command("SET", "brief", "v", "PX", "20") == "OK"
        with anyio.fail_after(5):
            while await c.command("GET", "brief") is not None:
                await anyio.sleep(0.01)
        assert await c.command("GET", "k") == b"4"


@pytest.mark.anyio
async def test_databases_are_separate_and_shared_by_connections() -> None:
    async with make_app().start() as server:
        async with await RespClient.connect(server.port or 0) as a:
            assert await a.command("SELECT", "2") == "OK"
            assert await a.command("SET", "k", "in db 2") == "OK"
            assert await a.command("SELECT", "16") == "ERR DB index is out of range"
        async with await RespClient.connect(server.port or 0) as b:
            assert await b.command("GET", "k") is None
            assert await b.command("SELECT", "2") == "OK"
            assert await b.command("GET", "k") == b"in db 2"


@pytest.mark.anyio
async def test_hello_3_switches_the_connection_to_resp3() -> None:
    async with make_app().start() as server, await RespClient.connect(server.port or 0) as c:
        assert await c.command("GET", "missing") is None  # RESP2's null: $-1
        hello = await c.command("HELLO", "3", "SETNAME", "tester")
        assert hello[b"proto"] == 3
        assert hello[b"server"] == b"redis"
        await c.send_raw(encode_command("GET", "missing"))
        with anyio.fail_after(5):
            while b"\n" not in c.buffer:
                c.buffer += await c.stream.receive()
        assert bytes(c.buffer) == b"_\r\n"  # RESP3's null
        assert await c.reply() is None
        assert await c.command("CLIENT", "GETNAME") == b"tester"
        assert await c.command("CONFIG", "GET", "save") == {b"save": b""}
        assert await c.command("HELLO", "2") == [
            b"server", b"redis", b"version", b"7.0.0", b"proto", 2, b"id", 1,
            b"mode", b"standalone", b"role", b"master", b"modules", [],
        ]  # fmt: skip


@pytest.mark.anyio
async def test_hello_with_an_unknown_protocol_is_noproto() -> None:
    async with make_app().start() as server, await RespClient.connect(server.port or 0) as c:
        assert await c.command("HELLO", "4") == "NOPROTO unsupported protocol version"
        hello = await c.command("HELLO")  # no version: stay on RESP2, a flat array
        assert hello[hello.index(b"proto") + 1] == 2
        assert await c.command("PING") == "PONG"


@pytest.mark.anyio
async def test_config_and_client_commands() -> None:
    async with make_app().start() as server, await RespClient.connect(server.port or 0) as c:
        assert await c.command("CONFIG", "GET", "save") == [b"save", b""]
        assert await c.command("CONFIG", "GET", "appendonly") == [b"appendonly", b"no"]
        everything = await c.command("CONFIG", "GET", "*")
        settings = dict(zip(everything[::2], everything[1::2], strict=True))
        assert settings[b"port"] == str(server.port).encode()
        assert await c.command("CONFIG", "SET", "save", "") == (
            "ERR only CONFIG GET <pattern> [<pattern> ...] is supported"
        )
        assert await c.command("CLIENT", "SETNAME", "me") == "OK"
        assert await c.command("CLIENT", "GETNAME") == b"me"
        assert await c.command("CLIENT", "SETINFO", "LIB-NAME", "test") == "OK"
        assert await c.command("CLIENT", "ID") == 1
        reply = await c.command("CLIENT", "KILL")
        assert isinstance(reply, ErrorReply)


@pytest.mark.anyio
async def test_transactions() -> None:
    async with make_app().start() as server, await RespClient.connect(server.port or 0) as c:
        assert await c.command("EXEC") == "ERR EXEC without MULTI"
        assert await c.command("MULTI") == "OK"
        assert await c.command("MULTI") == "ERR MULTI calls can not be nested"
        assert await c.command("SET", "n", "1") == "QUEUED"
        assert await c.command("INCR", "n") == "QUEUED"
        assert await c.command("INCR", "other") == "QUEUED"
        assert await c.command("EXEC") == ["OK", 2, 1]
        assert await c.command("MULTI") == "OK"
        assert await c.command("SET", "n", "100") == "QUEUED"
        assert await c.command("DISCARD") == "OK"
        assert await c.command("GET", "n") == b"2"
        assert await c.command("MULTI") == "OK"
        assert isinstance(await c.command("NOSUCH"), ErrorReply)
        assert await c.command("EXEC") == (
            "EXECABORT Transaction discarded because of previous errors."
        )


@pytest.mark.anyio
async def test_pipelined_commands_are_all_answered_in_order() -> None:
    count = 2000
    async with make_app().start() as server, await RespClient.connect(server.port or 0) as c:
        batch = b"".join(encode_command("INCR", "counter") for _ in range(count))
        await c.send_raw(batch + b"PING\r\n")
        assert await c.replies(count) == list(range(1, count + 1))
        assert await c.reply() == "PONG"
        assert server.stats.messages_in == count + 1


@pytest.mark.anyio
async def test_protocol_error_is_answered_then_the_connection_closes() -> None:
    async with make_app().start() as server, await RespClient.connect(server.port or 0) as c:
        await c.send_raw(encode_command("PING") + b"*1\r\n:1\r\n")
        assert await c.reply() == "PONG"
        assert await c.reply() == "ERR Protocol error: expected '$', got ':'"
        assert await c.closed()


@pytest.mark.anyio
async def test_oversized_bulk_is_refused_without_buffering_it() -> None:
    async with make_app().start() as server, await RespClient.connect(server.port or 0) as c:
        await c.send_raw(b"*2\r\n$3\r\nGET\r\n$999999999\r\n")
        reply = await c.reply()
        assert isinstance(reply, ErrorReply)
        assert "exceeds the limit" in reply
        assert await c.closed()


@pytest.mark.anyio
async def test_quit_replies_ok_then_closes() -> None:
    async with make_app().start() as server, await RespClient.connect(server.port or 0) as c:
        await c.send_raw(encode_command("QUIT") + encode_command("PING"))
        assert await c.reply() == "OK"
        assert await c.closed()
        assert bytes(c.buffer) == b""  # nothing after QUIT was answered


@pytest.mark.anyio
async def test_inline_commands_over_the_socket() -> None:
    async with make_app().start() as server, await RespClient.connect(server.port or 0) as c:
        await c.send_raw(b"PING\r\nSET greeting hello\r\nGET greeting\r\n")
        assert await c.replies(3) == ["PONG", "OK", b"hello"]
