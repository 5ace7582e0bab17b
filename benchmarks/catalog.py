"""The servers under test: what each is, what it speaks, and what tcpkit is compared with.

Most are Python servers in :mod:`benchmarks.servers` (one process each,
``python -m benchmarks.servers NAME [--tls CERT KEY | --bulk | --resp]``);
``c-epoll`` is ``benchmarks/epoll_echo.c`` (:mod:`benchmarks.native` builds
it), ``poe`` a Perl script, and ``redis-server`` the real Redis.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
PYTHON = sys.executable


@dataclass(frozen=True)
class ServerSpec:
    name: str
    backend: str  # asyncio, uvloop, trio, perl, c
    description: str
    command: tuple[str, ...] = ()  # "{port}" in it: the runner picks the port (external)
    protocols: frozenset[str] = frozenset({"line"})
    refs: tuple[str, ...] = ()  # servers a ratio row compares it with (tcpkit rows only)
    skip: tuple[str, ...] = ()  # scenario keys it does not run
    native: str | None = None  # a C program of benchmarks/ (benchmarks.native builds it)
    src: str | None = None  # import tcpkit from this directory instead (--baseline)
    tcpkit: bool = False  # a tcpkit server: it gets ratio rows, and --baseline copies

    @property
    def external(self) -> bool:
        """Started on a port the runner picks, ready once it accepts a connection."""
        return any("{port}" in part for part in self.command)

    def runs(self, scenario_key: str, protocol: str) -> bool:
        return protocol in self.protocols and scenario_key not in self.skip


def _py(name: str) -> tuple[str, ...]:
    return (PYTHON, "-m", "benchmarks.servers", name)


_NATIVE = {"asyncio": "asyncio-protocol", "uvloop": "uvloop-protocol", "trio": "trio-serve-tcp"}
_ALL = frozenset({"line", "tls", "bulk"})


def _tcpkit(backend: str, variant: str = "") -> ServerSpec:
    name = f"tcpkit-{variant}-{backend}" if variant else f"tcpkit-{backend}"
    native = _NATIVE[backend]
    what, protocols, refs, skip = {
        "": (
            "def handler, conn.put(line)",
            _ALL | {"resp"},
            (f"anyio-{backend}", native, "poe", "redis-server"),
            (),
        ),
        "send": (
            "async def handler, await conn.send(line)",
            _ALL,
            (f"tcpkit-{backend}", f"anyio-{backend}", native),
            ("idle",),
        ),
        # Busy polling matters where the loop would sleep between requests.
        "poll": (
            "as tcpkit-*, busy polling on: App(busy_poll=100e-6)",
            frozenset({"line"}),
            (f"tcpkit-{backend}", f"anyio-{backend}", native),
            ("pipe", "conn", "idle"),
        ),
    }[variant]
    modes = "; bulk: LengthPrefixed messages" if "bulk" in protocols else ""
    modes += "; RESP: examples/resp.py" if "resp" in protocols else ""
    return ServerSpec(
        name,
        backend,
        f"tcpkit App() echo: {what}{modes}",
        _py(name),
        protocols=protocols,
        refs=refs,
        skip=skip,
        tcpkit=True,
    )


SERVERS: dict[str, ServerSpec] = {
    s.name: s
    for s in [
        _tcpkit("asyncio"),
        _tcpkit("uvloop"),
        _tcpkit("trio"),
        _tcpkit("asyncio", "send"),
        _tcpkit("uvloop", "send"),
        _tcpkit("trio", "send"),
        _tcpkit("asyncio", "poll"),
        _tcpkit("uvloop", "poll"),
        _tcpkit("trio", "poll"),
        ServerSpec(
            "anyio-asyncio",
            "asyncio",
            "anyio create_tcp_listener + BufferedByteReceiveStream.receive_until, send per line",
            _py("anyio-asyncio"),
        ),
        ServerSpec(
            "anyio-uvloop", "uvloop", "the same anyio server on uvloop", _py("anyio-uvloop")
        ),
        ServerSpec("anyio-trio", "trio", "the same anyio server on trio", _py("anyio-trio")),
        ServerSpec(
            "asyncio-streams",
            "asyncio",
            "asyncio.start_server: readline, write, drain",
            _py("asyncio-streams"),
        ),
        ServerSpec(
            "asyncio-protocol",
            "asyncio",
            "asyncio.Protocol: data_received splits lines, one write per line "
            "(TLS: create_server(ssl=...); bulk: writes what it reads)",
            _py("asyncio-protocol"),
            protocols=_ALL,
        ),
        ServerSpec(
            "asyncio-protocol-batch",
            "asyncio",
            "asyncio.Protocol, one write per read (a ceiling, not idiomatic)",
            _py("asyncio-protocol-batch"),
        ),
        ServerSpec(
            "uvloop-protocol",
            "uvloop",
            "the asyncio.Protocol server on uvloop",
            _py("uvloop-protocol"),
            protocols=_ALL,
        ),
        ServerSpec(
            "trio-serve-tcp",
            "trio",
            "trio.serve_tcp: receive_some, split lines, send_all per line "
            "(TLS: trio.serve_ssl_over_tcp; bulk: sends what it receives)",
            _py("trio-serve-tcp"),
            protocols=_ALL,
        ),
        ServerSpec(
            "poe",
            "perl",
            "POE::Component::Server::TCP, the synopsis echo (ClientInput puts the line)",
            ("perl", str(HERE / "poe_echo.pl")),
        ),
        ServerSpec(
            "c-epoll",
            "c",
            "C, one thread, level-triggered epoll: one write of every complete line per read "
            "(benchmarks/epoll_echo.c; TLS with OpenSSL; bulk: writes what it reads)",
            protocols=_ALL,
            native="epoll_echo",
        ),
        ServerSpec(
            "redis-server",
            "c",
            "the real Redis (Debian's redis-server), no persistence",
            (
                "redis-server",
                "--port",
                "{port}",
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ),
            protocols=frozenset({"resp"}),
        ),
    ]
}


def poe_available() -> str | None:
    """None if POE can run, else why not."""
    if shutil.which("perl") is None:
        return "perl is not installed"
    probe = subprocess.run(
        ["perl", "-MPOE", "-e", "1"], capture_output=True, timeout=30, check=False
    )
    if probe.returncode:
        return "POE is not installed (apt-get install libpoe-perl)"
    return None


def redis_available() -> str | None:
    """None if redis-server and redis-benchmark are installed, else why not."""
    missing = [p for p in ("redis-server", "redis-benchmark") if shutil.which(p) is None]
    if missing:
        return f"{' and '.join(missing)} not installed (apt-get install redis-server redis-tools)"
    return None
