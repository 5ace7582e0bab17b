"""Prometheus metrics over HTTP: ``tcpkit run --metrics HOST:PORT``.

``GET /metrics`` answers in the Prometheus text format (rendered by
``prometheus-client``: ``pip install 'tcpkit[metrics]'``). The numbers are
read at scrape time from ``server.stats`` and from the process's
:class:`~tcpkit.observe.Recorder`; under ``--workers`` the supervisor asks
every worker (over its internal control socket) and adds the answers up, and
keeps the last counts of workers that have exited, so counters never go
back. ``GET /healthz`` (also ``/readyz``) answers ``200 ok`` while serving
and ``503 draining`` once a drain or a reload has begun: a readiness probe.
``GET /livez`` answers ``200 alive`` as long as the process runs: a
liveness probe that a drain does not fail.

=====================================================  ==========  ===============
metric                                                 type        labels
=====================================================  ==========  ===============
``tcpkit_connections``                                 gauge       (open now)
``tcpkit_connections_accepted_total``                  counter
``tcpkit_connections_rejected_total``                  counter     ``reason``
``tcpkit_connections_closed_total``                    counter     ``reason``
``tcpkit_received_bytes_total``                        counter
``tcpkit_sent_bytes_total``                            counter
``tcpkit_received_messages_total``                     counter
``tcpkit_sent_messages_total``                         counter
``tcpkit_errors_total``                                counter     ``kind``
``tcpkit_handler_seconds``                             histogram   (``on_input``)
``tcpkit_workers``                                     gauge       (``--workers``)
=====================================================  ==========  ===============

The HTTP endpoint is itself a small tcpkit app.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any, cast

from .app import App
from .connection import Connection

if TYPE_CHECKING:  # prometheus-client is optional: imported where used
    from prometheus_client.core import CounterMetricFamily, Metric

__all__ = ["CONTENT_TYPE", "metrics_app", "render", "require_prometheus"]

logger = logging.getLogger("tcpkit.metrics")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

Snapshot = dict[str, Any]


def require_prometheus() -> None:
    """Check that prometheus-client can be imported.

    Raises:
        ImportError: with the ``pip install 'tcpkit[metrics]'`` line.
    """
    try:
        import prometheus_client  # noqa: F401  # pyright: ignore[reportUnusedImport]
    except ImportError as exc:
        raise ImportError(
            f"--metrics needs prometheus-client, which cannot be imported ({exc}): "
            "pip install 'tcpkit[metrics]'"
        ) from None


def _int(mapping: Any, key: str) -> int:
    if not isinstance(mapping, dict):
        return 0
    value: Any = cast("dict[str, Any]", mapping).get(key, 0)
    return value if isinstance(value, int) else 0


def render(snapshot: Snapshot) -> bytes:
    """The Prometheus text exposition of one (possibly merged) snapshot."""
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(snapshot))  # pyright: ignore[reportArgumentType]
    text: bytes = generate_latest(registry)
    return text


class _Collector:
    """What prometheus-client's registry asks for: the metric families of a snapshot."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        """Every family of the module's table, in its order."""
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        snapshot = self.snapshot
        stats: Any = snapshot.get("stats", {})
        yield GaugeMetricFamily(
            "tcpkit_connections", "Open connections.", value=_int(stats, "current")
        )
        yield CounterMetricFamily(
            "tcpkit_connections_accepted", "Connections accepted.", value=_int(stats, "total")
        )
        yield _rejected(snapshot.get("rejected", {}), _int(stats, "rejected"))
        yield _by_label(
            "tcpkit_connections_closed",
            "Connections ended, by reason.",
            "reason",
            dict(snapshot.get("closed", {})),
        )
        for name, key, text in _TRAFFIC:
            yield CounterMetricFamily(name, text, value=_int(stats, key))
        yield _by_label(
            "tcpkit_errors",
            "Errors reported to on_error, by exception type.",
            "kind",
            dict(snapshot.get("errors", {})),
        )
        yield from _latency(snapshot.get("latency", {}))
        workers = snapshot.get("workers")
        if isinstance(workers, int):
            yield GaugeMetricFamily("tcpkit_workers", "Worker processes serving.", value=workers)


_TRAFFIC = (  # counters read from stats: (metric, stats key, help)
    ("tcpkit_received_bytes", "bytes_in", "Bytes read from clients."),
    ("tcpkit_sent_bytes", "bytes_out", "Bytes handed to the OS for clients."),
    ("tcpkit_received_messages", "messages_in", "Messages decoded and handled."),
    ("tcpkit_sent_messages", "messages_out", "Messages sent."),
)


def _by_label(name: str, text: str, label: str, counts: Any) -> CounterMetricFamily:
    """A counter with one sample per key of ``counts``, in key order."""
    from prometheus_client.core import CounterMetricFamily

    family = CounterMetricFamily(name, text, labels=[label])
    for key, count in sorted(counts.items()):
        family.add_metric([key], count)
    return family


def _rejected(reasons: Any, total: int) -> CounterMetricFamily:
    """Refusals by reason; those not counted by reason (``total`` minus the rest) as other."""
    family = _by_label(
        "tcpkit_connections_rejected",
        "Connections refused during their setup, by reason.",
        "reason",
        reasons,
    )
    other = total - sum(reasons.values())
    if other > 0:  # refused before an observer was in place
        family.add_metric(["other"], other)
    return family


def _latency(latency: Any) -> Iterator[Metric]:
    """The ``on_input`` time histogram, if the snapshot has one with matching counts."""
    from prometheus_client.core import HistogramMetricFamily

    bounds: list[float] = list(latency.get("buckets", []))
    counts: list[int] = list(latency.get("counts", []))
    if len(counts) != len(bounds) + 1:
        return
    cumulative: list[tuple[str, float]] = []
    running = 0
    for bound, count in zip([*bounds, float("inf")], counts, strict=True):
        running += count
        cumulative.append(("+Inf" if bound == float("inf") else repr(bound), running))
    yield HistogramMetricFamily(
        "tcpkit_handler_seconds",
        "Time spent in on_input per message.",
        buckets=cumulative,
        sum_value=float(latency.get("sum", 0.0)),
    )


def metrics_app(
    snapshot: Callable[[], Awaitable[Snapshot]],
    healthy: Callable[[], bool],
    name: str = "metrics",
) -> App[Any, Any]:
    """An HTTP/1.0 responder for ``/metrics`` and ``/healthz`` (one request per connection)."""
    from .codecs import Lines, Raw

    app: App[Any, Any] = App(
        input_codec=Lines(encoding="latin-1", max_length=8192),
        output_codec=Raw(),
        name=name,
        state=dict,
        busy_poll=None,
    )

    @app.on_input
    async def request(conn: Connection[str, bytes], line: str) -> None:
        state: dict[str, str] = conn.state
        if "request" not in state:
            state["request"] = line
            return
        if line:  # a header: ignored
            return
        await conn.send(await _respond(state["request"], snapshot, healthy))
        conn.shutdown()

    return app


async def _respond(
    request_line: str,
    snapshot: Callable[[], Awaitable[Snapshot]],
    healthy: Callable[[], bool],
) -> bytes:
    parts = request_line.split()
    method, target = (parts[0], parts[1]) if len(parts) >= 2 else ("", "")
    path = target.split("?", 1)[0]
    if method not in ("GET", "HEAD"):
        return _response(405, "text/plain", b"method not allowed\n", head=False)
    head = method == "HEAD"
    if path == "/metrics":
        try:
            body = render(await snapshot())
        except Exception as exc:
            logger.exception("rendering the metrics failed", exc_info=exc)
            return _response(500, "text/plain", b"metrics failed\n", head=head)
        return _response(200, CONTENT_TYPE, body, head=head)
    if path == "/livez":  # the process runs (draining or not): a liveness probe
        return _response(200, "text/plain", b"alive\n", head=head)
    if path in ("/healthz", "/readyz"):
        if healthy():
            return _response(200, "text/plain", b"ok\n", head=head)
        return _response(503, "text/plain", b"draining\n", head=head)
    text = b"not found: try /metrics, /healthz or /livez\n"
    return _response(404, "text/plain", text, head=head)


_REASONS = {
    200: "OK",
    404: "Not Found",
    405: "Method Not Allowed",
    500: "Error",
    503: "Unavailable",
}


def _response(status: int, content_type: str, body: bytes, *, head: bool) -> bytes:
    header = (
        f"HTTP/1.0 {status} {_REASONS[status]}\r\n"
        f"Content-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode("latin-1")
    return header if head else header + body
