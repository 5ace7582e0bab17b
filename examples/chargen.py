r"""The character generator of RFC 864, streamed with ``on_flushed``.

On connect, the server sends lines of 72 printable ASCII characters, each line
starting one character further along the 95-character cycle, until the client
goes away. Input is read and thrown away, as the RFC says.

Streaming is paced by the client: ``on_connect`` queues the first
``LINES_PER_FLUSH`` lines, and each time they have all been handed to the
operating system, ``on_flushed`` queues the next ones. A client that stops
reading stops the stream; nothing piles up in the server's memory (POE's
ClientFlushed pattern).

Try it::

    tcpkit run examples/chargen.py:app --port 12345
    nc 127.0.0.1 12345 | head -n 3
    #  !"#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\]^_`abcdefg
    # !"#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\]^_`abcdefgh
    # "#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\]^_`abcdefghi
    nc 127.0.0.1 12345 | pv -S -s 100M > /dev/null    # the throughput of 100 MB
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import anyio

from tcpkit import App, Connection, Lines, Raw

log = logging.getLogger("chargen")

LINE_WIDTH = 72
LINES_PER_FLUSH = 64
# The 95 printable ASCII characters; any 72-character window of the cycle is a
# slice of CYCLE.
CHARACTERS = "".join(chr(code) for code in range(32, 127))
CYCLE = CHARACTERS * 2


def line(number: int) -> str:
    """Line ``number`` (from 0) of the RFC 864 pattern."""
    start = number % len(CHARACTERS)
    return CYCLE[start : start + LINE_WIDTH]


@dataclass
class Position:
    """Per-connection state (``conn.state``): the next line to send."""

    next_line: int = 0


# Input is raw bytes, never looked at (so no input line can be too long);
# output is CRLF-terminated lines.
app = App(
    name="chargen",
    input_codec=Raw(),
    output_codec=Lines(),
    state=Position,
)


def put_lines(conn: Connection[bytes, str]) -> None:
    position: Position = conn.state
    first = position.next_line
    for number in range(first, first + LINES_PER_FLUSH):
        conn.put(line(number))
    position.next_line = first + LINES_PER_FLUSH


@app.on_connect
def start(conn: Connection[bytes, str]) -> None:
    put_lines(conn)


@app.on_flushed
def more(conn: Connection[bytes, str]) -> None:
    if not conn.shutting_down:  # the client left: stop generating
        put_lines(conn)


@app.on_error
def error(conn: Connection[bytes, str], exc: Exception) -> None:
    # A chargen client stops the stream by closing the connection, so the write
    # that then fails is the normal end, not a problem worth a warning.
    if isinstance(exc, (anyio.BrokenResourceError, OSError)):
        log.debug("%r: client went away (%s)", conn, exc)
    else:
        log.error("%r: %s", conn, exc, exc_info=exc)


if __name__ == "__main__":
    app.run(port=12345)
