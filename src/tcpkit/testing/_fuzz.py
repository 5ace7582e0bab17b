"""Fuzzing an app: :func:`fuzz_app`, and the two pieces it is made of.

:func:`fuzz_scripts` is a hypothesis strategy of :class:`FuzzScript`: what a
few clients send (valid frames, partial frames, junk, split anywhere) and how
each one ends (half-close, reset, close), interleaved. :meth:`FuzzScript.run`
plays one script against an app through :class:`~tcpkit.testing.TestServer`
and checks that the app let no exception escape and that the server still
serves a fresh client. :func:`fuzz_app` ties them together in a synchronous
call that runs each example in its own event loop, for an ordinary test.

This module imports hypothesis; :mod:`tcpkit.testing` imports it only when
one of these names is first used, so hypothesis is never a runtime dependency.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import math
import sys
from collections.abc import Awaitable, Callable, Generator, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, TypeVar, get_args

import anyio
import anyio.abc
import anyio.lowlevel

try:
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as hypothesis_seed
    from hypothesis import strategies as st
except ImportError as exc:  # pragma: no cover - exercised in a test with hypothesis hidden
    raise ImportError("tcpkit.testing.fuzz_app needs hypothesis: pip install hypothesis") from exc

from ..codecs.base import Codec, Encoder
from ..exceptions import EncodeError, FrameError
from ._client import TestClient, TestServer, client_codec

if TYPE_CHECKING:
    from ..app import App
    from ..server import Server

__all__ = ["FuzzAction", "FuzzFailure", "FuzzScript", "fuzz_app", "fuzz_scripts"]

In = TypeVar("In")
Out = TypeVar("Out")

ActionKind = Literal["send", "wait", "eof", "reset", "close"]
"""What a client does in one :class:`FuzzAction`."""

Probe = Callable[[TestClient[Any, Any]], Awaitable[None]]
"""An async check that a fresh client is served: it gets the client and raises if not."""

MAX_STREAM = 32 * 1024
"""The most bytes one fuzzed client sends: half a test connection's buffer, so a
send never waits on a server that does not read (a full buffer would stall the
script, not the app)."""

DEFAULT_JUNK: st.SearchStrategy[bytes] = st.one_of(
    st.sampled_from([b"\n", b"\r\n", b"\r", b"\x00", b":", b",", b" ", b"\xff"]),
    st.binary(max_size=32),
    st.text(max_size=32).map(str.encode),
)
"""Junk bytes: separators of common framings, random bytes, and UTF-8 text."""

_ENDINGS: tuple[ActionKind, ...] = ("eof", "close", "reset")
_QUIET_LOGGERS = ("tcpkit.connection", "tcpkit.server")

MAX_REDUCE_RUNS = 200
"""The most runs :func:`fuzz_app` spends making hypothesis' smallest failing script smaller."""

WAIT_TURNS = 10
"""Scheduler turns a ``"wait"`` action gives the server: enough for it to read and
handle what it got (it takes two or three)."""
_METHODS = {"eof": "send_eof", "reset": "reset", "close": "aclose"}
_ENDS = frozenset(_METHODS)
_CLIENT_END = (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError)


# -- scripts ---------------------------------------------------------------------


@dataclass(frozen=True)
class FuzzAction:
    """One step of a :class:`FuzzScript`: what one client does.

    Attributes:
        client: which client acts (0, 1, ...). A client connects just before its
            first action, and the server sees the clients in that order.
        kind: ``"send"`` (``data``, raw: ``TestClient.send_bytes``),
            ``"wait"`` (ten scheduler turns, in which the server handles what
            it got), ``"eof"`` (half-close: ``send_eof``; the
            client sends nothing more), ``"reset"`` (abortive close, read by the
            server as ``ConnectionResetError``: ``reset``) or ``"close"``
            (``aclose``). After ``"reset"`` or ``"close"`` the client does nothing.
        data: the bytes a ``"send"`` sends.

    Raises:
        ValueError: an unknown ``kind``, a negative ``client``, or ``data``
            with another kind than ``"send"``.
    """

    client: int
    kind: ActionKind
    data: bytes = b""

    def __post_init__(self) -> None:
        if self.kind not in get_args(ActionKind):
            raise ValueError(f"unknown action kind {self.kind!r}")
        if self.client < 0:
            raise ValueError("client must be 0 or more")
        if self.data and self.kind != "send":
            raise ValueError(f"a {self.kind!r} action sends no data")

    def code(self) -> str:
        """This action as test code (``await client0.send_bytes(b'...')``)."""
        if self.kind == "send":
            return f"await client{self.client}.send_bytes({self.data!r})"
        if self.kind == "wait":
            return (
                f"for _ in range({WAIT_TURNS}):  # the server catches up\n"
                "    await anyio.lowlevel.checkpoint()"
            )
        return f"await client{self.client}.{_METHODS[self.kind]}()"


@dataclass(frozen=True)
class FuzzScript:
    """What a few clients do to an app, in order: a fuzzing example.

    :func:`fuzz_scripts` draws them; :meth:`run` plays one against an app.
    ``str(script)`` (and :meth:`code`) is the same as ``TestClient`` calls, to
    paste into a regression test.

    Attributes:
        actions: the steps, in order.
    """

    actions: tuple[FuzzAction, ...]

    @property
    def clients(self) -> int:
        """How many clients act."""
        return len({action.client for action in self.actions})

    def code(self) -> str:
        """The script as the body of a test: ``TestServer``, ``connect`` and client calls.

        Clients left open by the script get ``send_eof()`` at the end, as
        :meth:`run` does.
        """
        lines = ["async with TestServer(app) as server:"]
        opened: list[int] = []
        ended: set[int] = set()
        for action in self.actions:
            if action.client not in opened:
                opened.append(action.client)
                lines.append(f"    client{action.client} = await server.connect()")
            lines += [f"    {line}" for line in action.code().splitlines()]
            if action.kind in _ENDS:
                ended.add(action.client)
        lines += [f"    await client{n}.send_eof()" for n in opened if n not in ended]
        if not opened:
            lines.append("    pass")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.code()

    async def run(
        self,
        app: App[In, Out],
        *,
        probe: Callable[[TestClient[In, Out]], Awaitable[None]] | None = None,
        timeout: float = 2.0,  # noqa: ASYNC109 (one bound for the whole example)
    ) -> None:
        """Play this script against ``app`` and check that the app survived it.

        The app is served by a :class:`~tcpkit.testing.TestServer` (with
        ``raise_app_exceptions``). Each client connects at its first action;
        what the server sends is read (and dropped) as it comes. Then:

        1. every client the script left open half-closes, and the server must
           close each fuzzed connection;
        2. ``server.connection_count`` must return to 0;
        3. the server must still serve: a fresh client connects, and ``probe``
           (given that client) must return; with no ``probe``, the fresh
           client must be set up (``wait_connected``), then half-close and be
           closed by the server;
        4. ``server.connection_count`` must return to 0 again, and the app
           shuts down.

        At no point may the app let an exception escape (one tcpkit could only
        log: a handler's exception that reached the default ``on_error``, or
        one raised by ``on_error``, ``on_disconnect``, ``pre_connect``,
        ``on_stopped``...). Errors caused by the peer (a ``FrameError``, a
        reset) are expected and are not failures.

        Args:
            app: the app under test.
            probe: an async check run with a fresh client after the fuzzed ones
                ended (e.g. send a valid request, check the answer). It
                replaces the default check of step 3.
            timeout: seconds the whole run may take; past it the app is
                reported stuck, with the step it was at.

        Raises:
            FuzzFailure: a check failed (an ``AssertionError``). The message says
                which, while doing what, and shows the script as test code; the
                app's exception (or the probe's) is the ``__cause__``.
        """
        __tracebackhide__ = True  # pytest shows the app's traceback, not these frames
        runner = _Runner(app, self, probe, timeout)
        try:
            await runner.main()
        except Exception as exc:  # raised by the app at shutdown
            runner.failure = runner.failure or exc
        failure = runner.failure
        fresh = _fresh_client_code(probe) if runner.fresh_client else ""
        if isinstance(failure, _NotServing):
            raise _failure(app, self, "not serving", str(failure), fresh) from failure.__cause__
        if failure is not None:
            problem = (
                f"the app let an exception escape, one tcpkit could only log: {failure!r} "
                f"(seen while {runner.phase})"
            )
            raise _failure(app, self, "exception", problem, fresh) from failure
        if runner.stuck:
            problem = f"stuck {runner.phase} for {timeout} s ({runner.hint})"
            raise _failure(app, self, "stuck", problem, fresh)


def _fresh_client_code(probe: Probe | None) -> str:
    """The fresh client of :meth:`FuzzScript.run`, as test code."""
    if probe is None:
        return (
            "fresh = await server.connect()  # the default probe:\n"
            "await fresh.wait_connected()\n"
            "await fresh.send_eof()\n"
            "async for _ in fresh: ..."
        )
    name = getattr(probe, "__name__", "probe")
    return f"fresh = await server.connect()\nawait {name}(fresh)  # the probe"


FailureKind = Literal["exception", "stuck", "not serving"]
"""What a :class:`FuzzFailure` found."""


class FuzzFailure(AssertionError):
    """A fuzzing check failed: :meth:`FuzzScript.run` and :func:`fuzz_app` raise it.

    Its message says what failed and shows the script as test code; the app's
    exception (or the probe's) is its ``__cause__``.

    Attributes:
        script: the script that made it fail.
        kind: ``"exception"`` (the app let one escape), ``"stuck"`` (a step did
            not finish within the timeout) or ``"not serving"`` (the server
            stopped serving, or the probe failed).
        problem: what failed, in words.
    """

    __module__ = "tcpkit.testing"  # where users import it from (tracebacks show this)

    def __init__(self, message: str, script: FuzzScript, kind: FailureKind, problem: str) -> None:
        super().__init__(message)
        self.script = script
        self.kind: FailureKind = kind
        self.problem = problem

    def same_as(self, other: FuzzFailure) -> bool:
        """Whether ``other`` is the same failure: same kind, same type of cause."""
        return self.kind == other.kind and type(self.__cause__) is type(other.__cause__)


def _failure(
    app: App[Any, Any], script: FuzzScript, kind: FailureKind, problem: str, fresh_client: str
) -> FuzzFailure:
    """The failure, its message ending with the clients' actions as test code."""
    code = script.code()
    if fresh_client:  # it failed while (or after) the fresh client was served
        code = code.removesuffix("\n    pass")
        code += "".join(f"\n    {line}" for line in fresh_client.splitlines())
    body = "".join(f"\n    {line}" for line in code.splitlines())
    message = f"fuzzing {app!r}: {problem}\n\nThe clients did:\n{body}\n"
    return FuzzFailure(message, script, kind, problem)


# -- running a script --------------------------------------------------------------


def _stuck_hint(server: Server[Any, Any]) -> str:
    """Why the server may be stuck, as far as its state tells."""
    if server.closing:
        return "the server is shutting down"
    if server.max_connections == 0:
        return "server.max_connections is 0: clients wait in the backlog"
    return _SLOW


_SLOW = "a handler that never returns? a slow app needs a larger timeout"


class _NotServing(Exception):
    """The server stopped serving (internal: :meth:`FuzzScript.run` reports it)."""


class _Runner:
    """One run of a script: the clients, their readers, the phase reached."""

    def __init__(
        self, app: App[Any, Any], script: FuzzScript, probe: Probe | None, timeout: float
    ) -> None:
        self.app = app
        self.script = script
        self.probe = probe
        self.timeout = timeout
        self.phase = "starting the app"
        self.stuck = False
        self.fresh_client = False  # the fresh client's step was reached
        self.hint = _SLOW  # why it may be stuck
        self.clients: dict[int, TestClient[Any, Any]] = {}
        self.half_closed: set[int] = set()
        self.closed: set[int] = set()
        self.error: Exception | None = None  # what a client's reader got
        self.failure: Exception | None = None

    async def main(self) -> None:
        """Every step within the timeout; sets :attr:`failure` or :attr:`stuck`."""
        deadline = anyio.current_time() + self.timeout
        with anyio.CancelScope(deadline=deadline) as bound:  # starting and stopping
            async with TestServer(self.app) as test_server:
                bound.deadline = math.inf
                with anyio.CancelScope(deadline=deadline) as steps:
                    try:
                        await self.steps(test_server)
                    except Exception as exc:  # the first failure: the shutdown may raise more
                        self.failure = exc
                if self.failure is not None or steps.cancelled_caught:
                    # What is stuck or broken must not hold the shutdown for its drain
                    # time: end every connection now (a stuck on_disconnect has 5 s).
                    self.stuck = steps.cancelled_caught
                    self.hint = _stuck_hint(test_server.server)
                    test_server.server.abort()
                    deadline = anyio.current_time() + self.timeout
                else:
                    self.phase = "shutting the app down"
                bound.deadline = deadline
        if bound.cancelled_caught:
            self.stuck = True

    async def steps(self, test_server: TestServer[Any, Any]) -> None:
        await self.play(test_server)
        if self.error is not None:
            raise self.error
        await self.until_no_connection(test_server, "after the fuzzed clients ended")
        for client in self.clients.values():
            _raise_pending(client)  # what the app raised as the last ones ended
        self.fresh_client = True
        await self.serve_fresh_client(test_server)
        await self.until_no_connection(test_server, "after the fresh client ended")

    async def play(self, test_server: TestServer[Any, Any]) -> None:
        """The script's actions, with a reader per client; then the server ends each one."""
        async with anyio.create_task_group() as tg:
            self.phase = "running the script"
            for action in self.script.actions:
                client = self.clients.get(action.client)
                if client is None:
                    client = self.clients[action.client] = await test_server.connect()
                    tg.start_soon(self.read, client, tg)
                await self.act(client, action)
            for n, client in self.clients.items():
                if n not in self.closed and n not in self.half_closed:
                    with suppress(*_CLIENT_END):
                        await client.send_eof()
            self.phase = "waiting for the server to close the fuzzed connections"

    async def act(self, client: TestClient[Any, Any], action: FuzzAction) -> None:
        if action.client in self.closed:
            return  # a closed client does nothing more
        if action.kind == "wait":
            for _ in range(WAIT_TURNS):
                await anyio.lowlevel.checkpoint()
            return
        with suppress(*_CLIENT_END):  # the server may have closed it: fine
            if action.kind == "send":
                await client.send_bytes(action.data)
            elif action.kind == "eof":
                self.half_closed.add(action.client)
                await client.send_eof()
            else:
                self.closed.add(action.client)
                await (client.reset() if action.kind == "reset" else client.aclose())

    async def read(self, client: TestClient[Any, Any], tg: anyio.abc.TaskGroup) -> None:
        """Read what the server sends until it closes; an app exception stops the run."""
        try:
            while True:
                await client.receive_bytes(timeout=None)
        except _CLIENT_END:
            return
        except Exception as exc:
            if self.error is None:
                self.error = exc
            tg.cancel_scope.cancel()

    async def until_no_connection(self, test_server: TestServer[Any, Any], when: str) -> None:
        self.phase = f"waiting for server.connection_count to return to 0 {when}"
        delay = 0.0
        while test_server.server.connection_count:
            await anyio.sleep(delay)
            delay = min(2 * delay or 0.0005, 0.01)

    async def serve_fresh_client(self, test_server: TestServer[Any, Any]) -> None:
        server = test_server.server
        self.phase = "serving a fresh client after the fuzzed ones"
        if server.closing:
            raise _NotServing("the server is shutting down after the fuzzed clients")
        if server.max_connections == 0:
            raise _NotServing("server.max_connections is 0 after the fuzzed clients")
        client = await test_server.connect()
        try:
            if self.probe is None:
                await self.default_probe(client)
                return
            try:
                await self.probe(client)
            except Exception as exc:
                raise _NotServing(
                    f"the probe failed after the fuzzed clients ended: {exc!r}"
                ) from exc
        finally:
            await client.aclose()

    async def default_probe(self, client: TestClient[Any, Any]) -> None:
        """The fresh client is set up, half-closes, and the server closes it.

        What the app raises meanwhile comes out as itself (an escaped exception).
        """
        if self.app.handlers.acceptor is None:
            _raise_pending(client)  # so that a RuntimeError below is the client's
            try:
                await client.wait_connected(timeout=None)
            except RuntimeError as exc:  # rejected, or closed during its setup
                raise _NotServing(
                    f"a fresh client was not served after the fuzzed clients ended: {exc}"
                ) from exc
        await client.send_eof()
        with suppress(*_CLIENT_END):
            while True:
                await client.receive_bytes(timeout=None)


def _raise_pending(client: TestClient[Any, Any]) -> None:
    """Raise an app exception recorded but not raised yet (a client's receive raises it)."""
    with suppress(anyio.WouldBlock, FrameError, *_CLIENT_END):
        client.receive_nowait()


# -- drawing scripts ------------------------------------------------------------------


def fuzz_scripts(
    app: App[In, Any],
    messages: st.SearchStrategy[In] | None = None,
    *,
    clients: int = 2,
    junk: st.SearchStrategy[bytes] | None = None,
    max_steps: int = 12,
) -> st.SearchStrategy[FuzzScript]:
    """A hypothesis strategy of :class:`FuzzScript` for ``app``.

    A script is a list of up to ``max_steps`` steps, each one by one of up to
    ``clients`` clients: sending a piece, or ending (a half-close, a reset or
    a close; a client that does not end half-closes after the last step). A
    piece is a valid frame (a message drawn from ``messages``, encoded with
    the app's input codec by that client's encoder) three times in five, else
    a partial frame (the start of one) or junk; it is sent in two writes cut
    anywhere, the server catching up (a ``"wait"``) between them or not.
    Hypothesis shrinks towards fewer steps, client 0, valid frames and
    simpler messages, and no ends.

    Use it in your own ``@given`` test, with :meth:`FuzzScript.run`::

        @given(script=fuzz_scripts(app, st.text()))
        async def test_fuzz(script: FuzzScript) -> None:
            await script.run(app)

    Args:
        app: the app whose clients are simulated (its input codec encodes the
            frames: :func:`~tcpkit.testing.client_codec`).
        messages: a strategy of messages the app's input codec can encode
            (what its ``on_input`` receives). ``None``: junk only.
        clients: how many clients a script may use.
        junk: a strategy of bytes that are not (necessarily) frames; default:
            separators of common framings, random bytes and UTF-8 text.
        max_steps: the most steps in one script. A client sends at most 32 KiB.

    Raises:
        ValueError: ``clients`` or ``max_steps`` is below 1.
    """
    if clients < 1:
        raise ValueError("clients must be at least 1")
    if max_steps < 1:
        raise ValueError("max_steps must be at least 1")
    codec: Codec[Any, In] = client_codec(app)
    steps = _steps(messages, DEFAULT_JUNK if junk is None else junk, clients)
    return st.lists(steps, min_size=1, max_size=max_steps).map(
        lambda drawn: _ScriptBuilder(codec).build(drawn)
    )


class _Piece(NamedTuple):
    """A step: a client sends a piece of its stream."""

    client: int
    kind: str  # "frame", "partial" or "junk"
    content: Any  # the message (a frame, a partial frame) or the junk bytes
    split: int  # the piece goes in two writes, cut after `split` bytes,
    wait: bool  # with a wait between them or not
    cut: int = 0  # a partial frame is its first `cut` bytes (all but one at most)


class _End(NamedTuple):
    """A step: a client ends (``"eof"``, ``"close"`` or ``"reset"``)."""

    client: int
    kind: ActionKind


def _steps(
    messages: st.SearchStrategy[Any] | None, junk: st.SearchStrategy[bytes], clients: int
) -> st.SearchStrategy[_Piece | _End]:
    client = st.integers(0, clients - 1)
    split = st.integers(0, 64)
    junks = st.builds(_Piece, client, st.just("junk"), junk, split, st.booleans())
    ends = st.builds(_End, client, st.sampled_from(_ENDINGS))
    if messages is None:
        return st.one_of(junks, junks, junks, ends)
    frames = st.builds(_Piece, client, st.just("frame"), messages, split, st.booleans())
    partials = st.builds(
        _Piece, client, st.just("partial"), messages, split, st.booleans(), st.integers(1, 256)
    )
    # Small steps of a few kinds shrink well. Valid frames half of the time, to get
    # past the framing often: junk that does not decode usually ends its connection.
    return st.one_of(frames, frames, frames, partials, junks, ends)


class _ScriptBuilder:
    """Turns drawn steps into a script: frames encoded, clients numbered as they connect."""

    def __init__(self, codec: Codec[Any, Any]) -> None:
        self.codec = codec
        self.encoders: dict[int, Encoder[Any]] = {}
        self.sent: dict[int, int] = {}
        self.ended: set[int] = set()
        self.numbers: dict[int, int] = {}
        self.actions: list[FuzzAction] = []

    def build(self, steps: list[_Piece | _End]) -> FuzzScript:
        for step in steps:
            if step.client in self.ended:
                continue  # an ended client does nothing more
            if isinstance(step, _End):
                self.ended.add(step.client)
                self.act(step.client, step.kind)
            else:
                self.send(step)
        if not self.actions:  # what was drawn sends nothing: a client that just leaves
            self.act(0, "eof")
        return FuzzScript(tuple(self.actions))

    def act(self, client: int, kind: ActionKind, data: bytes = b"") -> None:
        number = self.numbers.setdefault(client, len(self.numbers))
        self.actions.append(FuzzAction(number, kind, data))

    def send(self, piece: _Piece) -> None:
        sent = self.sent.get(piece.client, 0)
        data = self.encode(piece)[: MAX_STREAM - sent]
        self.sent[piece.client] = sent + len(data)
        first, rest = data[: piece.split], data[piece.split :]
        if first:
            self.act(piece.client, "send", first)
        if piece.wait:
            self.act(piece.client, "wait")
        if rest:
            self.act(piece.client, "send", rest)

    def encode(self, piece: _Piece) -> bytes:
        if piece.kind == "junk":
            data: bytes = piece.content
            return data
        encoder = self.encoders.setdefault(piece.client, self.codec.encoder())
        try:
            frame = encoder.encode(piece.content)
        except EncodeError as exc:
            raise ValueError(
                f"the messages strategy drew {piece.content!r}, which the app's input "
                f"codec cannot encode: {exc}"
            ) from exc
        return frame[: min(piece.cut, len(frame) - 1)] if piece.kind == "partial" else frame


# -- the synchronous entry point --------------------------------------------------------

Backend = str | tuple[str, Mapping[str, Any]]

_BACKENDS: dict[str, tuple[str, dict[str, Any]]] = {
    "asyncio": ("asyncio", {}),
    "uvloop": ("asyncio", {"use_uvloop": True}),
    "trio": ("trio", {}),
}


def fuzz_app(
    app: App[In, Out],
    messages: st.SearchStrategy[In] | None = None,
    *,
    probe: Callable[[TestClient[In, Out]], Awaitable[None]] | None = None,
    clients: int = 2,
    junk: st.SearchStrategy[bytes] | None = None,
    max_steps: int = 12,
    backend: Backend = "asyncio",
    max_examples: int | None = None,
    seed: int | None = None,
    timeout: float = 2.0,
    quiet: bool = True,
) -> None:
    """Fuzz ``app`` with hypothesis: abusive clients must not break it.

    Call it from an ordinary (synchronous) test::

        def test_the_app_survives_fuzzing() -> None:
            fuzz_app(app, st.text(max_size=20), backend="trio")

    Each example is a :class:`FuzzScript` drawn by :func:`fuzz_scripts` (up
    to ``clients`` clients sending valid frames, partial frames and junk, split
    anywhere, ending with a half-close, a reset or a close) and played by
    :meth:`FuzzScript.run` in a new event loop of ``backend``. It fails when
    the app lets an exception escape, when the server does not close a
    connection after its client's end, does not get back to no connection,
    or does not serve a fresh client afterwards (``probe``). Hypothesis then
    shrinks the script, and the ``AssertionError`` shows the smallest one as
    ``TestClient`` calls, with the app's exception as its cause.

    It runs its own event loops, so it cannot be called from an async test:
    there, use :func:`fuzz_scripts` with ``@given`` and :meth:`FuzzScript.run`.

    Args:
        app: the app under test.
        messages: a strategy of messages for the app's input codec (what its
            ``on_input`` receives), for the valid frames; ``None``: junk only.
        probe: an async check given a fresh client once the fuzzed clients
            ended; it raises if the app does not serve it properly. Default: the
            fresh client is set up, half-closes, and the server closes it.
        clients: the most clients in one example.
        junk: a strategy of junk bytes (see :func:`fuzz_scripts`).
        max_steps: the most steps (pieces sent, ends) in one example.
        backend: ``"asyncio"``, ``"uvloop"``, ``"trio"``, or anyio's
            ``(name, options)`` pair (what an ``anyio_backend`` fixture gives).
        max_examples: how many scripts to run; ``None`` keeps the current
            hypothesis profile's setting.
        seed: a fixed hypothesis seed, for a reproducible run.
        timeout: seconds one example may take before the app is reported stuck.
        quiet: silence tcpkit's ``tcpkit.connection`` and ``tcpkit.server``
            loggers while fuzzing: the fuzzed clients cause thousands of
            expected errors (and the app's exception is the failure's cause).

    Raises:
        FuzzFailure: a check failed (an ``AssertionError``; see
            :meth:`FuzzScript.run`), for the smallest script found: hypothesis
            shrinks it, then single actions are dropped and a client's
            consecutive sends joined while it fails the same way.
        RuntimeError: called from a running event loop.
        ValueError: an unknown ``backend``, or ``clients``/``max_steps`` below 1.
    """
    __tracebackhide__ = True
    name, options = _backend(backend)
    _refuse_running_loop()
    scripts = fuzz_scripts(app, messages, clients=clients, junk=junk, max_steps=max_steps)
    run = functools.partial(_run_one, app, probe, timeout, name, options)
    failures: list[FuzzFailure] = []

    def fuzz_example(script: FuzzScript) -> None:
        __tracebackhide__ = True
        try:
            run(script)
        except FuzzFailure as failure:
            failures.append(failure)
            raise

    # Hypothesis keys its example database on the test function: the app and the
    # backend in the key give each its own saved failures (as check_codec does).
    key = f"{app!r} {name} {sorted(options.items())} {messages!r}".encode()
    fuzz_example._hypothesis_internal_add_digest = key  # type: ignore[attr-defined]
    test = _settings(max_examples)(given(script=scripts)(fuzz_example))
    if seed is not None:
        test = hypothesis_seed(seed)(test)
    try:
        with _quiet(quiet):
            test()
    except FuzzFailure as exc:
        failure = exc
    else:
        return
    if failures and failures[-1] is failure and failure.kind != "stuck":
        with _quiet(quiet):  # not in the except block: what it raises has no context
            failure = _reduced(failure, run)
    # Raised afresh: its traceback is the test's, its cause the app's exception.
    again = FuzzFailure(str(failure), failure.script, failure.kind, failure.problem)
    raise again from failure.__cause__


@contextmanager
def _quiet(quiet: bool) -> Generator[None, None, None]:
    """Drop the records of tcpkit's connection and server loggers (``quiet``)."""
    loggers = [logging.getLogger(name) for name in _QUIET_LOGGERS] if quiet else []
    for logger in loggers:
        logger.addFilter(_drop)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(_drop)


def _drop(record: logging.LogRecord) -> bool:
    return False


def _reduced(failure: FuzzFailure, run: Callable[[FuzzScript], None]) -> FuzzFailure:
    """``failure`` with a smaller script if one fails the same way.

    Hypothesis' shrinking can stop on a script with a step too many (its steps
    are many choices each); this drops single actions and joins a client's
    consecutive sends while the failure stays the same, as delta debugging
    does. At most ``MAX_REDUCE_RUNS`` runs.
    """
    runs = 0
    smaller = True
    while smaller and runs < MAX_REDUCE_RUNS:
        smaller = False
        for candidate in _candidates(failure.script):
            runs += 1
            try:
                run(candidate)
            except FuzzFailure as other:
                if other.same_as(failure):
                    failure, smaller = other, True
                    break
            if runs >= MAX_REDUCE_RUNS:
                break
    return failure


def _candidates(script: FuzzScript) -> Iterator[FuzzScript]:
    """Scripts one step smaller than ``script``: an action dropped, two sends joined."""
    actions = script.actions
    for i in range(len(actions) if len(actions) > 1 else 0):  # one client at least
        yield _renumbered(actions[:i] + actions[i + 1 :])
    for i, (first, second) in enumerate(itertools.pairwise(actions)):
        if first.kind == second.kind == "send" and first.client == second.client:
            joined = FuzzAction(first.client, "send", first.data + second.data)
            yield FuzzScript((*actions[:i], joined, *actions[i + 2 :]))


def _renumbered(actions: Sequence[FuzzAction]) -> FuzzScript:
    """The script of ``actions``, its clients numbered in the order they connect."""
    numbers: dict[int, int] = {}
    return FuzzScript(
        tuple(
            FuzzAction(numbers.setdefault(a.client, len(numbers)), a.kind, a.data) for a in actions
        )
    )


def _run_one(
    app: App[In, Out],
    probe: Callable[[TestClient[In, Out]], Awaitable[None]] | None,
    timeout: float,
    backend: str,
    options: dict[str, Any],
    script: FuzzScript,
) -> None:
    __tracebackhide__ = True
    play = functools.partial(script.run, app, probe=probe, timeout=timeout)
    anyio.run(play, backend=backend, backend_options=options)


def _backend(backend: Backend) -> tuple[str, dict[str, Any]]:
    if isinstance(backend, str):
        if backend not in _BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; choose among {', '.join(_BACKENDS)}")
        name, options = _BACKENDS[backend]
        return name, dict(options)
    name, given_options = backend
    if name not in ("asyncio", "trio"):
        raise ValueError(f"unknown backend {name!r}; anyio's backends are 'asyncio' and 'trio'")
    return name, dict(given_options)


def _refuse_running_loop() -> None:
    library = None
    with suppress(RuntimeError):
        asyncio.get_running_loop()
        library = "asyncio"
    trio = sys.modules.get("trio")
    if trio is not None and trio.lowlevel.in_trio_run():
        library = "trio"
    if library is not None:
        raise RuntimeError(
            f"fuzz_app runs an event loop per example and cannot run inside {library}'s: "
            "call it from a synchronous test, or use fuzz_scripts() with @given and "
            "`await script.run(app)` in an async one"
        )


def _settings(max_examples: int | None) -> settings:
    parent = settings()  # the current profile
    checks = [*parent.suppress_health_check, HealthCheck.too_slow, HealthCheck.data_too_large]
    options: dict[str, Any] = {
        "deadline": None,
        "suppress_health_check": checks,
        "report_multiple_bugs": False,  # one AssertionError, the smallest script
        # The explain phase varies the shrunk script to comment on it: a script
        # already reads as what the clients did, and it would cost many more runs.
        "phases": [phase for phase in parent.phases if phase is not Phase.explain],
    }
    if max_examples is not None:
        options["max_examples"] = max_examples
    return settings(parent, **options)
