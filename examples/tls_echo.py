r"""An echo server over TLS: a greeting naming the TLS version, then every line back.

Make a self-signed certificate for ``localhost`` (valid for 30 days)::

    openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj /CN=localhost \
        -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
        -keyout key.pem -out cert.pem

Run it, with the CLI or as a script::

    tcpkit run examples/tls_echo.py:app --port 12345 \
        --ssl-certfile cert.pem --ssl-keyfile key.pem
    python examples/tls_echo.py cert.pem key.pem

Try it (``-quiet`` hides the handshake details; the certificate is its own CA)::

    openssl s_client -connect 127.0.0.1:12345 -tls1_3 -quiet -CAfile cert.pem

A client that does not speak TLS, or fails the handshake, is closed without
troubling the others; a client that connects and says nothing is closed after
``setup_timeout`` seconds.
"""

from __future__ import annotations

import ssl
import sys

from anyio.streams.tls import TLSAttribute

from tcpkit import App, Connection

app = App(name="tls-echo", setup_timeout=10.0)


@app.on_connect
async def greet(conn: Connection[str, str]) -> None:
    version = conn.stream.extra(TLSAttribute.tls_version, "no TLS")
    await conn.send(f"hello over {version}")


@app.on_input
async def echo(conn: Connection[str, str], line: str) -> None:
    await conn.send(line)


def server_context(certfile: str, keyfile: str | None = None) -> ssl.SSLContext:
    """A server-side TLS context with tcpkit's defaults (TLS 1.2 or newer)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certfile, keyfile)
    return context


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        sys.exit("usage: python examples/tls_echo.py CERTFILE [KEYFILE]")
    app.run(port=12345, ssl=server_context(*sys.argv[1:]))
