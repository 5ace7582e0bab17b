"""examples/resp.py against real Redis clients: redis-cli, redis-benchmark, redis-py.

Each test is skipped, with the reason, when its client is not installed
(``apt-get install redis-tools`` provides the two programs; the ``redis``
package is in the dev extra).
"""

from __future__ import annotations

import asyncio
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import anyio
import pytest
from helpers import ROOT

from examples.resp import make_app

REDIS_CLI = shutil.which("redis-cli")
REDIS_BENCHMARK = shutil.which("redis-benchmark")
needs_redis_cli = pytest.mark.skipif(REDIS_CLI is None, reason="redis-cli is not installed")
needs_redis_benchmark = pytest.mark.skipif(
    REDIS_BENCHMARK is None, reason="redis-benchmark is not installed"
)

try:
    import redis
    import redis.asyncio
except ImportError:  # pragma: no cover - redis is in the dev extra
    redis = None  # type: ignore[assignment]
needs_redis_py = pytest.mark.skipif(redis is None, reason="the redis package is not installed")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, proc: subprocess.Popen[str], timeout: float = 20) -> None:
    """Poll until something accepts connections on ``port`` (bounded by ``timeout``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"server exited with {proc.returncode}: {out}{err}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)  # polling a port with a deadline, not waiting blindly
    proc.kill()
    raise AssertionError(f"nothing listened on port {port} within {timeout} s")


class RespServer:
    """``python -m tcpkit run examples/resp.py:app`` in a subprocess."""

    def __init__(self, backend: str) -> None:
        self.port = free_port()
        args = ["examples/resp.py:app", "--port", str(self.port), "--log-level", "warning"]
        if backend == "uvloop":
            args += ["--uvloop"]
        else:
            args += ["--backend", backend]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tcpkit", "run", *args],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        wait_for_port(self.port, self.proc)

    def stop(self) -> str:
        """SIGINT, wait for a clean exit, return stderr."""
        self.proc.send_signal(2)
        try:
            _, err = self.proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
            raise AssertionError(f"server did not stop on SIGINT: {err}") from None
        assert self.proc.returncode == 0, err
        return err


@pytest.fixture(params=["asyncio", "trio"])
def resp_server(request: pytest.FixtureRequest) -> Iterator[RespServer]:
    server = RespServer(request.param)
    try:
        yield server
    finally:
        err = server.stop()
        assert "Traceback" not in err, err


def redis_cli(port: int, *args: str) -> str:
    assert REDIS_CLI is not None
    done = subprocess.run(
        [REDIS_CLI, "-h", "127.0.0.1", "-p", str(port), *args],
        capture_output=True,
        text=True,
        timeout=20,
        check=True,
    )
    return done.stdout.strip()


# -- redis-cli -------------------------------------------------------------------


@needs_redis_cli
@pytest.mark.anyio
async def test_redis_cli_ping_set_get() -> None:
    assert REDIS_CLI is not None
    async with make_app().start() as server:

        async def cli(*args: str) -> str:
            done = await anyio.run_process(
                [REDIS_CLI, "-h", "127.0.0.1", "-p", str(server.port), *args]
            )
            return done.stdout.decode().strip()

        with anyio.fail_after(30):
            assert await cli("PING") == "PONG"
            assert await cli("SET", "greeting", "hello world", "EX", "60") == "OK"
            assert await cli("GET", "greeting") == "hello world"
            assert await cli("GET", "missing") == ""
            assert await cli("INCR", "visits") == "1"
            assert await cli("DEL", "greeting") == "1"
            assert await cli("EXISTS", "greeting") == "0"


@needs_redis_cli
@pytest.mark.anyio
async def test_redis_cli_resp3_and_piped_commands() -> None:
    assert REDIS_CLI is not None
    async with make_app().start() as server:
        base = [REDIS_CLI, "-h", "127.0.0.1", "-p", str(server.port)]
        with anyio.fail_after(30):
            done = await anyio.run_process([*base, "-3", "HELLO", "3"])
            assert "proto 3" in done.stdout.decode().splitlines()
            piped = b"SET a 1\nINCR a\nGET a\nPING\n"
            done = await anyio.run_process(base, input=piped)
            assert done.stdout.decode().split() == ["OK", "2", "2", "PONG"]


# -- redis-benchmark ---------------------------------------------------------------


@pytest.mark.slow
@needs_redis_benchmark
def test_redis_benchmark_completes_without_errors(resp_server: RespServer) -> None:
    assert REDIS_BENCHMARK is not None
    load = ["-t", "ping,set,get", "-n", "20000", "-c", "20", "-P", "16", "-q"]
    done = subprocess.run(
        [REDIS_BENCHMARK, "-h", "127.0.0.1", "-p", str(resp_server.port), *load],
        capture_output=True,
        text=True,
        timeout=60,
    )
    output = done.stdout.replace("\r", "\n") + done.stderr
    assert done.returncode == 0, output
    assert "WARNING" not in output and "ERROR" not in output, output
    results = dict(re.findall(r"^(\w+): ([\d.]+) requests per second", output, re.MULTILINE))
    assert set(results) == {"PING_INLINE", "PING_MBULK", "SET", "GET"}, output
    assert all(float(rate) > 0 for rate in results.values())
    # Every request was answered: GET found what SET stored under redis-benchmark's key.
    assert len(redis_cli(resp_server.port, "GET", "key:__rand_int__")) == 3  # -d 3, the default


# -- redis-py ------------------------------------------------------------------------


@pytest.mark.slow
@needs_redis_py
@pytest.mark.parametrize("protocol", [None, 2, 3], ids=["default", "resp2", "resp3"])
def test_redis_py_client(resp_server: RespServer, protocol: int | None) -> None:
    options: dict[str, Any] = {} if protocol is None else {"protocol": protocol}
    client = redis.Redis(host="127.0.0.1", port=resp_server.port, **options)
    try:
        assert client.ping() is True
        assert client.set("k", "v", ex=60) is True
        assert client.get("k") == b"v"
        assert client.get("missing") is None
        assert client.set("k", "w", nx=True) is None
        assert client.incr("n") == 1
        assert client.incr("n", 41) == 42
        assert client.decr("n") == 41
        assert client.exists("k", "n", "missing") == 2
        assert client.delete("k", "n") == 2
        assert client.echo("hi") == b"hi"
        assert client.config_get("appendonly") == {"appendonly": "no"}
        with pytest.raises(redis.ResponseError, match="unknown command"):
            client.execute_command("NOSUCH")
    finally:
        client.close()


@pytest.mark.slow
@needs_redis_py
def test_redis_py_pipelines_and_options(resp_server: RespServer) -> None:
    client = redis.Redis(host="127.0.0.1", port=resp_server.port, db=5, client_name="tester")
    other = redis.Redis(host="127.0.0.1", port=resp_server.port)
    try:
        assert client.client_getname() == "tester"
        with client.pipeline() as pipe:  # a MULTI/EXEC transaction
            for i in range(200):
                pipe.set(f"key{i}", i)
            pipe.incr("counter")
            results = pipe.execute()
        assert results == [True] * 200 + [1]
        with client.pipeline(transaction=False) as pipe:
            for i in range(200):
                pipe.get(f"key{i}")
            assert pipe.execute() == [str(i).encode() for i in range(200)]
        assert other.get("key0") is None  # db 0, not db 5
    finally:
        client.close()
        other.close()


@needs_redis_py
@pytest.mark.anyio
async def test_redis_asyncio_client(anyio_backend: Any) -> None:
    if anyio_backend[0] != "asyncio":
        pytest.skip("redis.asyncio needs an asyncio event loop")
    async with make_app().start() as server:
        client = redis.asyncio.Redis(host="127.0.0.1", port=server.port or 0)
        try:
            with anyio.fail_after(20):
                assert await client.ping() is True
                assert await client.set("k", "1") is True
                assert await client.incr("k") == 2
                async with client.pipeline() as pipe:
                    pipe.set("x", 1).incr("x").get("x")
                    assert await pipe.execute() == [True, 2, b"2"]
                replies = await asyncio.gather(*(client.incr("shared") for _ in range(50)))
                assert sorted(replies) == list(range(1, 51))
        finally:
            await client.aclose()
