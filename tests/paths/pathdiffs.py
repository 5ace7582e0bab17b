"""The known path differences: one table, one entry per defect.

Each entry names the checks it affects and the rows (a predicate on
:class:`~pathmatrix.Path`; ``None``: every row, or a check with no path) where
the check fails today. The conftest marks those tests
``xfail(strict=True)``: the suite stays green, and a fix turns the xfail into
a failure (XPASS), a reminder to delete the entry.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass

from pathmatrix import Path

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import ExceptionGroup


@dataclass(frozen=True)
class Difference:
    reason: str
    checks: tuple[str, ...]
    when: Callable[[Path], bool] | None = None
    raises: type[BaseException] | tuple[type[BaseException], ...] | None = None
    """How the check fails today (any other failure is reported as a failure)."""

    def hits(self, check: str, path: Path | None) -> bool:
        if check not in self.checks:
            return False
        return self.when is None or (path is not None and self.when(path))


KNOWN_DIFFERENCES: list[Difference] = [
    # -- on_flushed ----------------------------------------------------------------------
    # The client gets "pong" but never "flushed:pong"; a download continued
    # from on_flushed stops after chunk 0. Output of on_connect, of an event
    # or of a broadcast does get its on_flushed. On trio, _turn hands an input
    # turn's output to TrioSocketStream.send_nowait, which bypasses _flush
    # (where on_flushed is queued).
    Difference(
        "trio socket streams: on_flushed is not called after the output of an input turn "
        "(on_input, on_error), written by send_nowait",
        (
            "test_on_flushed_follows_the_output_of_every_kind_of_handler",
            "test_a_download_continued_from_on_flushed_sends_every_chunk",
        ),
        lambda p: p.backend == "trio" and p.stream in ("tcp", "unix"),
        raises=TimeoutError,
    ),
    # -- socket errors ---------------------------------------------------------------------
    # on_error gets anyio.BrokenResourceError() with an empty message, after
    # the socket is closed; the errno is in __cause__ (ConnectionResetError,
    # or BrokenPipeError for a write on trio Unix sockets) or nowhere: no
    # cause at all for a read on asyncio (not uvloop) TLS with def/async
    # handlers.
    Difference(
        "a peer reset reaches on_error as BrokenResourceError() with an empty message "
        "(the errno only in __cause__, if at all)",
        (
            "test_a_reset_while_the_server_reads_reaches_on_error_as_a_reset",
            "test_a_reset_while_the_server_writes_reaches_on_error_as_a_reset",
        ),
        lambda p: p.socket,
        raises=AssertionError,
    ),
    # TestClient.aclose() is the in-memory transport's only close: the server
    # reads it as EOF, so no error at all reaches on_error.
    Difference(
        "in-memory transport: a client's abortive close reads as EOF: on_error is not called",
        ("test_a_reset_while_the_server_reads_reaches_on_error_as_a_reset",),
        lambda p: p.stream == "memory",
        raises=AssertionError,
    ),
    Difference(
        "in-memory transport: writing to a closed client reaches on_error as "
        "BrokenResourceError('the peer closed the connection'), not as a reset",
        ("test_a_reset_while_the_server_writes_reaches_on_error_as_a_reset",),
        lambda p: p.stream == "memory",
        raises=AssertionError,
    ),
    # Connection._flush catches BrokenResourceError/ClosedResourceError/OSError;
    # after a TLS EOF without close_notify anyio's TLSStream.send raises
    # anyio.EndOfStream, which escapes to Server._handle ("tcpkit: unexpected
    # error in connection task", logged with a traceback).
    Difference(
        "TLS: output after the client's EOF without close_notify: TLSStream.send raises "
        "anyio.EndOfStream, which escapes Connection._flush",
        ("test_output_after_a_tls_clients_bare_fin_is_no_unexpected_error",),
        raises=AssertionError,
    ),
    # -- events ------------------------------------------------------------------------------
    # While the reader task's _flush of the command's reply waits for the
    # client, _dispatch's `await self._flush()` returns at once (a flush is in
    # progress): def/async events then run back to back without a checkpoint,
    # nothing is written, and the output piles up to the hard limit
    # (WriteBufferFull, the connection is closed; the client gets at most the
    # first chunks). With handlers that wait, it piles up as fast as they go.
    Difference(
        "events run while another task flushes do not wait for it: their output piles up "
        "to the hard limit (WriteBufferFull)",
        ("test_a_stream_of_events_each_emitting_the_next_is_held_back_by_the_client",),
        raises=EOFError,
    ),
    # -- shutdown from a handler ---------------------------------------------------------
    # server.shutdown() waits until every connection has ended, its caller's
    # too: the calling handler never returns, its connection never closes
    # (the client waits for EOF after "bye"), on_stopped never runs,
    # serve() never returns.
    Difference(
        "await server.shutdown() in on_input waits for its own connection: it never returns",
        (
            "test_server_shutdown_awaited_in_on_input_completes",
            "test_serve_returns_after_a_shutdown_awaited_in_on_input",
        ),
        raises=(AssertionError, ExceptionGroup),
    ),
    Difference(
        "await server.shutdown() in on_disconnect waits for its own connection's slot: "
        "it never returns, on_stopped never runs",
        ("test_server_shutdown_awaited_in_on_disconnect_completes",),
        raises=AssertionError,
    ),
    Difference(
        "server.post(missing_id, unknown_event) returns False instead of raising "
        "RegistrationError (the connection is looked up before the handler)",
        ("test_post_returns_false_for_a_missing_connection_and_refuses_an_unknown_event",),
    ),
    # -- acceptor -------------------------------------------------------------------------------
    Difference(
        "an acceptor gets the raw TLS stream (no handshake): the client's handshake fails",
        ("test_an_acceptor_with_tls_reads_plaintext",),
    ),
    Difference(
        "an acceptor gets the PROXY line as data and the proxy's address as remote_addr",
        ("test_an_acceptor_behind_a_proxy_sees_the_real_client_and_not_the_header",),
        raises=AssertionError,
    ),
    Difference(
        "an acceptor runs at once: setup_timeout does not apply (a client that never sends "
        "its PROXY header stays open)",
        ("test_an_acceptors_setup_is_bounded_by_setup_timeout",),
        raises=TimeoutError,
    ),
    Difference(
        "pre_connect, on_connect, on_disconnect, on_error, on_flushed and events registered "
        "with an acceptor are accepted, then never called",
        ("test_handlers_an_acceptor_makes_unused_are_refused",),
    ),
]


def differences_for(check: str, path: Path | None) -> list[Difference]:
    return [d for d in KNOWN_DIFFERENCES if d.hits(check, path)]
