"""Busy polling (``App(busy_poll=...)``) over real sockets, on every backend.

After a read the event loop keeps polling for input for an adaptive window
instead of sleeping; a read that arrives meanwhile is counted in
``server.stats.polled_reads``. These tests check that the replies are the
same with polling on or off, that request-response traffic is picked up
while polling, that sparse traffic closes the window, and that the loop goes
idle (stops burning CPU) once input stops.
"""

from __future__ import annotations

import time

import anyio
import pytest
from helpers import LineClient

from tcpkit import App, Connection
from tcpkit import _busy_poll as busy_poll_module
from tcpkit._busy_poll import busy_poller
from tcpkit.stats import ServerStats


def echo_app(busy_poll: float | None) -> App[str, str]:
    app: App[str, str] = App(busy_poll=busy_poll)

    @app.on_input
    def echo(conn: Connection[str, str], line: str) -> None:
        conn.put(f"{line}!")

    return app


@pytest.mark.anyio
@pytest.mark.parametrize("busy_poll", [None, 0.0, 0.05])
async def test_replies_are_the_same_with_polling_on_or_off(busy_poll: float | None) -> None:
    app = echo_app(busy_poll)
    async with app.start() as server, await LineClient.connect(server.port or 0) as client:
        for i in range(200):
            await client.send(f"m{i}")
            assert await client.recv_line() == f"m{i}!"
        await client.send(*(f"p{i}" for i in range(50)))  # pipelined: one or a few reads
        assert await client.recv_lines(50) == [f"p{i}!" for i in range(50)]
        assert server.stats.messages_in == 250
        if busy_poll:
            # Request-response traffic: the window opens and the next requests
            # are picked up while the loop polls.
            assert server.stats.polled_reads >= 100, server.stats
        else:
            assert server.stats.polled_reads == 0


@pytest.mark.anyio
async def test_the_loop_goes_idle_once_input_stops() -> None:
    app = echo_app(0.02)
    async with app.start() as server, await LineClient.connect(server.port or 0) as client:
        # Requests 10 ms apart: the window grows to catch them (up to 20 ms),
        # and the loop polls through the gaps instead of sleeping. (Counted, not
        # timed: on a loaded host the polling loop gets less CPU than it asks for.)
        for i in range(40):
            await client.send(f"m{i}")
            assert await client.recv_line() == f"m{i}!"
            await anyio.sleep(0.01)
        assert server.stats.polled_reads >= 10, server.stats
        # Then silence: polling stops after one window, the process sleeps.
        cpu = time.process_time()
        await anyio.sleep(0.5)
        assert time.process_time() - cpu < 0.25, "the event loop kept polling with no input"
        await client.send("again")
        assert await client.recv_line() == "again!"


@pytest.mark.anyio
async def test_the_window_adapts_to_the_gaps_between_reads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = [1000.0]
    monkeypatch.setattr(busy_poll_module, "_now", lambda: clock[0])
    stats = ServerStats()
    poller = busy_poller(100e-6, stats)
    assert poller is not None and poller.window == 0.0  # closed until traffic asks

    def read_after(gap: float) -> float:
        clock[0] += gap
        poller.kick()
        return poller.window

    read_after(10.0)  # the first read: nothing to learn from
    assert poller.window == 0.0
    # Reads 50 us apart: the window doubles from 10 us until it covers the gap.
    windows = [read_after(50e-6) for _ in range(5)]
    assert windows == pytest.approx([10e-6, 20e-6, 40e-6, 80e-6, 80e-6])
    assert stats.polled_reads == 1  # the last read came within the window
    # Reads 90 us apart: it grows again, but never past the limit.
    assert read_after(90e-6) == pytest.approx(100e-6)
    assert read_after(90e-6) == pytest.approx(100e-6)
    assert stats.polled_reads == 2
    # Sparse reads (gaps longer than the limit): it halves down to closed.
    windows = [read_after(1.0) for _ in range(5)]
    assert windows == pytest.approx([50e-6, 25e-6, 12.5e-6, 6.25e-6, 0.0])
    assert read_after(1.0) == 0.0
    assert stats.polled_reads == 2


@pytest.mark.parametrize("limit", [None, 0, 0.0])
def test_no_poller_when_turned_off(limit: float | None) -> None:
    assert busy_poller(limit, ServerStats()) is None


@pytest.mark.parametrize("bad", [-1e-6, 1.5])
def test_busy_poll_is_validated(bad: float) -> None:
    with pytest.raises(ValueError, match="busy_poll"):
        App(busy_poll=bad)
