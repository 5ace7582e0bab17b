"""A greeting, then an answer to every line; "bye" to leave."""

from tcpkit import App, Connection

app = App(name="hello")  # the default codec is Lines(): str messages, one per line


@app.on_connect
def greet(conn: Connection[str, str]) -> None:
    conn.put(f"Hello, {conn.remote_ip}! Type something; 'bye' to leave.")


@app.on_input
async def answer(conn: Connection[str, str], line: str) -> None:
    if line == "bye":
        conn.put("Goodbye.")
        conn.shutdown()  # graceful: "Goodbye." is delivered, then the socket closes
        return
    await conn.send(f"You said: {line}")


if __name__ == "__main__":
    app.run(port=12345)
