"""tcpkit.testing.fuzz_app: it passes robust apps and finds the bugs of broken ones.

The apps in examples/ that should survive abusive clients do; small broken apps
show each check failing (an escaped exception, a stuck handler, a slot that is
not released, a server that stops serving, a failed probe) with the shrunk
script in the report. The synchronous ``fuzz_app`` runs on asyncio, uvloop and
trio; the async building blocks run under anyio's plugin (every backend).
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tcpkit.testing
from examples import acceptor, chat, echo, json_rpc, rot13
from tcpkit import App, Codec, Connection, Decoder, Encoder, Server
from tcpkit.codecs import NEED_DATA, NeedData
from tcpkit.pytest_plugin import tcpkit_backends
from tcpkit.testing import (
    FuzzAction,
    FuzzFailure,
    FuzzScript,
    TestClient,
    TestServer,
    fuzz_app,
    fuzz_scripts,
)

FEW = 15  # examples per fuzz_app call: each bug below is found in a few
BACKENDS = ["asyncio", "uvloop", "trio"]

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=6,
)
REQUESTS = st.fixed_dictionaries(
    {"jsonrpc": st.just("2.0"), "id": st.integers(0, 9), "method": st.sampled_from(["add", "sum"])},
    optional={"params": JSON},
)


def failure_of(app: App[Any, Any], messages: Any = None, **options: Any) -> FuzzFailure:
    with pytest.raises(FuzzFailure) as failure:
        fuzz_app(app, messages, **options)
    return failure.value


def play(app: App[Any, Any], *actions: FuzzAction, **options: Any) -> FuzzFailure | None:
    """Run one script in a new event loop (asyncio); the failure, if any."""
    try:
        anyio.run(lambda: FuzzScript(actions).run(app, **options))
    except FuzzFailure as failure:
        return failure
    return None


# -- robust apps pass ----------------------------------------------------------------


async def echoes(client: TestClient[str, str]) -> None:
    await client.send("still there?")
    assert await client.receive() == "still there?"


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    ("app", "messages", "probe"),
    [
        pytest.param(echo.app, st.text(max_size=20), echoes, id="echo"),
        pytest.param(rot13.app, st.text(max_size=20), None, id="rot13"),
        pytest.param(json_rpc.app, REQUESTS | JSON, None, id="json_rpc"),
        pytest.param(
            chat.app, st.sampled_from(["hi", "/who", "/nick x", "/msg guest1 hi"]), None, id="chat"
        ),
        pytest.param(acceptor.app, None, None, id="acceptor"),
    ],
)
def test_the_robust_examples_survive_fuzzing(
    app: App[Any, Any], messages: Any, probe: Any, backend: str
) -> None:
    if backend == "uvloop":
        pytest.importorskip("uvloop")
    fuzz_app(app, messages, probe=probe, backend=backend, max_examples=FEW)


# -- broken apps fail, with the smallest script --------------------------------------

calc = App(name="calc")


@calc.on_input
def double(conn: Connection[str, str], line: str) -> None:
    conn.put(str(int(line) * 2))  # a bug: any line that is not a number


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_handler_exception_is_found_with_the_smallest_script(backend: str) -> None:
    if backend == "uvloop":
        pytest.importorskip("uvloop")
    failure = failure_of(calc, backend=backend, max_examples=200)
    assert failure.kind == "exception"
    assert isinstance(failure.__cause__, ValueError)
    assert failure.script == FuzzScript((FuzzAction(0, "send", b"\n"),))
    report = str(failure)
    assert report.startswith(f"fuzzing {calc!r}: the app let an exception escape")
    assert "ValueError" in report
    assert (
        "    async with TestServer(app) as server:\n"
        "        client0 = await server.connect()\n"
        "        await client0.send_bytes(b'\\n')\n"
        "        await client0.send_eof()\n"
    ) in report


def test_the_report_is_a_regression_test_that_reproduces_the_bug() -> None:
    failure = failure_of(calc, st.text(max_size=5), max_examples=200)
    namespace: dict[str, Any] = {"TestServer": TestServer, "app": calc, "anyio": anyio}
    body = "\n".join(f"    {line}" for line in failure.script.code().splitlines())
    exec(f"async def regression():\n{body}\n", namespace)
    with pytest.raises(ValueError, match="invalid literal"):
        anyio.run(namespace["regression"])


greeter = App(name="greeter")


@greeter.on_input
def greet(conn: Connection[str, str], line: str) -> None:
    conn.put(f"hello, {line.split()[1]}")  # a bug: "HELLO" alone


def test_an_index_error_on_a_valid_frame_is_found() -> None:
    failure = failure_of(greeter, st.from_regex(r"HELLO( [a-z]+)?", fullmatch=True))
    assert isinstance(failure.__cause__, IndexError)
    assert failure.script == FuzzScript((FuzzAction(0, "send", b"HELLO\r\n"),))


class Counted(Codec[bytes, bytes]):
    """Frames of "<length>:<bytes>", whose decoder crashes on a bad length (a codec bug)."""

    def decoder(self) -> Decoder[bytes]:
        return CountedDecoder()

    def encoder(self) -> Encoder[bytes]:
        return CountedEncoder()


class CountedEncoder(Encoder[bytes]):
    def encode(self, message: bytes) -> bytes:
        return b"%d:%s" % (len(message), message)


class CountedDecoder(Decoder[bytes]):
    def __init__(self) -> None:
        self.buffer = b""

    def push(self, data: bytes) -> None:
        self.buffer += data

    def next_message(self) -> bytes | NeedData:
        head, colon, rest = self.buffer.partition(b":")
        if not colon:
            return NEED_DATA
        size = int(head)  # a bug: ValueError, not a FrameError, on junk
        if len(rest) < size:
            return NEED_DATA
        self.buffer = rest[size:]
        return rest[:size]

    def take_pending(self) -> bytes:
        pending, self.buffer = self.buffer, b""
        return pending


counted = App(codec=Counted(), name="counted")


@counted.on_input
def echo_block(conn: Connection[bytes, bytes], block: bytes) -> None:
    conn.put(block)


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_a_decoder_that_crashes_is_found(backend: str) -> None:
    failure = failure_of(counted, st.binary(max_size=10), backend=backend, max_examples=200)
    assert isinstance(failure.__cause__, ValueError)
    # Shrunk to a few bytes that end in a length that is not a number: b":", b"1:0:"...
    (send,) = [action for action in failure.script.actions if action.kind == "send"]
    assert send.data.endswith(b":") and len(send.data) <= 6, failure.script


forgetful = App(name="forgetful", state=list)


@forgetful.on_input
def remember(conn: Connection[str, str], line: str) -> None:
    conn.state.append(line)


@forgetful.on_disconnect
def last_words(conn: Connection[str, str]) -> None:
    print(conn.state[-1])  # a bug: a client that sent nothing


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_an_on_disconnect_exception_is_found(backend: str) -> None:
    failure = failure_of(forgetful, st.text(max_size=5), backend=backend, max_examples=FEW)
    assert isinstance(failure.__cause__, IndexError)
    # Every script fails: the fresh client of the default probe sends nothing either.
    report = str(failure)
    assert "(seen while serving a fresh client after the fuzzed ones)" in report
    assert report.endswith(
        "        fresh = await server.connect()  # the default probe:\n"
        "        await fresh.wait_connected()\n"
        "        await fresh.send_eof()\n"
        "        async for _ in fresh: ...\n"
    )


# -- stuck apps, slots not released ----------------------------------------------------

sleepy = App(name="sleepy")


@sleepy.on_input
async def wait_for_ever(conn: Connection[str, str], line: str) -> None:
    if line == "sleep":
        await anyio.sleep_forever()  # a bug: the connection never ends


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_a_handler_that_never_returns_is_reported_stuck(backend: str) -> None:
    script = FuzzScript((FuzzAction(0, "send", b"sleep\n"), FuzzAction(0, "eof")))
    with pytest.raises(FuzzFailure) as failure:
        anyio.run(lambda: script.run(sleepy, timeout=0.2), backend=backend)
    assert failure.value.kind == "stuck"
    assert "stuck waiting for the server to close the fuzzed connections for 0.2 s" in str(
        failure.value
    )


holder = App(name="holder")


@holder.on_disconnect
async def linger(conn: Connection[str, str]) -> None:
    await anyio.sleep(0.4)  # longer than the timeout below


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_a_slot_held_after_the_client_left_is_reported(backend: str) -> None:
    script = FuzzScript((FuzzAction(0, "send", b"hi\n"),))
    with pytest.raises(FuzzFailure) as failure:
        anyio.run(lambda: script.run(holder, timeout=0.2), backend=backend)
    assert failure.value.kind == "stuck"
    assert "waiting for server.connection_count to return to 0" in str(failure.value)


# -- the server must keep serving --------------------------------------------------------

quitter = App(name="quitter")


@quitter.on_input
def obey(conn: Connection[str, str], line: str) -> None:
    if line == "shutdown":
        conn.server.start_shutdown()  # a bug: any client can stop the server
    elif line == "close":
        conn.server.set_max_connections(0)  # the same, for new clients


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_a_client_that_stops_the_server_is_found(backend: str) -> None:
    lines = st.sampled_from(["hi", "shutdown"])
    failure = failure_of(quitter, lines, backend=backend, max_examples=200)
    assert failure.kind == "not serving"
    assert "the server is shutting down after the fuzzed clients" in str(failure)
    assert failure.script == FuzzScript((FuzzAction(0, "send", b"shutdown\r\n"),))


def test_a_client_that_closes_the_door_is_found() -> None:
    failure = play(quitter, FuzzAction(0, "send", b"close\n"))
    assert failure is not None and failure.kind == "not serving"
    assert "server.max_connections is 0" in str(failure)
    # A client that comes after the door closed waits in the backlog: stuck, and why.
    closed = FuzzAction(0, "send", b"close\n"), FuzzAction(0, "wait"), FuzzAction(1, "eof")
    failure = play(quitter, *closed, timeout=0.2)
    assert failure is not None and failure.kind == "stuck"
    assert "(server.max_connections is 0: clients wait in the backlog)" in str(failure)


BANNED: set[str] = set()
bouncer = App(name="bouncer")


@bouncer.on_started
def forget_bans(server: Server[str, str]) -> None:
    BANNED.clear()  # each example starts a new server


@bouncer.pre_connect
def admit(conn: Connection[str, str], stream: Any) -> bool:
    return conn.remote_ip not in BANNED


@bouncer.on_input
def ban(conn: Connection[str, str], line: str) -> None:
    if line == "spam":
        BANNED.add(conn.remote_ip)  # a bug: every client comes from 127.0.0.1 here


def test_the_default_probe_finds_a_server_that_refuses_everyone() -> None:
    failure = failure_of(bouncer, st.sampled_from(["hi", "spam"]), max_examples=200)
    assert failure.kind == "not serving"
    assert "a fresh client was not served after the fuzzed clients ended" in str(failure)
    assert "rejected" in str(failure.__cause__)


MOOD = {"grumpy": False}
host = App(name="host")


@host.on_started
def cheer_up(server: Server[str, str]) -> None:
    MOOD["grumpy"] = False


@host.on_connect
def welcome(conn: Connection[str, str]) -> None:
    conn.put("go away" if MOOD["grumpy"] else "welcome")


@host.on_input
def sulk(conn: Connection[str, str], line: str) -> None:
    if line == "boo":
        MOOD["grumpy"] = True  # a bug: one client spoils it for everyone


async def welcomed(client: TestClient[str, str]) -> None:
    assert await client.receive() == "welcome"


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_a_probe_finds_a_server_spoiled_by_a_client(backend: str) -> None:
    lines = st.sampled_from(["hi", "boo"])
    failure = failure_of(host, lines, probe=welcomed, backend=backend, max_examples=200)
    assert failure.kind == "not serving"
    assert "the probe failed after the fuzzed clients ended" in str(failure)
    assert "        await welcomed(fresh)  # the probe\n" in str(failure)
    assert isinstance(failure.__cause__, AssertionError)  # the probe's
    assert failure.script == FuzzScript((FuzzAction(0, "send", b"boo\r\n"),))


# -- the script, step by step --------------------------------------------------------------


def test_every_action_of_a_script_reaches_the_server() -> None:
    log: list[str] = []
    recorder = App(name="recorder")

    @recorder.on_connect
    def connected(conn: Connection[str, str]) -> None:
        log.append(f"{conn.remote_port} connect")

    @recorder.on_input
    def got(conn: Connection[str, str], line: str) -> None:
        log.append(f"{conn.remote_port} {line}")

    @recorder.on_error
    def error(conn: Connection[str, str], exc: Exception) -> None:
        log.append(f"{conn.remote_port} {type(exc).__name__}")

    script = FuzzScript(
        (
            FuzzAction(0, "send", b"a"),
            FuzzAction(1, "send", b"x\n"),
            FuzzAction(0, "wait"),
            FuzzAction(1, "reset"),
            FuzzAction(0, "send", b"b\n"),
            FuzzAction(0, "send", b"never seen"),
            FuzzAction(0, "eof"),
            FuzzAction(0, "send", b"nor this\n"),
        )
    )
    assert play(recorder, *script.actions) is None
    # The reset discards what the server did not read: client 1's line may be lost.
    assert [entry for entry in log if not entry.startswith("50001 x")] == [
        "50000 connect",
        "50001 connect",
        "50001 ConnectionResetError",
        "50000 ab",
        "50000 IncompleteFrame",
        "50002 connect",  # the default probe
    ]


def test_the_script_as_code() -> None:
    script = FuzzScript(
        (
            FuzzAction(0, "send", b"a\n"),
            FuzzAction(1, "wait"),
            FuzzAction(1, "close"),
            FuzzAction(0, "reset"),
            FuzzAction(2, "send", b"\xff"),
        )
    )
    assert script.clients == 3
    assert str(script) == script.code()
    assert script.code() == (
        "async with TestServer(app) as server:\n"
        "    client0 = await server.connect()\n"
        "    await client0.send_bytes(b'a\\n')\n"
        "    client1 = await server.connect()\n"
        "    for _ in range(10):  # the server catches up\n"
        "        await anyio.lowlevel.checkpoint()\n"
        "    await client1.aclose()\n"
        "    await client0.reset()\n"
        "    client2 = await server.connect()\n"
        "    await client2.send_bytes(b'\\xff')\n"
        "    await client2.send_eof()"
    )


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ((0, "shout"), "unknown action kind 'shout'"),
        ((-1, "eof"), "client must be 0 or more"),
        ((0, "eof", b"x"), "a 'eof' action sends no data"),
    ],
)
def test_invalid_actions(arguments: tuple[Any, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        FuzzAction(*arguments)


def test_scripts_stay_within_their_bounds() -> None:
    @settings(max_examples=50)
    @given(script=fuzz_scripts(echo.app, st.text(), clients=3, max_steps=4))
    def check(script: FuzzScript) -> None:
        assert 1 <= script.clients <= 3
        sends = [a for a in script.actions if a.kind == "send"]
        assert len(sends) <= 8  # a piece goes in two writes at most
        assert sorted({a.client for a in script.actions}) == list(range(script.clients))

    check()


# -- the async building blocks, in a test of your own ------------------------------------------


@settings(max_examples=10)
@given(script=fuzz_scripts(echo.app, st.text(max_size=10)))
@pytest.mark.anyio
async def test_fuzz_scripts_in_an_async_test(script: FuzzScript) -> None:
    await script.run(echo.app, probe=echoes)


@pytest.mark.anyio
async def test_run_reports_a_failure_in_an_async_test() -> None:
    script = FuzzScript((FuzzAction(0, "send", b"x\n"),))
    with pytest.raises(FuzzFailure) as failure:
        await script.run(calc)
    assert isinstance(failure.value.__cause__, ValueError)


@pytest.mark.anyio
async def test_fuzz_app_refuses_to_run_inside_an_event_loop() -> None:
    with pytest.raises(RuntimeError, match="call it from a synchronous test"):
        fuzz_app(echo.app)


# -- arguments ---------------------------------------------------------------------------------


def test_the_same_seed_plays_the_same_scripts() -> None:
    heard: list[str] = []
    ear = App(name="ear")

    @ear.on_input
    def hear(conn: Connection[str, str], line: str) -> None:
        heard.append(line)

    runs = []
    for seed in (1, 1, 2):
        heard.clear()
        fuzz_app(ear, st.text(max_size=8), seed=seed, max_examples=10)
        runs.append(list(heard))
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]


@pytest.mark.parametrize("backend", tcpkit_backends("uvloop", "trio"))
def test_an_anyio_backend_pair_is_accepted(backend: Any) -> None:
    fuzz_app(echo.app, backend=backend, max_examples=3)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"backend": "curio"}, "unknown backend 'curio'"),
        ({"backend": ("twisted", {})}, "unknown backend 'twisted'"),
        ({"clients": 0}, "clients must be at least 1"),
        ({"max_steps": 0}, "max_steps must be at least 1"),
    ],
)
def test_bad_arguments(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        fuzz_app(echo.app, **options)


def test_messages_the_codec_cannot_encode() -> None:
    with pytest.raises(ValueError, match="cannot encode"):
        fuzz_app(echo.app, st.integers(), max_examples=5)


def test_hypothesis_is_imported_lazily_with_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tcpkit, "testing", tcpkit.testing)  # restored afterwards
    monkeypatch.setitem(sys.modules, "hypothesis", None)  # makes "import hypothesis" fail
    monkeypatch.delitem(sys.modules, "tcpkit.testing._fuzz", raising=False)
    monkeypatch.delitem(sys.modules, "tcpkit.testing")
    testing = importlib.import_module("tcpkit.testing")  # works without hypothesis
    with pytest.raises(ImportError, match="pip install hypothesis"):
        testing.fuzz_app  # noqa: B018


def test_the_fuzzing_names_are_exported() -> None:
    for name in ("FuzzAction", "FuzzFailure", "FuzzScript", "fuzz_app", "fuzz_scripts"):
        assert name in tcpkit.testing.__all__
        assert getattr(tcpkit.testing, name) is not None
