"""Instructions per message and per connection, counted by callgrind.

A rate depends on the machine and, on a shared virtual machine, on what its
neighbours do: this project's host changes single-connection ping-pong by
2-6x between runs. The number of instructions a server runs for the same
work hardly does (within about 0.5 % from run to run for ``pp`` and
``conn``; ``batch16`` has moved by up to 4 % on a busy host), so it is the
measure to compare two trees by, or tcpkit with a hand-written server, when
the timings are noise. It is not a timing: a cache miss or a system call costs more than
its instructions say, and the kernel's work is not counted.

``python -m benchmarks.icount`` runs each chosen Python server under
``valgrind --tool=callgrind`` and drives it from this process with three
workloads, each over 127.0.0.1:

- ``pp``: one connection, one 64-byte line per round trip (per message);
- ``batch16``: one connection, 16 lines in one write per round trip (per line);
- ``conn``: 4 clients in parallel: connect, a line and its echo, close
  (per connection).

A server runs once with every workload short, then once per workload with
that workload long; the difference to the short run divided by the extra
work is the cost of one more message (or connection), with start-up,
imports and the other workloads cancelled out. ``--baseline TREE`` adds the
tcpkit servers with tcpkit imported from ``TREE/src``, as in
``python -m benchmarks``.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .catalog import SERVERS, ServerSpec
from .results import machine_info
from .runner import (
    Setup,
    add_baselines,
    kill_all,
    running_server,
    select_servers,
    server_command,
)
from .scenarios import SCENARIOS

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PYTHON_BACKENDS = ("asyncio", "uvloop", "trio")  # (the Python servers: C and Perl are not counted)
LINE = b"x" * 62 + b"\r\n"
CLIENTS = 4  # parallel clients in the conn workload
SETTLE = 1.0  # seconds after the last reply: the server handles the last closes
DEFAULT_SERVERS = (
    "tcpkit-asyncio,tcpkit-uvloop,tcpkit-trio,tcpkit-send-*,"
    "asyncio-protocol,uvloop-protocol,trio-serve-tcp,anyio-asyncio,anyio-trio"
)


@dataclass(frozen=True)
class Workload:
    key: str
    title: str
    unit: int  # messages (or connections) per round (conn: a round is one per client)
    short: int  # rounds in the short run
    long: int  # ... and in the long one


WORKLOADS = (
    Workload("pp", "per message, 1 conn ping-pong", 1, 200, 2200),
    Workload("batch16", "per message, 16 lines per read", 16, 25, 150),
    Workload("conn", "per connection (connect, a line, close)", CLIENTS, 50, 300),
)
QUICK = {"pp": (50, 250), "batch16": (5, 30), "conn": (5, 25)}


# -- the client -----------------------------------------------------------------------------


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=60)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _echo(sock: socket.socket, batch: bytes) -> None:
    sock.sendall(batch)
    got = 0
    while got < len(batch):
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        got += len(chunk)


def _ping_pong(port: int, rounds: int, lines: int) -> None:
    with _connect(port) as sock:
        for _ in range(rounds):
            _echo(sock, LINE * lines)


def _connects(port: int, rounds: int) -> None:
    """``CLIENTS`` clients at once, ``rounds`` connections each."""
    errors: list[BaseException] = []

    def client(n: int) -> None:
        try:
            for _ in range(n):
                with _connect(port) as sock:
                    _echo(sock, LINE)
        except BaseException as exc:  # reported by the caller
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(rounds,)) for _ in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]


def drive(port: int, rounds: dict[str, int]) -> None:
    """Every workload once, ``rounds[key]`` rounds each."""
    _ping_pong(port, rounds["pp"], 1)
    _ping_pong(port, rounds["batch16"], 16)
    _connects(port, rounds["conn"])


# -- counting -------------------------------------------------------------------------------


def count(spec: ServerSpec, rounds: dict[str, int], workdir: Path) -> int:
    """Instructions ``spec``'s server ran, from its start to its end, serving ``rounds``."""
    out = Path(tempfile.mkstemp(prefix=f"{spec.name.replace(':', '_')}-", dir=workdir)[1])
    setup = Setup(runs=1, duration=0, warmup=0, idle_conns=0, server_cpu=None, client_cpu=None)
    command = [
        "env",
        "PYTHONHASHSEED=0",  # (the same dict layouts in every run: start-up cancels out)
        "valgrind",
        "--tool=callgrind",
        f"--callgrind-out-file={out}",
        *server_command(spec, SCENARIOS["pp1"], setup),
    ]
    with running_server(spec, command, None, workdir, timeout=300, stop_wait=120) as (port, _):
        drive(port, rounds)
        time.sleep(SETTLE)
    match = re.search(rb"^summary: (\d+)", out.read_bytes(), re.MULTILINE)
    if match is None:
        raise RuntimeError(f"{spec.name}: callgrind wrote no summary to {out}")
    out.unlink()
    return int(match.group(1))


def measure(
    spec: ServerSpec, workloads: dict[str, tuple[int, int]], workdir: Path
) -> dict[str, float]:
    """Instructions per unit of each workload: (long run - short run) / extra units."""
    short = {key: lengths[0] for key, lengths in workloads.items()}
    base = count(spec, short, workdir)
    per: dict[str, float] = {}
    for w in WORKLOADS:
        lo, hi = workloads[w.key]
        total = count(spec, {**short, w.key: hi}, workdir)
        per[w.key] = (total - base) / ((hi - lo) * w.unit)
    return per


# -- the report -----------------------------------------------------------------------------


def src_commit(tree: Path) -> str:
    """The commit of ``tree``'s last change to ``src/`` (the tcpkit that was counted)."""
    try:
        done = subprocess.run(
            ["git", "-C", str(tree), "log", "-1", "--format=%h", "--", "src"],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return done.stdout.strip() or "unknown"


def _k(value: float) -> str:
    return f"{value / 1000:,.1f}k"


def render(
    servers: list[ServerSpec],
    per: dict[str, dict[str, float]],
    command: str,
    failed: dict[str, str],
    trees: str,
) -> str:
    """The Markdown report: a table of counts, then each tcpkit server's ratios."""
    date = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    lines = [
        "# Instructions per message and per connection (callgrind)",
        "",
        "Generated by `benchmarks/icount.py`; do not edit by hand. What it counts and why:",
        "its module docstring, and [docs/performance.md](../docs/performance.md).",
        "",
        f"- Command: `{command}`",
        f"- Date: {date}",
        *(f"- Machine: {line}" for line in machine_info()[:2]),
        "- Counted: every instruction of the server process (Python, the event loop, the "
        "C library), none of the kernel's; fewer is better",
        "",
        "<!-- --8<-- [start:tables] -->",
        "",
        f"Counted on {date}: {trees}.",
        "",
        "| server | backend | " + " | ".join(w.title for w in WORKLOADS) + " |",
        "|---|---|" + "---:|" * len(WORKLOADS),
    ]
    for spec in servers:
        if spec.name in per:
            cells = " | ".join(_k(per[spec.name][w.key]) for w in WORKLOADS)
            lines.append(f"| `{spec.name}` | {spec.backend} | {cells} |")
    lines += [
        "",
        "Ratios: the reference's instructions divided by the tcpkit server's (1.00x or"
        " more: tcpkit runs fewer).",
        "",
        "| tcpkit server | reference | " + " | ".join(w.key for w in WORKLOADS) + " |",
        "|---|---|" + "---:|" * len(WORKLOADS),
    ]
    for spec in servers:
        if not spec.tcpkit or spec.src is not None or spec.name not in per:
            continue
        for ref in (f"base:{spec.name}", *spec.refs):
            if ref in per:
                cells = " | ".join(
                    f"{per[ref][w.key] / per[spec.name][w.key]:.2f}x" for w in WORKLOADS
                )
                lines.append(f"| `{spec.name}` | `{ref}` | {cells} |")
    if failed:
        lines += ["", "Not counted:", ""]
        lines += [f"- `{name}`: {why}" for name, why in failed.items()]
    lines += ["", "<!-- --8<-- [end:tables] -->"]
    return "\n".join(lines) + "\n"


def _trees(root: Path, baseline: Path | str | None) -> str:
    """Which tcpkit was counted: this tree's, and the baseline's."""
    trees = f"tcpkit from commit {src_commit(root)}"
    if baseline is not None:
        trees += f", `base:` rows from commit {src_commit(Path(baseline))}"
    return trees


def _baseline_spec(name: str, tree: str | None) -> ServerSpec:
    """A ``base:`` server of a recorded run (``--from-json``)."""
    if tree is None or not name.startswith("base:"):
        raise SystemExit(f"--from-json: {name} is not a server")
    return next(s for s in add_baselines([SERVERS[name[5:]]], Path(tree)) if s.name == name)


# -- the command ----------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.icount",
        description="Instructions per message and per connection, counted by callgrind.",
    )
    parser.add_argument("--only", default=DEFAULT_SERVERS, help="server names or globs")
    parser.add_argument("--baseline", type=Path, help="also count the tcpkit servers of TREE")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="servers at once")
    parser.add_argument(
        "--quick", action="store_true", help="short workloads: proves it runs (for CI)"
    )
    parser.add_argument("--output", type=Path, default=HERE / "INSTRUCTIONS.md")
    parser.add_argument(
        "--from-json",
        type=Path,
        help="count nothing: render the report from the JSON an earlier run wrote beside it",
    )
    return parser.parse_args(argv)


def count_all(
    servers: list[ServerSpec], workloads: dict[str, tuple[int, int]], jobs: int
) -> tuple[dict[str, dict[str, float]], dict[str, str]]:
    """Measure every server, ``jobs`` at once: (counts by server, failures by server).

    Interrupted (Ctrl-C, SIGTERM), it kills the servers it started first.
    """
    per: dict[str, dict[str, float]] = {}
    failed: dict[str, str] = {}

    def on_signal(signum: int, _frame: object) -> None:
        kill_all()  # (the clients then fail at once: the threads end)
        raise SystemExit(128 + signum)

    old = signal.signal(signal.SIGTERM, on_signal)
    try:
        with (
            tempfile.TemporaryDirectory(prefix="tcpkit-icount-") as tmp,
            concurrent.futures.ThreadPoolExecutor(max(1, jobs)) as pool,
        ):
            futures = {pool.submit(measure, s, workloads, Path(tmp)): s for s in servers}
            try:
                for future in concurrent.futures.as_completed(futures):
                    spec = futures[future]
                    try:
                        per[spec.name] = future.result()
                    except Exception as exc:  # reported in the table; the others still count
                        failed[spec.name] = str(exc)
                        print(f"{spec.name}: failed: {exc}", file=sys.stderr)
                        continue
                    shown = ", ".join(f"{k} {_k(v)}" for k, v in per[spec.name].items())
                    print(f"{spec.name:<28} {shown}", flush=True)
            except BaseException:
                for future in futures:
                    future.cancel()
                kill_all()
                raise
    finally:
        signal.signal(signal.SIGTERM, old)
    return per, failed


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.from_json is not None:
        data = json.loads(args.from_json.read_text())
        servers = [SERVERS.get(n) or _baseline_spec(n, data["baseline"]) for n in data["servers"]]
        trees = data.get("trees") or _trees(ROOT, data["baseline"])
        args.output.write_text(
            render(servers, data["counts"], data["command"], data["failed"], trees)
        )
        print(f"written: {args.output}")
        return 0
    if shutil.which("valgrind") is None:
        print("valgrind is not installed (Debian: apt-get install valgrind)", file=sys.stderr)
        return 2
    servers = [s for s in select_servers(args.only) if s.backend in PYTHON_BACKENDS]
    if args.baseline is not None:
        servers = add_baselines(servers, args.baseline)
    workloads = QUICK if args.quick else {w.key: (w.short, w.long) for w in WORKLOADS}
    per, failed = count_all(servers, workloads, args.jobs)
    shown_args = sys.argv[1:] if argv is None else list(argv)
    command = " ".join(["python -m benchmarks.icount", *map(shlex.quote, shown_args)])
    trees = _trees(ROOT, args.baseline)
    args.output.write_text(render(servers, per, command, failed, trees))
    record = {
        "command": command,
        "trees": trees,
        "baseline": str(args.baseline) if args.baseline else None,
        "servers": [s.name for s in servers],
        "counts": per,
        "failed": failed,
    }
    args.output.with_suffix(".json").write_text(json.dumps(record, indent=1) + "\n")
    print(f"written: {args.output}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
