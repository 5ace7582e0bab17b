r"""A finger server (RFC 1288) written as a custom acceptor.

``@app.acceptor`` replaces tcpkit's connection handling: the function gets the
accepted byte stream and the client's address, and owns the conversation. Here
it does its own framing: it reads one query line (at most 512 bytes, within 10
seconds), writes the answer, and closes. No codec and no ``on_input`` are
involved. The server still counts the connection against ``max_connections``
until the function returns, and closes the stream after it.

Queries: an empty line lists everyone; ``NAME`` (or ``/W NAME``) describes one
person.

Try it::

    tcpkit run examples/acceptor.py:app --port 12345
    printf '\r\n' | nc 127.0.0.1 12345
    # ann        Ann Barcomb
    # jos        Jos Boumans
    # rocco      Rocco Caputo
    printf 'rocco\r\n' | nc 127.0.0.1 12345
    # Login: rocco      Name: Rocco Caputo
    # Plan: Wrote POE::Component::Server::TCP.

A ``finger`` client asks port 79 only (which needs root to listen on); with
the server there, ``finger rocco@127.0.0.1`` prints the same answer.
"""

from __future__ import annotations

import logging
from typing import Any

import anyio
import anyio.abc
from anyio.streams.buffered import BufferedByteReceiveStream

from tcpkit import App

MAX_QUERY = 512
QUERY_TIMEOUT = 10.0

PEOPLE = {
    "rocco": ("Rocco Caputo", "Wrote POE::Component::Server::TCP."),
    "ann": ("Ann Barcomb", "Envisioned it first."),
    "jos": ("Jos Boumans", "Contributed code it is based on."),
}

log = logging.getLogger("finger")

app = App(name="finger", max_connections=64)


def answer(query: str) -> str:
    """The reply to one finger query (without the final CRLF)."""
    words = query.split()
    if words[:1] == ["/W"]:  # the "verbose" switch; every answer here is verbose
        words = words[1:]
    if not words:
        return "\r\n".join(f"{login:<10} {name}" for login, (name, _) in sorted(PEOPLE.items()))
    if len(words) > 1 or "@" in words[0]:
        return "finger: forwarding is not supported"
    person = PEOPLE.get(words[0].lower())
    if person is None:
        return f"finger: {words[0]}: no such user"
    name, plan = person
    return f"Login: {words[0].lower():<10} Name: {name}\r\nPlan: {plan}"


async def close_gracefully(stream: anyio.abc.ByteStream) -> None:
    """Half-close, then wait (briefly) for the client to close its side.

    Returning from the acceptor closes the stream. If the client sent bytes
    that were never read, the kernel then resets the connection, and on a
    real network a reset can overtake the answer. Waiting for the client's
    end of stream first is what tcpkit's own connections do.
    """
    await stream.send_eof()
    with anyio.move_on_after(2):
        try:
            while True:
                await stream.receive()
        except anyio.EndOfStream:
            pass


@app.acceptor
async def finger(stream: anyio.abc.ByteStream, remote_addr: Any) -> None:
    reader = BufferedByteReceiveStream(stream)
    try:
        with anyio.fail_after(QUERY_TIMEOUT):
            try:
                raw = await reader.receive_until(b"\n", MAX_QUERY)
            except anyio.DelimiterNotFound:
                reply = "finger: query too long"
            else:
                query = raw.removesuffix(b"\r").decode("utf-8", "replace")
                log.info("query %r from %s", query, remote_addr)
                reply = answer(query)
            await stream.send(reply.encode() + b"\r\n")
        await close_gracefully(stream)
    except (TimeoutError, anyio.IncompleteRead, anyio.BrokenResourceError, OSError):
        pass  # a silent or vanished client; the server closes the stream after we return


if __name__ == "__main__":
    app.run(port=12345)
