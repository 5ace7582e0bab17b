r"""The five-line echo server: every line comes back as it was sent.

Try it::

    tcpkit run examples/echo.py:app --port 12345
    socat - TCP:127.0.0.1:12345
"""

from tcpkit import App, Connection

app = App()


@app.on_input
async def echo(conn: Connection[str, str], line: str) -> None:
    await conn.send(line)


if __name__ == "__main__":
    app.run(port=12345)
