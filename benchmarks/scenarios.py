"""The scenarios of ``python -m benchmarks``: the load, and what its table shows.

A scenario names what the servers speak (``protocol``: every server that
speaks it runs the scenario), the client that drives them (the load generator,
or ``redis-benchmark`` through :mod:`benchmarks.resp_bench`) with its
arguments, the columns of its table, and the value its figure and its ratios
use (``metric``: a rate, higher is better, or a cost, lower is better).
"""

from __future__ import annotations

from dataclasses import dataclass

PROTOCOLS = ("line", "tls", "bulk", "resp")
"""line: 64-byte lines echoed; tls: the same over TLS; bulk: 64 KiB messages
echoed (tcpkit with a 4-byte length prefix, the others byte for byte); resp:
the Redis protocol (tcpkit runs ``examples/resp.py``)."""


@dataclass(frozen=True)
class Column:
    """A table column: ``key`` of the run's JSON, formatted by ``fmt``."""

    head: str
    key: str
    fmt: str  # "rate" (12.3k), "pct" (12.3 %), or a format spec (".1f")


@dataclass(frozen=True)
class Scenario:
    key: str
    title: str
    args: tuple[str, ...]  # the client's arguments
    load: str  # in words; {idle_conns} is filled in
    columns: tuple[Column, ...]
    what: str  # what the figure shows, in words
    protocol: str = "line"
    client: str = "loadgen"  # or "resp": benchmarks.resp_bench (redis-benchmark)
    metric: str = "rate"  # the figure's value and the ratios'
    lower_is_better: bool = False
    group: str = "line"  # the ratio table it belongs to (GROUPS)
    python_loadgen: bool = False  # benchmarks/loadgen.py can drive it too


def _rate(unit: str) -> Column:
    return Column(unit, "rate", "rate")


_LATENCY = (Column("p50 µs", "p50_us", ".0f"), Column("p99 µs", "p99_us", ".0f"))
_CPU_MSG = Column("server CPU µs/msg", "cpu_us", ".1f")
_CPU_CONN = Column("server CPU µs/conn", "cpu_us", ".1f")
_MSGS = "messages per second (higher is better)"
_CONNS = "connections per second (higher is better)"
_SPARSE = (
    _rate("msg/s"),
    *_LATENCY,
    Column("server CPU %", "cpu_util", "pct"),
    _CPU_MSG,
)

GROUPS = {
    "line": "Line echo",
    "cost": "Costs: server CPU at sparse load and per TLS handshake, memory per idle connection",
    "more": "TLS, bulk transfer, Redis protocol",
}
"""The ratio tables, in order: one per group of scenarios."""

SCENARIOS: dict[str, Scenario] = {
    s.key: s
    for s in [
        Scenario(
            "pp1",
            "1 conn ping-pong",
            ("pingpong", "--conns", "1"),
            "One connection, one line in flight",
            (_rate("msg/s"), *_LATENCY, _CPU_MSG),
            _MSGS,
            python_loadgen=True,
        ),
        Scenario(
            "pipe",
            "50 conns x 16 in flight",
            ("pipelined", "--conns", "50", "--depth", "16"),
            "50 connections, each keeping 16 lines in flight",
            (_rate("msg/s"), _CPU_MSG),
            _MSGS,
            python_loadgen=True,
        ),
        Scenario(
            "pp100",
            "100 conns ping-pong",
            ("pingpong", "--conns", "100"),
            "100 connections, one line in flight each",
            (_rate("msg/s"), *_LATENCY, _CPU_MSG),
            _MSGS,
            python_loadgen=True,
        ),
        Scenario(
            "conn",
            "connects/s",
            ("connects", "--conns", "8"),
            "8 clients in parallel: connect, send a line, read the reply, close",
            (_rate("conn/s"), _CPU_CONN),
            _CONNS,
            python_loadgen=True,
        ),
        Scenario(
            "idle",
            "idle RSS",
            ("idle",),
            "{idle_conns} connections that each exchanged one line, then stay idle",
            (Column("KiB per connection ({idle_conns} conns)", "kib_per_conn", ".1f"),),
            "server memory per idle connection (KiB; lower is better)",
            metric="kib_per_conn",
            lower_is_better=True,
            group="cost",
            python_loadgen=True,
        ),
        Scenario(
            "sparse50",
            "sparse: 50 conns x 1 line / 20 ms",
            ("sparse", "--conns", "50", "--interval-ms", "20"),
            "50 connections, each sending one line every 20 ms (staggered: 2,500 lines/s)",
            _SPARSE,
            "server CPU per message (µs; lower is better)",
            metric="cpu_us",
            lower_is_better=True,
            group="cost",
        ),
        Scenario(
            "sparse5",
            "sparse: 5 conns x 1 line / 5 ms",
            ("sparse", "--conns", "5", "--interval-ms", "5"),
            "5 connections, each sending one line every 5 ms (staggered: 1,000 lines/s)",
            _SPARSE,
            "server CPU per message (µs; lower is better)",
            metric="cpu_us",
            lower_is_better=True,
            group="cost",
        ),
        Scenario(
            "tls1",
            "TLS: 1 conn ping-pong",
            ("pingpong", "--conns", "1", "--tls"),
            "One TLS connection, one line in flight",
            (_rate("msg/s"), *_LATENCY, _CPU_MSG),
            _MSGS,
            protocol="tls",
            group="more",
        ),
        Scenario(
            "tlspipe",
            "TLS: 50 conns x 16 in flight",
            ("pipelined", "--conns", "50", "--depth", "16", "--tls"),
            "50 TLS connections, each keeping 16 lines in flight",
            (_rate("msg/s"), _CPU_MSG),
            _MSGS,
            protocol="tls",
            group="more",
        ),
        Scenario(
            "tlsconn",
            "TLS: handshakes",
            ("connects", "--conns", "8", "--tls"),
            "8 clients in parallel: connect, full TLS 1.3 handshake, a line and its reply, close",
            (_rate("conn/s"), _CPU_CONN),
            # The client's half of a handshake (OpenSSL 3) costs about as much as a
            # fast server's: the rate is the client's as much as the server's.
            "server CPU per connection, handshake included (µs; lower is better)",
            protocol="tls",
            metric="cpu_us",
            lower_is_better=True,
            group="cost",
        ),
        Scenario(
            "bulk",
            "bulk: 64 KiB messages",
            ("bulk", "--conns", "1", "--depth", "4", "--size", "65536"),
            "One connection keeping four 64 KiB messages in flight",
            (_rate("MB/s"), Column("msg/s", "msg_rate", "rate"), _CPU_MSG),
            "payload echoed, MB/s (10^6 bytes; higher is better)",
            protocol="bulk",
            group="more",
        ),
        Scenario(
            "resp",
            "RESP: redis-benchmark",
            ("--tests", "set,get", "--clients", "50"),
            "redis-benchmark -t set,get -c 50: 50 clients, one request in flight each",
            (_rate("req/s"), *_LATENCY, Column("server CPU µs/req", "cpu_us", ".1f")),
            "requests per second (higher is better)",
            protocol="resp",
            client="resp",
            group="more",
        ),
        Scenario(
            "resppipe",
            "RESP: redis-benchmark -P 16",
            ("--tests", "set,get", "--clients", "50", "--pipeline", "16"),
            "redis-benchmark -t set,get -c 50 -P 16: 50 clients, 16 requests in flight each",
            (_rate("req/s"), *_LATENCY, Column("server CPU µs/req", "cpu_us", ".1f")),
            "requests per second (higher is better)",
            protocol="resp",
            client="resp",
            group="more",
        ),
    ]
}
QUICK_SCENARIOS = ("pp1", "pipe", "conn", "idle")
