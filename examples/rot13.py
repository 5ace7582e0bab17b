r"""The rot13 server of POE::Component::Server::TCP's synopsis.

Greets every client with a banner, then answers each line with its rot13.

Try it::

    tcpkit run examples/rot13.py:app --port 12345
    printf 'Hello, world\r\n' | socat - TCP:127.0.0.1:12345
    # Smile from the server!
    # Uryyb, jbeyq
"""

from __future__ import annotations

import codecs
import logging

from tcpkit import App, Connection

log = logging.getLogger("rot13")

app = App(name="rot13")


@app.on_connect
def connected(conn: Connection[str, str]) -> None:
    log.info("got a connection from %s", conn.remote_ip)
    conn.put("Smile from the server!")


@app.on_input
def rot13(conn: Connection[str, str], line: str) -> None:
    conn.put(codecs.encode(line, "rot13"))


if __name__ == "__main__":
    app.run(port=12345)
