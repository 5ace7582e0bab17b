"""Real programs in front of tcpkit: HAProxy (PROXY v1 and v2), openssl s_client, socat.

Each test is skipped, with the reason, when its program is not installed.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import anyio.abc
import pytest
from anyio.abc import SocketAttribute
from anyio.streams.tls import TLSAttribute
from helpers import LineClient
from netutil import Certs, free_port, whoami_app

from tcpkit import App, Connection

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

HAPROXY = shutil.which("haproxy")
OPENSSL = shutil.which("openssl")
SOCAT = shutil.which("socat")


async def wait_for_port(port: int, timeout: float = 10.0) -> None:
    """Poll a connect until something accepts on 127.0.0.1:port (no fixed sleep)."""
    with anyio.fail_after(timeout):
        delay = 0.01
        while True:
            try:
                stream = await anyio.connect_tcp("127.0.0.1", port)
            except OSError:
                await anyio.sleep(delay)
                delay = min(delay * 2, 0.2)
                continue
            await stream.aclose()
            return


async def read_lines(
    stream: anyio.abc.ByteReceiveStream, count: int, timeout: float = 10
) -> list[str]:
    data = b""
    with anyio.fail_after(timeout):
        while data.count(b"\n") < count:
            data += await stream.receive()
    return [line.rstrip("\r") for line in data.decode().split("\n")[:count]]


@asynccontextmanager
async def running(command: list[str]) -> AsyncIterator[anyio.abc.Process]:
    """A program with piped stdin/stdout; terminated (then killed) on exit."""
    proc = await anyio.open_process(command, stderr=subprocess.PIPE)
    try:
        yield proc
    finally:
        with anyio.CancelScope(shield=True):
            if proc.returncode is None:
                proc.terminate()
                with anyio.move_on_after(5):
                    await proc.wait()
                if proc.returncode is None:
                    proc.kill()
            await proc.aclose()


# -- HAProxy -----------------------------------------------------------------


@pytest.mark.skipif(HAPROXY is None, reason="haproxy is not installed")
@pytest.mark.parametrize("send_proxy", ["send-proxy", "send-proxy-v2"])
async def test_haproxy_sends_the_real_client_address(send_proxy: str, tmp_path: Path) -> None:
    assert HAPROXY is not None
    app = whoami_app(proxy_protocol=True)
    async with app.start() as server:
        front = free_port()
        config = tmp_path / "haproxy.cfg"
        config.write_text(
            "defaults\n"
            "    mode tcp\n"
            "    timeout connect 5s\n"
            "    timeout client 30s\n"
            "    timeout server 30s\n"
            "frontend front\n"
            f"    bind 127.0.0.1:{front}\n"
            "    default_backend app\n"
            "backend app\n"
            f"    server tcpkit 127.0.0.1:{server.port} {send_proxy}\n"
        )
        async with running([HAPROXY, "-f", str(config), "-db"]) as proc:
            try:
                await wait_for_port(front)
            except TimeoutError:
                assert proc.stderr is not None
                pytest.fail(f"haproxy did not start: {await proc.stderr.receive()!r}")
            for _ in range(3):
                async with LineClient(await anyio.connect_tcp("127.0.0.1", front)) as client:
                    ip, port = client.stream.extra(SocketAttribute.local_address)[:2]
                    await client.send("through haproxy")
                    assert await client.recv_line() == f"{ip} {port} through haproxy"


# -- openssl s_client ------------------------------------------------------------


@pytest.mark.skipif(OPENSSL is None, reason="openssl is not installed")
async def test_openssl_s_client_tls13(certs: Certs) -> None:
    assert OPENSSL is not None
    app: App[str, str] = App()

    @app.on_input
    async def echo(conn: Connection[str, str], line: str) -> None:
        await conn.send(f"{conn.stream.extra(TLSAttribute.tls_version)} {line}")

    async with app.start(ssl=certs.server) as server:
        command = [
            OPENSSL,
            "s_client",
            "-connect",
            f"127.0.0.1:{server.port}",
            "-tls1_3",
            "-quiet",
            "-CAfile",
            str(certs.cafile),
            "-servername",
            "localhost",
            "-verify_return_error",
        ]
        async with running(command) as proc:
            assert proc.stdin is not None and proc.stdout is not None
            await proc.stdin.send(b"hello\nworld\n")
            assert await read_lines(proc.stdout, 2) == ["TLSv1.3 hello", "TLSv1.3 world"]
        assert server.stats.rejected == 0


# -- socat over a Unix socket ------------------------------------------------------


@pytest.mark.skipif(SOCAT is None, reason="socat is not installed")
async def test_socat_over_a_unix_socket(sock_dir: Path) -> None:
    assert SOCAT is not None
    path = sock_dir / "socat.sock"
    async with (
        whoami_app().start(uds=str(path)),
        running([SOCAT, "-", f"UNIX-CONNECT:{path}"]) as proc,
    ):
        assert proc.stdin is not None and proc.stdout is not None
        await proc.stdin.send(b"one\ntwo\n")
        assert await read_lines(proc.stdout, 2) == ["None None one", "None None two"]
        await proc.stdin.aclose()  # socat half-closes; the server flushes and closes
        with anyio.fail_after(10):
            assert await proc.wait() == 0
