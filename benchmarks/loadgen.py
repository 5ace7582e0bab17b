"""The load generator: lean clients on raw non-blocking sockets and epoll.

Run by the benchmark runner in its own process (pinned to its own core)::

    python -m benchmarks.loadgen SCENARIO --port P [--duration S] [--warmup S] ...

and prints one JSON object on its last line. Clients never parse lines: they
count newlines in bulk (``bytes.count``), and a pipelined client refills
exactly as many lines as came back, with one ``send``. Every loop is bounded
in time (a deadline) and every wait has a timeout.

Scenarios:

* ``pingpong``: ``--conns`` connections, one line in flight on each; the
  time from send to the reply's newline is the latency (p50/p99).
* ``pipelined``: ``--conns`` connections with ``--depth`` lines in flight each.
* ``connects``: ``--conns`` concurrent connectors that each connect, send one
  line, read the reply and close, over and over.
* ``idle``: open ``--conns`` connections (in batches), exchange one line on
  each, then read the server's VmRSS (``--server-pid``) before and after.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import resource
import select
import socket
import sys
import time
from typing import Any

LINE = b"x" * 63 + b"\n"  # 64 bytes
_READ = 65536
_EPOLLIN = select.EPOLLIN
_EPOLLOUT = select.EPOLLOUT
_ERRMASK = select.EPOLLERR | select.EPOLLHUP
_MAX_LATENCIES = 2_000_000  # samples kept per run (bounded memory)


class LoadError(Exception):
    """The server misbehaved (closed a connection, refused, stalled)."""


def raise_nofile() -> int:
    """Raise RLIMIT_NOFILE's soft limit to the hard limit; return the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return soft


def _connect(port: int, timeout: float = 5.0) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def server_cpu_ns(pid: int) -> int:
    """CPU time the process ``pid`` has used so far, in ns (all its threads)."""
    if not pid:
        return 0
    total = 0
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 0
    return total


class Meter:
    """The measured window: message count, wall time and the server's CPU time."""

    __slots__ = ("count", "cpu0", "pid", "t0")

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.count = 0
        self.t0 = 0.0
        self.cpu0 = 0

    def start(self) -> None:
        self.cpu0 = server_cpu_ns(self.pid)
        self.t0 = time.monotonic()

    def result(self) -> dict[str, Any]:
        elapsed = time.monotonic() - self.t0
        cpu = server_cpu_ns(self.pid) - self.cpu0 if self.pid else 0
        out: dict[str, Any] = {
            "rate": self.count / elapsed,
            "count": self.count,
            "elapsed": elapsed,
        }
        if self.pid and self.count:
            out["cpu_us"] = cpu / 1000 / self.count
            out["cpu_util"] = cpu / 1e9 / elapsed
        return out


def _percentiles(samples: list[int]) -> dict[str, float | None]:
    if not samples:
        return {"p50_us": None, "p99_us": None}
    samples.sort()
    n = len(samples)
    return {
        "p50_us": samples[n // 2] / 1000.0,
        "p99_us": samples[min(n - 1, (n * 99) // 100)] / 1000.0,
    }


def pingpong(port: int, conns: int, duration: float, warmup: float, pid: int) -> dict[str, Any]:
    """One line in flight per connection; measure the rate and round-trip latency."""
    socks = [_connect(port) for _ in range(conns)]
    now = time.perf_counter_ns
    monotonic = time.monotonic
    latencies: list[int] = []
    record = latencies.append
    meter = Meter(pid)
    measure_from = monotonic() + warmup
    end = measure_from + duration
    count = 0
    measuring = False
    try:
        if conns == 1:
            # One connection: blocking calls are the cheapest client (no epoll).
            sock = socks[0]
            sock.settimeout(None)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _timeval(5.0))
            send, recv = sock.send, sock.recv
            while True:
                t0 = now()
                send(LINE)
                got = 0
                while not got:
                    try:
                        data = recv(_READ)
                    except BlockingIOError:
                        raise LoadError("no reply within 5 s") from None
                    if not data:
                        raise LoadError("the server closed the connection")
                    got = data.count(b"\n")
                if measuring:
                    count += 1
                    if len(latencies) < _MAX_LATENCIES:
                        record(now() - t0)
                    if count & 63 == 0 and monotonic() >= end:
                        break
                elif monotonic() >= measure_from:
                    measuring = True
                    meter.start()
        else:
            ep = select.epoll()
            by_fd: dict[int, socket.socket] = {}
            sent_at: dict[int, int] = {}
            try:
                for sock in socks:
                    sock.setblocking(False)
                    by_fd[sock.fileno()] = sock
                    ep.register(sock.fileno(), _EPOLLIN)
                for fd, sock in by_fd.items():
                    sent_at[fd] = now()
                    sock.send(LINE)
                while True:
                    events = ep.poll(5.0)
                    if not events:
                        raise LoadError("no reply within 5 s")
                    t = monotonic()
                    if t >= end:
                        break
                    if not measuring and t >= measure_from:
                        measuring = True
                        meter.start()
                    for fd, _ev in events:
                        sock = by_fd[fd]
                        data = sock.recv(_READ)
                        if not data:
                            raise LoadError("the server closed a connection")
                        if data.count(b"\n"):
                            t1 = now()
                            if measuring:
                                count += 1
                                if len(latencies) < _MAX_LATENCIES:
                                    record(t1 - sent_at[fd])
                            sent_at[fd] = t1
                            sock.send(LINE)
            finally:
                ep.close()
        meter.count = count
        result = meter.result()
    finally:
        for sock in socks:
            sock.close()
    result.update(_percentiles(latencies))
    return result


def _timeval(seconds: float) -> bytes:
    import struct

    return struct.pack("ll", int(seconds), int((seconds % 1) * 1_000_000))


def pipelined(
    port: int, conns: int, depth: int, duration: float, warmup: float, pid: int
) -> dict[str, Any]:
    """``depth`` lines in flight per connection; count replies in bulk and refill."""
    socks = [_connect(port) for _ in range(conns)]
    ep = select.epoll()
    by_fd: dict[int, socket.socket] = {}
    backlog: dict[int, bytes] = {}  # unsent bytes (only if the socket buffer filled)
    lines = [LINE * n for n in range(depth + 1)]
    count = 0
    meter = Meter(pid)
    try:
        for sock in socks:
            sock.setblocking(False)
            by_fd[sock.fileno()] = sock
            ep.register(sock.fileno(), _EPOLLIN)
        for fd, sock in by_fd.items():
            _send(ep, sock, fd, lines[depth], backlog)
        measure_from = time.monotonic() + warmup
        end = measure_from + duration
        measuring = False
        while True:
            events = ep.poll(5.0)
            if not events:
                raise LoadError("no reply within 5 s")
            t = time.monotonic()
            if t >= end:
                break
            if not measuring and t >= measure_from:
                measuring = True
                meter.start()
            for fd, ev in events:
                sock = by_fd[fd]
                if ev & _EPOLLOUT:
                    pending = backlog.pop(fd, b"")
                    ep.modify(fd, _EPOLLIN)
                    if pending:
                        _send(ep, sock, fd, pending, backlog)
                if not ev & (_EPOLLIN | _ERRMASK):
                    continue
                data = sock.recv(_READ)
                if not data:
                    raise LoadError("the server closed a connection")
                n = data.count(b"\n")
                if n:
                    if measuring:
                        count += n
                    _send(ep, sock, fd, lines[n] if n <= depth else LINE * n, backlog)
        meter.count = count
        return meter.result()
    finally:
        ep.close()
        for sock in socks:
            sock.close()


def _send(ep: Any, sock: socket.socket, fd: int, data: bytes, backlog: dict[int, bytes]) -> None:
    if fd in backlog:
        backlog[fd] += data
        return
    try:
        sent = sock.send(data)
    except BlockingIOError:
        sent = 0
    if sent < len(data):
        backlog[fd] = data[sent:]
        ep.modify(fd, _EPOLLIN | _EPOLLOUT)


def connects(
    port: int, concurrency: int, duration: float, warmup: float, pid: int
) -> dict[str, Any]:
    """Connect, send one line, read the reply, close; ``concurrency`` at a time."""
    ep = select.epoll()
    socks: dict[int, socket.socket] = {}
    sending: set[int] = set()  # connect in progress; send once writable
    address = ("127.0.0.1", port)
    count = 0
    errors = 0
    meter = Meter(pid)

    def open_one() -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        code = sock.connect_ex(address)
        if code not in (0, errno.EINPROGRESS):
            sock.close()
            raise LoadError(f"connect failed: {os.strerror(code)}")
        fd = sock.fileno()
        socks[fd] = sock
        sending.add(fd)
        ep.register(fd, _EPOLLOUT)

    def failed(what: str) -> None:
        nonlocal errors
        errors += 1
        if errors > 1000:
            raise LoadError(f"too many {what}")

    measure_from = time.monotonic() + warmup
    end = measure_from + duration
    measuring = False
    try:
        for _ in range(concurrency):
            open_one()
        while True:
            events = ep.poll(5.0)
            if not events:
                raise LoadError("no progress within 5 s")
            t = time.monotonic()
            if t >= end:
                break
            if not measuring and t >= measure_from:
                measuring = True
                meter.start()
            for fd, ev in events:
                sock = socks[fd]
                if fd in sending:
                    sending.discard(fd)
                    if ev & _ERRMASK or sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                        failed("failed connects")
                    else:
                        sock.send(LINE)
                        ep.modify(fd, _EPOLLIN)
                        continue
                else:
                    try:
                        data = sock.recv(_READ)
                    except ConnectionError:
                        data = b""
                    if data and not data.count(b"\n"):
                        continue  # a partial reply (never seen with 64 bytes)
                    if not data:
                        failed("connections closed early")
                    elif measuring:
                        count += 1
                ep.unregister(fd)
                del socks[fd]
                sock.close()
                open_one()
        meter.count = count
        result = meter.result()
        result["errors"] = errors
        return result
    finally:
        ep.close()
        for sock in socks.values():
            sock.close()


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise LoadError(f"no VmRSS for pid {pid}")


def _open_batch(port: int, n: int, deadline: float) -> list[socket.socket]:
    """Open ``n`` connections at once and exchange one line on each."""
    ep = select.epoll()
    socks: dict[int, socket.socket] = {}
    waiting: set[int] = set()
    try:
        for _ in range(n):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            code = sock.connect_ex(("127.0.0.1", port))
            if code not in (0, errno.EINPROGRESS):
                sock.close()
                raise LoadError(f"connect failed: {os.strerror(code)}")
            socks[sock.fileno()] = sock
            ep.register(sock.fileno(), _EPOLLOUT)
        connecting = set(socks)
        waiting = set(socks)
        while waiting:
            timeout = deadline - time.monotonic()
            if timeout <= 0:
                raise LoadError(f"{len(waiting)} idle connections not set up in time")
            for fd, ev in ep.poll(min(timeout, 1.0)):
                sock = socks[fd]
                if fd in connecting:
                    connecting.discard(fd)
                    if ev & _ERRMASK:
                        raise LoadError("an idle connection failed to connect")
                    sock.send(LINE)
                    ep.modify(fd, _EPOLLIN)
                    continue
                data = sock.recv(_READ)
                if not data:
                    raise LoadError("the server closed an idle connection")
                if data.count(b"\n"):
                    waiting.discard(fd)
                    ep.unregister(fd)
        return list(socks.values())
    except BaseException:
        for sock in socks.values():
            sock.close()
        raise
    finally:
        ep.close()


def idle(port: int, conns: int, server_pid: int, settle: float = 0.5) -> dict[str, Any]:
    """Server RSS per idle connection (each has exchanged one line)."""
    deadline = time.monotonic() + 60.0
    for sock in _open_batch(port, min(100, conns), deadline):  # warm the server's code paths
        sock.close()
    time.sleep(settle)
    before = _rss_kib(server_pid)
    held: list[socket.socket] = []
    try:
        while len(held) < conns:
            held += _open_batch(port, min(200, conns - len(held)), deadline)
        time.sleep(settle)
        after = _rss_kib(server_pid)
    finally:
        for sock in held:
            sock.close()
    per_conn = (after - before) / conns
    return {
        "rate": per_conn,
        "rss_before_kib": before,
        "rss_after_kib": after,
        "kib_per_conn": per_conn,
        "conns": conns,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.loadgen")
    parser.add_argument("scenario", choices=["pingpong", "pipelined", "connects", "idle"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--conns", type=int, default=1)
    parser.add_argument("--depth", type=int, default=16)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--server-pid", type=int, default=0)
    args = parser.parse_args(argv)
    limit = raise_nofile()
    if args.scenario == "idle" and args.conns + 100 > limit:
        print(json.dumps({"error": f"RLIMIT_NOFILE {limit} too low for {args.conns}"}))
        return 2
    pid = args.server_pid
    try:
        if args.scenario == "pingpong":
            result = pingpong(args.port, args.conns, args.duration, args.warmup, pid)
        elif args.scenario == "pipelined":
            result = pipelined(args.port, args.conns, args.depth, args.duration, args.warmup, pid)
        elif args.scenario == "connects":
            result = connects(args.port, args.conns, args.duration, args.warmup, pid)
        else:
            result = idle(args.port, args.conns, pid)
    except (LoadError, OSError) as exc:
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}))
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
