"""tcpkit's pytest plugin: its fixtures and tcpkit_backends, run in a pytester session."""

from __future__ import annotations

import textwrap

import pytest

from tcpkit.pytest_plugin import tcpkit_backends

pytest_plugins = ["pytester"]

APP = """
import pytest
from tcpkit import App

app = App()

@app.on_input
async def echo(conn, line):
    if line == "boom":
        raise ValueError("boom")
    await conn.send(line)
"""

BACKENDS = """
from tcpkit.pytest_plugin import tcpkit_backends

@pytest.fixture(params=tcpkit_backends(), scope="session")
def anyio_backend(request):
    return request.param
"""


def run(pytester: pytest.Pytester, source: str, *args: str) -> pytest.RunResult:
    pytester.makepyfile(test_app=textwrap.dedent(source))
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", "-v", *args)


def test_both_fixtures_on_both_backends(pytester: pytest.Pytester) -> None:
    result = run(
        pytester,
        APP
        + BACKENDS
        + """
@pytest.mark.anyio
async def test_in_memory(tcpkit_client):
    async with tcpkit_client(app) as client:
        await client.send("hi")
        assert await client.receive() == "hi"

@pytest.mark.anyio
async def test_on_loopback(tcpkit_server):
    async with tcpkit_server(app) as live, live.connect() as channel:
        assert live.host == "127.0.0.1" and live.port > 0
        await channel.send("over tcp")
        assert await channel.receive() == "over tcp"

@pytest.mark.anyio
async def test_app_errors_fail_the_test(tcpkit_client):
    async with tcpkit_client(app) as client:
        await client.send("boom")
        await client.receive()
""",
    )
    result.assert_outcomes(passed=4, failed=2)
    for test in ("test_in_memory", "test_on_loopback"):
        for backend in ("asyncio", "trio"):
            result.stdout.fnmatch_lines([f"*{test}?{backend}? PASSED*"])
    result.stdout.fnmatch_lines(["*ValueError: boom*"])


def test_the_plugin_defines_no_backend_of_its_own(pytester: pytest.Pytester) -> None:
    import tcpkit.pytest_plugin

    assert not hasattr(tcpkit.pytest_plugin, "anyio_backend")
    result = run(
        pytester,
        APP
        + """
import anyio.pytest_plugin

def test_anyio_defines_the_default(request):
    fixture = request._fixturemanager.getfixturedefs("anyio_backend", request.node)[-1]
    assert fixture.func.__module__ == "anyio.pytest_plugin"

@pytest.mark.anyio
async def test_default(tcpkit_client):
    async with tcpkit_client(app) as client:
        await client.send("x")
        assert await client.receive() == "x"
""",
    )
    outcomes = result.parseoutcomes()
    assert outcomes.get("failed", 0) == 0
    assert outcomes["passed"] >= 2


def test_backends_per_module_with_parametrize(pytester: pytest.Pytester) -> None:
    result = run(
        pytester,
        APP
        + """
from tcpkit.pytest_plugin import tcpkit_backends

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.parametrize("anyio_backend", tcpkit_backends("asyncio", "uvloop", "trio")),
]

async def test_each(tcpkit_client, anyio_backend_name, anyio_backend_options):
    async with tcpkit_client(app) as client:
        await client.send(anyio_backend_name)
        assert await client.receive() == anyio_backend_name
""",
    )
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(["*test_each?uvloop? PASSED*"])


def test_a_project_anyio_backend_fixture_wins(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(
        """
import pytest

@pytest.fixture(params=["trio"], scope="session")
def anyio_backend(request):
    return request.param
"""
    )
    result = run(
        pytester,
        APP
        + """
@pytest.mark.anyio
async def test_trio_only(tcpkit_client, anyio_backend_name):
    assert anyio_backend_name == "trio"
    async with tcpkit_client(app) as client:
        await client.send("t")
        assert await client.receive() == "t"
""",
    )
    result.assert_outcomes(passed=1)


def test_fixtures_are_documented(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess("--fixtures", "-p", "no:cacheprovider")
    result.stdout.fnmatch_lines(
        [
            "tcpkit_client -- *pytest_plugin.py*",
            "*async with tcpkit_client(app) as client*",
            "tcpkit_server -- *pytest_plugin.py*",
        ]
    )


def test_tcpkit_backends_values() -> None:
    params = tcpkit_backends()
    assert [p.id for p in params] == ["asyncio", "trio"]
    assert [p.values for p in params] == [(("asyncio", {}),), (("trio", {}),)]
    uvloop = tcpkit_backends("uvloop")[0]
    assert uvloop.values == (("asyncio", {"use_uvloop": True}),)
    with pytest.raises(ValueError, match="unknown backend 'curio'"):
        tcpkit_backends("curio")
    with pytest.raises(ValueError, match="twice"):
        tcpkit_backends("trio", "trio")
