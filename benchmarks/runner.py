"""The benchmark runner behind ``python -m benchmarks``.

For every cell (server x scenario x run) it starts the server in its own
process, drives it with :mod:`benchmarks.loadgen` in another, and kills both.
With ``taskset`` and two or more CPUs, the server is pinned to one core and
the load generator to another. Runs are interleaved (run 1 of every server,
then run 2...), so a burst of load from elsewhere on the machine hits every
server alike; ratios are taken within one run, then their median reported.

Results go to ``benchmarks/RESULTS.md`` (a table per scenario) and
``benchmarks/plots/`` (a figure per scenario); ``--docs`` also refreshes
``docs/performance.md`` and its figures in ``docs/img/performance/``.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import dataclasses
import fnmatch
import json
import os
import platform
import select
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .loadgen import raise_nofile

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PYTHON = sys.executable


@dataclass(frozen=True)
class Scenario:
    key: str
    title: str
    args: tuple[str, ...]
    load: str  # in words; {idle_conns} is filled in
    unit: str = "msg/s"
    latency: bool = False


SCENARIOS: dict[str, Scenario] = {
    s.key: s
    for s in [
        Scenario(
            "pp1",
            "1 conn ping-pong",
            ("pingpong", "--conns", "1"),
            "One connection, one line in flight",
            latency=True,
        ),
        Scenario(
            "pipe",
            "50 conns x 16 in flight",
            ("pipelined", "--conns", "50", "--depth", "16"),
            "50 connections, each keeping 16 lines in flight",
        ),
        Scenario(
            "pp100",
            "100 conns ping-pong",
            ("pingpong", "--conns", "100"),
            "100 connections, one line in flight each",
            latency=True,
        ),
        Scenario(
            "conn",
            "connects/s",
            ("connects", "--conns", "8"),
            "8 clients in parallel: connect, send a line, read the reply, close",
            unit="conn/s",
        ),
        Scenario(
            "idle",
            "idle RSS",
            ("idle",),
            "{idle_conns} connections that each exchanged one line, then stay idle",
            unit="KiB/conn",
        ),
    ]
}
QUICK_SCENARIOS = ("pp1", "pipe", "conn", "idle")


@dataclass(frozen=True)
class ServerSpec:
    name: str
    backend: str  # asyncio, uvloop, trio, perl
    description: str
    command: tuple[str, ...]
    anyio_ref: str | None = None  # the raw anyio server on the same backend
    native_ref: str | None = None  # the fastest idiomatic raw server on that loop
    skip: tuple[str, ...] = ()
    src: str | None = None  # import tcpkit from this directory instead (--baseline)


def _py(name: str) -> tuple[str, ...]:
    return (PYTHON, "-m", "benchmarks.servers", name)


_NATIVE = {"asyncio": "asyncio-protocol", "uvloop": "uvloop-protocol", "trio": "trio-serve-tcp"}


def _tcpkit(backend: str, variant: str = "") -> ServerSpec:
    name = f"tcpkit-{variant}-{backend}" if variant else f"tcpkit-{backend}"
    what, skip = {
        "": ("def handler, conn.put(line)", ()),
        "send": ("async def handler, await conn.send(line)", ("idle",)),
        # Busy polling matters where the loop would sleep between requests.
        "nopoll": ("as tcpkit-*, busy polling off: App(busy_poll=0)", ("pipe", "conn", "idle")),
    }[variant]
    return ServerSpec(
        name,
        backend,
        f"tcpkit App() echo: {what}",
        _py(name),
        anyio_ref=f"anyio-{backend}",
        native_ref=_NATIVE[backend],
        skip=skip,
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
        _tcpkit("asyncio", "nopoll"),
        _tcpkit("uvloop", "nopoll"),
        _tcpkit("trio", "nopoll"),
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
            "asyncio.Protocol: data_received splits lines, one write per line",
            _py("asyncio-protocol"),
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
        ),
        ServerSpec(
            "trio-serve-tcp",
            "trio",
            "trio.serve_tcp: receive_some, split lines, send_all per line",
            _py("trio-serve-tcp"),
        ),
        ServerSpec(
            "poe",
            "perl",
            "POE::Component::Server::TCP, the synopsis echo (ClientInput puts the line)",
            ("perl", str(HERE / "poe_echo.pl")),
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


# -- processes ---------------------------------------------------------------

_children: list[subprocess.Popen[bytes]] = []


def _kill(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            proc.wait(2)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)
    if proc.stdout is not None:
        proc.stdout.close()
    with contextlib.suppress(ValueError):
        _children.remove(proc)


def kill_all() -> None:
    for proc in list(_children):
        _kill(proc)


def _pin(cpu: int | None) -> list[str]:
    if cpu is None:
        return []
    return ["taskset", "-c", str(cpu)]


class ServerFailed(Exception):
    pass


@contextlib.contextmanager
def running_server(
    spec: ServerSpec, cpu: int | None, logdir: Path, start_timeout: float = 30.0
) -> Iterator[tuple[int, int]]:
    """Start ``spec``; yield ``(port, pid)``; kill it on exit (always)."""
    log = open(logdir / f"{spec.name}.log", "ab")  # noqa: SIM115
    proc = subprocess.Popen(
        [*_pin(cpu), *spec.command],
        stdout=subprocess.PIPE,
        stderr=log,
        stdin=subprocess.DEVNULL,
        cwd=ROOT,
        env={
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(ROOT), spec.src or str(ROOT / "src")]),
        },
    )
    _children.append(proc)
    try:
        port = _read_port(proc, start_timeout)
        yield port, proc.pid  # taskset execs the command: same pid
        if proc.poll() is not None:
            raise ServerFailed(f"exited with status {proc.returncode} during the run")
    finally:
        _kill(proc)
        log.close()


def _read_port(proc: subprocess.Popen[bytes], timeout: float) -> int:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    buf = b""
    fd = proc.stdout.fileno()
    while b"\n" not in buf:
        left = deadline - time.monotonic()
        if left <= 0:
            raise ServerFailed(f"did not report its port within {timeout:.0f} s")
        ready, _, _ = select.select([fd], [], [], min(left, 0.5))
        if ready:
            chunk = os.read(fd, 4096)
            if not chunk:
                raise ServerFailed(f"exited with status {proc.wait(5)} before listening")
            buf += chunk
    line = buf.split(b"\n", 1)[0].decode()
    if not line.startswith("PORT "):
        raise ServerFailed(f"unexpected first line {line!r}")
    return int(line.split()[1])


def run_client(
    scenario: Scenario,
    port: int,
    pid: int,
    cpu: int | None,
    duration: float,
    warmup: float,
    idle_conns: int,
) -> dict[str, Any]:
    args = list(scenario.args)
    if scenario.key == "idle":
        args += ["--conns", str(idle_conns)]
    cmd = [
        *_pin(cpu),
        PYTHON,
        "-m",
        "benchmarks.loadgen",
        *args,
        "--port",
        str(port),
        "--duration",
        str(duration),
        "--warmup",
        str(warmup),
        "--server-pid",
        str(pid),
    ]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, cwd=ROOT
    )
    _children.append(proc)
    try:
        out, err = proc.communicate(timeout=duration + warmup + 90)
    except subprocess.TimeoutExpired:
        return {"error": "the load generator timed out"}
    finally:
        _kill(proc)
    lines = out.decode().strip().splitlines()
    if not lines:
        return {"error": f"no output from the load generator: {err.decode()[-300:]}"}
    try:
        result: dict[str, Any] = json.loads(lines[-1])
    except ValueError:
        return {"error": f"bad output {lines[-1][:200]!r}"}
    return result


# -- the run -------------------------------------------------------------------


@dataclass
class Cell:
    server: str
    scenario: str
    runs: list[dict[str, Any]] = field(default_factory=list[dict[str, Any]])

    def ok_runs(self) -> list[dict[str, Any]]:
        return [r for r in self.runs if "error" not in r]

    def median(self, key: str = "rate") -> float | None:
        values = [r[key] for r in self.ok_runs() if r.get(key) is not None]
        return statistics.median(values) if values else None

    def errors(self) -> list[str]:
        return [str(r["error"]) for r in self.runs if "error" in r]


@dataclass
class Results:
    servers: list[str]
    scenarios: list[str]
    cells: dict[tuple[str, str], Cell]
    runs: int
    duration: float
    warmup: float
    idle_conns: int
    command: str
    pinned: str
    skipped: dict[str, str]
    loads: list[float]
    started: str
    finished: str = ""
    note: str = ""
    machine: list[str] = field(default_factory=list[str])  # where it was measured

    def cell(self, server: str, scenario: str) -> Cell | None:
        return self.cells.get((server, scenario))

    def ratio(self, server: str, ref: str | None, scenario: str) -> float | None:
        """Median over runs of the per-run ratio server/ref (both measured in that run)."""
        if ref is None:
            return None
        a, b = self.cell(server, scenario), self.cell(ref, scenario)
        if a is None or b is None:
            return None
        ratios = []
        for ra, rb in zip(a.runs, b.runs, strict=False):
            if "error" in ra or "error" in rb or not rb.get("rate"):
                continue
            ratios.append(ra["rate"] / rb["rate"])
        return statistics.median(ratios) if ratios else None


def results_to_json(results: Results) -> dict[str, Any]:
    """Everything needed to render the report again (``--from-json``)."""
    data = dataclasses.asdict(results)
    data["cells"] = [
        {"server": c.server, "scenario": c.scenario, "runs": c.runs} for c in results.cells.values()
    ]
    data["baselines"] = {
        n: {"src": SERVERS[n].src, "description": SERVERS[n].description}
        for n in results.servers
        if n.startswith("base:")
    }
    return data


def results_from_json(data: dict[str, Any]) -> Results:
    for name, info in data.pop("baselines", {}).items():
        SERVERS[name] = dataclasses.replace(
            SERVERS[name.removeprefix("base:")],
            name=name,
            description=info["description"],
            src=info["src"],
        )
    cells = {
        (c["server"], c["scenario"]): Cell(c["server"], c["scenario"], c["runs"])
        for c in data.pop("cells")
    }
    return Results(cells=cells, **data)


def _load() -> float:
    return os.getloadavg()[0]


def run_all(
    servers: Sequence[ServerSpec],
    scenarios: Sequence[Scenario],
    *,
    runs: int,
    duration: float,
    warmup: float,
    idle_conns: int,
    command: str,
    skipped: dict[str, str],
    server_cpu: int | None,
    client_cpu: int | None,
    verbose: bool = True,
) -> Results:
    cells: dict[tuple[str, str], Cell] = {}
    results = Results(
        servers=[s.name for s in servers],
        scenarios=[s.key for s in scenarios],
        cells=cells,
        runs=runs,
        duration=duration,
        warmup=warmup,
        idle_conns=idle_conns,
        command=command,
        machine=machine_info(),
        pinned=(
            f"server on CPU {server_cpu}, load generator on CPU {client_cpu} (taskset)"
            if server_cpu is not None
            else "not pinned (taskset missing or a single CPU)"
        ),
        skipped=skipped,
        loads=[_load()],
        started=time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    )
    with tempfile.TemporaryDirectory(prefix="tcpkit-bench-") as tmp:
        logdir = Path(tmp)
        for run in range(runs):
            for scenario in scenarios:
                for spec in servers:
                    if scenario.key in spec.skip:
                        continue
                    cell = cells.setdefault(
                        (spec.name, scenario.key), Cell(spec.name, scenario.key)
                    )
                    results.loads.append(_load())
                    try:
                        with running_server(spec, server_cpu, logdir) as (port, pid):
                            result = run_client(
                                scenario, port, pid, client_cpu, duration, warmup, idle_conns
                            )
                    except ServerFailed as exc:
                        result = {"error": f"server: {exc}"}
                        log = logdir / f"{spec.name}.log"
                        if log.exists():
                            result["log"] = log.read_text(errors="replace")[-500:]
                    cell.runs.append(result)
                    if verbose:
                        _progress(run, runs, scenario, spec, result)
    results.loads.append(_load())
    results.finished = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    return results


def _progress(run: int, runs: int, scenario: Scenario, spec: ServerSpec, r: dict[str, Any]) -> None:
    if "error" in r:
        text = f"ERROR {r['error']}"
    elif scenario.key == "idle":
        text = f"{r['kib_per_conn']:.1f} KiB/conn"
    else:
        text = f"{r['rate']:>10,.0f} {scenario.unit}"
        if r.get("cpu_us"):
            text += f"  cpu {r['cpu_us']:.1f} µs/msg"
        if r.get("p50_us") is not None:
            text += f"  p50 {r['p50_us']:.0f} µs p99 {r['p99_us']:.0f} µs"
    print(
        f"[run {run + 1}/{runs}] {scenario.key:<5} {spec.name:<24} {text}  (load {_load():.2f})",
        flush=True,
    )


# -- reporting -------------------------------------------------------------


def _code(text: str) -> str:
    """``text`` as inline code, also when it contains backticks."""
    return f"`` {text} ``" if "`" in text else f"`{text}`"


def _fmt_rate(v: float | None) -> str:
    if v is None:
        return "—"
    if v >= 100_000:
        return f"{v / 1000:.0f}k"
    if v >= 1000:
        return f"{v / 1000:.1f}k"
    return f"{v:.0f}"


def _fmt(v: float | None, spec: str = ".0f", suffix: str = "") -> str:
    return "—" if v is None else f"{v:{spec}}{suffix}"


def _fmt_ratio(v: float | None) -> str:
    return "—" if v is None else f"{v:.2f}x"


def machine_info() -> list[str]:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    versions = []
    for mod in ("anyio", "trio", "uvloop"):
        try:
            from importlib.metadata import version

            versions.append(f"{mod} {version(mod)}")
        except Exception:  # an absent package is only not listed
            continue
    return [
        f"{cpu}, {os.cpu_count()} CPUs, {platform.system()} {platform.release()}",
        f"CPython {platform.python_version()}, " + ", ".join(versions),
    ]


def _what(s: Scenario) -> str:
    """What a scenario's figure and table report, in words."""
    if s.key == "idle":
        return "server memory per idle connection (KiB; lower is better)"
    if s.unit == "conn/s":
        return "connections per second (higher is better)"
    return "messages per second (higher is better)"


def scenario_table(results: Results, s: Scenario) -> list[str]:
    """One scenario's table: a row per server that ran it."""
    per = "conn" if s.unit == "conn/s" else "msg"
    if s.key == "idle":
        head = ["server", "backend", f"KiB per connection ({results.idle_conns} conns)"]
    else:
        head = ["server", "backend", s.unit]
        head += ["p50 µs", "p99 µs"] if s.latency else []
        head.append(f"server CPU µs/{per}")
    out = ["| " + " | ".join(head) + " |", "|---|---|" + "|".join(["---:"] * (len(head) - 2)) + "|"]
    for name in results.servers:
        cell = results.cell(name, s.key)
        if cell is None:
            continue
        row = [f"`{name}`", SERVERS[name].backend]
        if cell.errors() and not cell.ok_runs():
            row += ["error"] + ["—"] * (len(head) - 3)
        elif s.key == "idle":
            row.append(_fmt(cell.median("kib_per_conn"), ".1f"))
        else:
            row.append(_fmt_rate(cell.median()))
            if s.latency:
                row += [_fmt(cell.median("p50_us")), _fmt(cell.median("p99_us"))]
            row.append(_fmt(cell.median("cpu_us"), ".1f"))
        out.append("| " + " | ".join(row) + " |")
    return out


def render_tables(results: Results, images: dict[str, str] | None = None) -> str:
    """A section per scenario (its figure, if any, and its table), then the ratios.

    Narrow tables, so that each fits a page: what used to be one wide table is
    one table per scenario, with the server CPU time per message as a column.
    """
    sc = [SCENARIOS[k] for k in results.scenarios]
    out: list[str] = []
    for s in sc:
        load = s.load.format(idle_conns=f"{results.idle_conns:,}")
        out += [f"### {s.title}", "", f"{load}; {_what(s)}.", ""]
        if images and s.key in images:
            out += [f"![{s.title}: {_what(s)}]({images[s.key]})", ""]
        out += [*scenario_table(results, s), ""]
    rated = [s for s in sc if s.key != "idle"]
    tcpkit = [n for n in results.servers if SERVERS[n].anyio_ref]
    ratio_rows: list[str] = []
    for name in tcpkit if rated else []:
        spec = SERVERS[name]
        for ref in (spec.anyio_ref, spec.native_ref, "poe", f"base:{name}"):
            if ref is None or ref not in results.servers:
                continue
            row = [f"`{name}`", f"`{ref}`"]
            row += [_fmt_ratio(results.ratio(name, ref, s.key)) for s in rated]
            ratio_rows.append("| " + " | ".join(row) + " |")
    if ratio_rows:
        out += [
            "### Ratios: tcpkit ÷ references",
            "",
            "tcpkit's rate divided by the reference server's, median of the per-run "
            "ratios; 1.00x or more: tcpkit is faster.",
            "",
            "| tcpkit server | reference | " + " | ".join(s.title for s in rated) + " |",
            "|---|---|" + "|".join(["---:"] * len(rated)) + "|",
            *ratio_rows,
            "",
        ]
    return "\n".join(out).rstrip("\n")


def render_markdown(results: Results, images: dict[str, str] | None) -> str:
    loads = results.loads
    errors = [
        f"- `{c.server}` {c.scenario}: {e}" for c in results.cells.values() for e in c.errors()
    ]
    lines = [
        "# tcpkit benchmarks: line echo against raw servers",
        "",
        "Generated by `benchmarks/runner.py`; do not edit by hand. Method: "
        "[docs/performance.md](../docs/performance.md).",
        "",
        f"- Command: {_code(results.command)}",
        f"- Date: {results.started} - {results.finished}",
        *[f"- Machine: {m}" for m in results.machine or ["not recorded"]],
        f"- Machine load (1-min load average, sampled before each cell): "
        f"min {min(loads):.2f}, median {statistics.median(loads):.2f}, max {max(loads):.2f}",
        f"- {results.runs} run(s) x {results.duration:g} s per cell "
        f"(after {results.warmup:g} s of warm-up), medians; {results.pinned}",
        "- 64-byte lines on 127.0.0.1; a fresh server process for every cell",
    ]
    if results.note:
        lines += ["", results.note]
    lines += [f"- Skipped `{name}`: {why}" for name, why in results.skipped.items()]
    lines += ["", render_tables(results, images), ""]
    if errors:
        lines += ["Errors:", "", *errors, ""]
    lines += ["Servers:", ""]
    lines += [f"- `{n}`: {SERVERS[n].description}" for n in results.servers]
    return "\n".join(lines) + "\n"


# Colours by backend: tcpkit's bars in the full colour, the hand-written
# servers' in a light tint of it, a --baseline tree's hatched.
_COLOURS = {"asyncio": "#2f5ea8", "uvloop": "#2a8a4a", "trio": "#c0392b", "perl": "#7d5ba6"}


def _tint(colour: str, amount: float = 0.55) -> str:
    """COLOUR mixed with white (AMOUNT of white)."""
    rgb = [int(colour[i : i + 2], 16) for i in (1, 3, 5)]
    return "#" + "".join(f"{round(c + (255 - c) * amount):02x}" for c in rgb)


def _label(s: Scenario, value: float) -> str:
    return f"{value:.1f}" if s.key == "idle" else _fmt_rate(value)


def plot(results: Results, directory: Path) -> dict[str, Path]:
    """One figure per scenario, DIRECTORY/<scenario>.png, sized to be read at page width."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.patches import Patch
    except ImportError:
        print("matplotlib is not installed (pip install --group bench); no plot", file=sys.stderr)
        return {}
    directory.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    for s in (SCENARIOS[k] for k in results.scenarios):
        key = "kib_per_conn" if s.key == "idle" else "rate"
        rows: list[tuple[str, float]] = []
        for name in results.servers:
            cell = results.cell(name, s.key)
            value = cell.median(key) if cell is not None else None
            if value is not None:
                rows.append((name, value))
        if not rows:
            continue
        rows.reverse()  # the first server at the top
        fig, ax = plt.subplots(figsize=(8, 0.3 * len(rows) + 1.8))
        colours, hatches, used = [], [], set()
        for name, _ in rows:
            spec = SERVERS[name]
            base = _COLOURS.get(spec.backend, "#888888")
            own = name.startswith(("tcpkit", "base:"))
            colours.append(base if own else _tint(base))
            hatches.append("//" if name.startswith("base:") else "")
            used.add((spec.backend, own, name.startswith("base:")))
        values = [v for _, v in rows]
        bars = ax.barh([n for n, _ in rows], values, color=colours, hatch=hatches)
        ax.bar_label(bars, labels=[_label(s, v) for v in values], padding=3, fontsize=9)
        ax.set_xlim(0, max(values) * 1.14)
        if s.key != "idle":
            ax.xaxis.set_major_formatter(lambda x, _pos: f"{x / 1000:g}k" if x else "0")
        for tick in ax.get_yticklabels():
            if tick.get_text().startswith(("tcpkit", "base:")):
                tick.set_fontweight("bold")
        ax.tick_params(axis="y", labelsize=9)
        ax.grid(axis="x", alpha=0.3)
        ax.set_axisbelow(True)
        ax.spines[["top", "right"]].set_visible(False)
        runs = f"median of {results.runs} run{'s' if results.runs != 1 else ''}"
        how = (
            f"{results.idle_conns:,} connections, {runs}"
            if s.key == "idle"
            else f"64-byte lines, {runs} x {results.duration:g} s"
        )
        ax.set_title(f"{s.title}: {_what(s)}\nline echo, {how}", loc="left", fontsize=11)
        legend = []
        for backend in dict.fromkeys(SERVERS[n].backend for n, _ in reversed(rows)):
            colour = _COLOURS.get(backend, "#888888")
            if (backend, True, False) in used:
                legend.append(Patch(color=colour, label=f"tcpkit, {backend}"))
            if (backend, True, True) in used:
                legend.append(Patch(facecolor=colour, hatch="//", label=f"--baseline, {backend}"))
            if (backend, False, False) in used:
                legend.append(Patch(color=_tint(colour), label=f"hand-written, {backend}"))
        fig.legend(handles=legend, fontsize=8, loc="lower center", ncol=4, frameon=False)
        fig.tight_layout(rect=(0, 0.6 / fig.get_figheight(), 1, 1))
        path = directory / f"{s.key}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written[s.key] = path
    return written


_DOC_START = "<!-- results:start -->"
_DOC_END = "<!-- results:end -->"
DOC_IMAGES = ROOT / "docs" / "img" / "performance"


def update_docs(results: Results, figures: dict[str, Path]) -> None:
    """Refresh the results block of docs/performance.md and its figures (docs/img/performance/)."""
    doc = ROOT / "docs" / "performance.md"
    images: dict[str, str] = {}
    if figures:
        DOC_IMAGES.mkdir(parents=True, exist_ok=True)
        for old in DOC_IMAGES.glob("*.png"):
            old.unlink()
        for key, path in figures.items():
            shutil.copyfile(path, DOC_IMAGES / path.name)
            images[key] = f"img/performance/{path.name}"
    if not doc.exists():
        return
    text = doc.read_text()
    if _DOC_START not in text or _DOC_END not in text:
        return
    loads = results.loads
    block = "\n".join(
        [
            _DOC_START,
            "",
            f"Produced by {_code(results.command)} on {results.started}; machine load "
            f"(1-min average) {min(loads):.2f}-{max(loads):.2f}.",
            "",
            render_tables(results, images),
            "",
            _DOC_END,
        ]
    )
    head, rest = text.split(_DOC_START, 1)
    tail = rest.split(_DOC_END, 1)[1]
    doc.write_text(head + block + tail)


# -- the command line ----------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="tcpkit against hand-written servers on every backend (line echo).",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="1 run x 0.5 s per cell, fewer scenarios (proves it runs; for CI)",
    )
    parser.add_argument("--only", help="comma-separated server names or globs (default: all)")
    parser.add_argument("--scenarios", help=f"comma-separated, from {','.join(SCENARIOS)}")
    parser.add_argument("--runs", type=int, help="runs per cell (default 3; quick 1)")
    parser.add_argument("--duration", type=float, help="seconds per cell (default 5; quick 0.5)")
    parser.add_argument(
        "--warmup", type=float, help="seconds before measuring (default 1; quick 0.2)"
    )
    parser.add_argument("--idle-conns", type=int, help="idle connections (default 5000; quick 500)")
    parser.add_argument("--output", type=Path, default=HERE / "RESULTS.md")
    parser.add_argument(
        "--plots",
        type=Path,
        default=HERE / "plots",
        help="directory for the figures, one per scenario (default benchmarks/plots)",
    )
    parser.add_argument("--no-plot", action="store_true")
    parser.add_argument("--json", type=Path, help="also write the raw results as JSON")
    parser.add_argument(
        "--docs",
        action="store_true",
        help="refresh docs/performance.md and its figures (docs/img/performance/)",
    )
    parser.add_argument("--server-cpu", type=int, default=0)
    parser.add_argument("--client-cpu", type=int, default=1)
    parser.add_argument(
        "--baseline",
        type=Path,
        help="also run the chosen tcpkit servers with tcpkit imported from BASELINE/src "
        "(named base:<server>): before/after ratios measured in the same run",
    )
    parser.add_argument("--note", help="a sentence to print under the header of RESULTS.md")
    parser.add_argument(
        "--from-json",
        type=Path,
        help="measure nothing: render the report (and --docs) from a --json file",
    )
    parser.add_argument("--list", action="store_true", help="list servers and scenarios")
    return parser.parse_args(argv)


def select_servers(only: str | None) -> list[ServerSpec]:
    if not only:
        return list(SERVERS.values())
    patterns = [p.strip() for p in only.split(",") if p.strip()]
    chosen = [s for s in SERVERS.values() if any(fnmatch.fnmatch(s.name, p) for p in patterns)]
    unknown = [p for p in patterns if not any(fnmatch.fnmatch(n, p) for n in SERVERS)]
    if unknown:
        raise SystemExit(f"unknown server(s): {', '.join(unknown)}; see --list")
    return chosen


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.list:
        for spec in SERVERS.values():
            print(f"{spec.name:<24} {spec.backend:<8} {spec.description}")
        for s in SCENARIOS.values():
            print(f"scenario {s.key:<6} {s.title}")
        return 0
    if args.from_json is not None:
        results = results_from_json(json.loads(args.from_json.read_text()))
        if args.note:
            results.note = args.note
        return report(results, args)
    quick = args.quick
    runs = args.runs or (1 if quick else 3)
    duration = args.duration or (0.5 if quick else 5.0)
    warmup = args.warmup if args.warmup is not None else (0.2 if quick else 1.0)
    idle_conns = args.idle_conns or (500 if quick else 5000)
    keys = (
        [k.strip() for k in args.scenarios.split(",")]
        if args.scenarios
        else list(QUICK_SCENARIOS if quick else SCENARIOS)
    )
    bad = [k for k in keys if k not in SCENARIOS]
    if bad:
        raise SystemExit(f"unknown scenario(s): {', '.join(bad)}; see --list")
    servers = select_servers(args.only)
    if args.baseline is not None:
        src = (args.baseline / "src").resolve()
        if not (src / "tcpkit" / "__init__.py").exists():
            raise SystemExit(f"--baseline: no tcpkit package in {src}")
        for spec in [s for s in servers if s.name.startswith("tcpkit")]:
            base = dataclasses.replace(
                spec,
                name=f"base:{spec.name}",
                description=f"{spec.description}; tcpkit from {src}",
                src=str(src),
            )
            SERVERS[base.name] = base
            servers.insert(servers.index(spec) + 1, base)
    skipped: dict[str, str] = {}
    if any(s.name == "poe" for s in servers):
        why = poe_available()
        if why is not None:
            skipped["poe"] = why
            servers = [s for s in servers if s.name != "poe"]
    pin = shutil.which("taskset") is not None and (os.cpu_count() or 1) >= 2
    limit = raise_nofile()
    if "idle" in keys and limit < idle_conns + 200:
        raise SystemExit(f"RLIMIT_NOFILE is {limit}: too low for {idle_conns} idle connections")
    shown = sys.argv[1:] if argv is None else list(argv)
    command = " ".join(["python -m benchmarks", *([shlex.join(shown)] if shown else [])])

    def on_signal(signum: int, _frame: Any) -> None:
        raise SystemExit(128 + signum)

    old = signal.signal(signal.SIGTERM, on_signal)
    atexit.register(kill_all)
    try:
        results = run_all(
            servers,
            [SCENARIOS[k] for k in keys],
            runs=runs,
            duration=duration,
            warmup=warmup,
            idle_conns=idle_conns,
            command=command,
            skipped=skipped,
            server_cpu=args.server_cpu if pin else None,
            client_cpu=args.client_cpu if pin else None,
        )
    finally:
        kill_all()
        signal.signal(signal.SIGTERM, old)
    results.note = args.note or ""
    return report(results, args)


def report(results: Results, args: argparse.Namespace) -> int:
    """Write RESULTS.md, the figures, the JSON and (with --docs) the docs page."""
    figures = {} if args.no_plot else plot(results, args.plots)
    images = {
        key: os.path.relpath(path.resolve(), args.output.resolve().parent)
        for key, path in figures.items()
    }
    markdown = render_markdown(results, images)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(markdown)
    if args.json:
        args.json.write_text(json.dumps(results_to_json(results), indent=1))
    if args.docs:
        update_docs(results, figures)
    print()
    print(render_tables(results))
    print(f"\nwritten: {args.output}" + (f", {args.plots}/*.png" if figures else ""))
    return 0
