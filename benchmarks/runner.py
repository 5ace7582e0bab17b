"""The benchmark runner behind ``python -m benchmarks``.

For every cell (server x scenario x run) it starts the server in its own
process, drives it with the load generator in another (the C one,
``benchmarks/loadgen.c``, built on first use; ``benchmarks/loadgen.py`` if
there is no C compiler; ``redis-benchmark`` for the RESP scenarios), and
kills both. With ``taskset`` and two or more CPUs, the server is pinned to one
core and the load generator to another. Runs are interleaved (run 1 of every
server, then run 2...), so a burst of load from elsewhere on the machine hits
every server alike; ratios are taken within one run, then their median
reported.

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
import select
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import certs, native
from .catalog import SERVERS, ServerSpec, poe_available
from .loadgen import raise_nofile
from .report import plot, render_markdown, render_tables, update_docs
from .results import Cell, Results, machine_info, results_from_json, results_to_json
from .scenarios import QUICK_SCENARIOS, SCENARIOS, Scenario

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PYTHON = sys.executable


@dataclass
class Setup:
    """How every cell of a run is measured."""

    runs: int
    duration: float
    warmup: float
    idle_conns: int
    server_cpu: int | None
    client_cpu: int | None
    loadgen: tuple[str, ...] = (PYTHON, "-m", "benchmarks.loadgen")
    programs: dict[str, Path] = field(default_factory=dict[str, Path])  # built C servers
    tls: tuple[Path, Path] | None = None  # certificate and key
    notes: list[str] = field(default_factory=list[str])
    skipped: dict[str, str] = field(default_factory=dict[str, str])  # server or scenario: why


# -- processes ---------------------------------------------------------------

_children: list[subprocess.Popen[bytes]] = []


def _kill(proc: subprocess.Popen[bytes], wait: float = 2.0) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            proc.wait(wait)
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


def server_command(spec: ServerSpec, scenario: Scenario, setup: Setup) -> list[str]:
    """The server's command line for ``scenario`` (the mode flags of benchmarks.servers)."""
    command = [str(setup.programs[spec.native])] if spec.native else list(spec.command)
    if spec.external:
        return command
    if scenario.protocol == "tls":
        assert setup.tls is not None
        return [*command, "--tls", *map(str, setup.tls)]
    if scenario.protocol in ("bulk", "resp"):
        return [*command, f"--{scenario.protocol}"]
    return command


@contextlib.contextmanager
def running_server(
    spec: ServerSpec,
    command: list[str],
    cpu: int | None,
    logdir: Path,
    timeout: float = 30.0,
    stop_wait: float = 2.0,
) -> Generator[tuple[int, int], None, None]:
    """Start ``spec``; yield ``(port, pid)``; kill it on exit (always).

    ``timeout``: for it to listen; ``stop_wait``: for it to exit once
    terminated (SIGTERM), before it is killed.
    """
    port = _free_port() if spec.external else 0
    command = [part.replace("{port}", str(port)) for part in command]
    log = open(logdir / f"{spec.name}.log", "ab")  # noqa: SIM115
    proc = subprocess.Popen(
        [*_pin(cpu), *command],
        stdout=log if spec.external else subprocess.PIPE,
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
        if spec.external:
            _wait_listening(proc, port, timeout)
        else:
            port = _read_port(proc, timeout)
        yield port, proc.pid  # taskset execs the command: same pid
        if proc.poll() is not None:
            raise ServerFailed(f"exited with status {proc.returncode} during the run")
    finally:
        _kill(proc, stop_wait)
        log.close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_listening(proc: subprocess.Popen[bytes], port: int, timeout: float) -> None:
    """Wait until a program that was told its port accepts connections on it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServerFailed(f"exited with status {proc.returncode} before listening")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1.0).close()
            return
        except OSError:
            time.sleep(0.05)  # polling a port the program was told: nothing to wait on
    raise ServerFailed(f"did not listen on port {port} within {timeout:.0f} s")


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


def client_command(scenario: Scenario, setup: Setup, port: int, pid: int) -> list[str]:
    """The load generator's command line (redis-benchmark's driver for RESP)."""
    if scenario.client == "resp":
        head = [PYTHON, "-m", "benchmarks.resp_bench"]
    else:
        head = list(setup.loadgen)
    args = list(scenario.args)
    if scenario.key == "idle":
        args += ["--conns", str(setup.idle_conns)]
    return [
        *_pin(setup.client_cpu),
        *head,
        *args,
        *("--port", str(port), "--duration", str(setup.duration)),
        *("--warmup", str(setup.warmup), "--server-pid", str(pid)),
    ]


def run_client(command: list[str], timeout: float) -> dict[str, Any]:
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, cwd=ROOT
    )
    _children.append(proc)
    try:
        out, err = proc.communicate(timeout=timeout)
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


def run_cell(spec: ServerSpec, scenario: Scenario, setup: Setup, logdir: Path) -> dict[str, Any]:
    """One run of one server in one scenario: the client's JSON, or an error."""
    budget = setup.duration + setup.warmup
    timeout = 3 * budget + 120 if scenario.client == "resp" else budget + 90
    command = server_command(spec, scenario, setup)
    try:
        with running_server(spec, command, setup.server_cpu, logdir) as (port, pid):
            return run_client(client_command(scenario, setup, port, pid), timeout)
    except ServerFailed as exc:
        result: dict[str, Any] = {"error": f"server: {exc}"}
        log = logdir / f"{spec.name}.log"
        if log.exists():
            result["log"] = log.read_text(errors="replace")[-500:]
        return result


def run_all(
    servers: Sequence[ServerSpec],
    scenarios: Sequence[Scenario],
    setup: Setup,
    command: str,
    logdir: Path,
    verbose: bool = True,
) -> Results:
    cells: dict[tuple[str, str], Cell] = {}
    results = Results(
        servers=[s.name for s in servers],
        scenarios=[s.key for s in scenarios],
        cells=cells,
        runs=setup.runs,
        duration=setup.duration,
        warmup=setup.warmup,
        idle_conns=setup.idle_conns,
        command=command,
        machine=machine_info(),
        pinned=(
            f"server on CPU {setup.server_cpu}, load generator on CPU {setup.client_cpu} (taskset)"
            if setup.server_cpu is not None
            else "not pinned (taskset missing or a single CPU)"
        ),
        skipped=setup.skipped,
        notes=setup.notes,
        loads=[_load()],
        started=time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    )
    for run in range(setup.runs):
        for scenario in scenarios:
            for spec in servers:
                if not spec.runs(scenario.key, scenario.protocol):
                    continue
                cell = cells.setdefault((spec.name, scenario.key), Cell(spec.name, scenario.key))
                results.loads.append(_load())
                cell.runs.append(run_cell(spec, scenario, setup, logdir))
                if verbose:
                    _progress(run, setup.runs, scenario, spec, cell.runs[-1])
    results.loads.append(_load())
    results.finished = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    return results


def _load() -> float:
    return os.getloadavg()[0]


def _progress(run: int, runs: int, scenario: Scenario, spec: ServerSpec, r: dict[str, Any]) -> None:
    if "error" in r:
        text = f"ERROR {r['error']}"
    elif scenario.key == "idle":
        text = f"{r['kib_per_conn']:.1f} KiB/conn"
    else:
        text = f"{r['rate']:>10,.0f} {scenario.columns[0].head}"
        if r.get("cpu_util") is not None:
            text += f"  cpu {r['cpu_util'] * 100:.0f} %"
        if r.get("cpu_us"):
            text += f" {r['cpu_us']:.1f} µs/msg"
        if r.get("p50_us") is not None:
            text += f"  p50 {r['p50_us']:.0f} µs p99 {r['p99_us']:.0f} µs"
    print(
        f"[run {run + 1}/{runs}] {scenario.key:<8} {spec.name:<24} {text}  (load {_load():.2f})",
        flush=True,
    )


# -- what can run here ---------------------------------------------------------


def _drop_scenarios(keys: list[str], setup: Setup, doomed: list[str], why: str) -> list[str]:
    for key in doomed:
        if key in keys:
            setup.skipped[key] = why
    return [k for k in keys if k not in doomed]


def prepare_loadgen(keys: list[str], setup: Setup, use_c: bool) -> list[str]:
    """The C load generator if it builds, else the Python one; the scenarios that can run."""
    why = "--loadgen python"
    if use_c:
        try:
            program = native.build("loadgen")
        except native.NativeUnavailable as exc:
            why = str(exc)
        else:
            setup.loadgen = (str(program.path),)
            setup.notes.append(
                f"Load generator: C, benchmarks/loadgen.c ({program.path.name}"
                f"{', with OpenSSL' if program.tls else ', no TLS: no OpenSSL headers'})"
            )
            if not program.tls:
                tls = [k for k in keys if SCENARIOS[k].protocol == "tls"]
                keys = _drop_scenarios(
                    keys, setup, tls, "the C load generator was built without TLS"
                )
            return keys
    setup.notes.append(
        f"Load generator: Python, benchmarks/loadgen.py ({why}); it caps the pipelined "
        "scenario for the fastest servers"
    )
    python_only = [k for k in keys if not SCENARIOS[k].python_loadgen]
    return _drop_scenarios(keys, setup, python_only, f"needs the C load generator ({why})")


def prepare_scenarios(keys: list[str], setup: Setup, tmp: Path) -> list[str]:
    """Drop the scenarios whose certificate or client cannot be had here; make the cert."""
    tls = [k for k in keys if SCENARIOS[k].protocol == "tls"]
    if tls and (why := certs.unavailable()) is not None:
        keys = _drop_scenarios(keys, setup, tls, why)
    elif tls:
        setup.tls = certs.make(tmp)
    resp = [k for k in keys if SCENARIOS[k].client == "resp"]
    if resp and shutil.which("redis-benchmark") is None:
        why = "redis-benchmark is not installed (apt-get install redis-tools)"
        keys = _drop_scenarios(keys, setup, resp, why)
    return keys


def prepare_servers(servers: list[ServerSpec], keys: list[str], setup: Setup) -> list[ServerSpec]:
    """The servers that can run here and have a scenario to run (the C server built)."""
    kept: list[ServerSpec] = []
    for spec in servers:
        why = _unavailable(spec, setup)
        spec = SERVERS.get(spec.name, spec)  # the C server may have lost TLS
        if why is not None:
            setup.skipped[spec.name] = why
        elif any(spec.runs(k, SCENARIOS[k].protocol) for k in keys):
            kept.append(spec)
    return kept


def _unavailable(spec: ServerSpec, setup: Setup) -> str | None:
    """None if ``spec`` can run here (building it if it is C), else why not."""
    if spec.name == "poe":
        return poe_available()
    if spec.external and shutil.which(spec.command[0]) is None:
        return f"{spec.command[0]} is not installed"
    if spec.native is None:
        return None
    try:
        program = native.build(spec.native)
    except native.NativeUnavailable as exc:
        return str(exc)
    setup.programs[spec.native] = program.path
    if not program.tls and "tls" in spec.protocols:
        SERVERS[spec.name] = dataclasses.replace(spec, protocols=spec.protocols - {"tls"})
        setup.notes.append(f"`{spec.name}` was built without TLS (no OpenSSL headers)")
    return None


# -- the command line ----------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="tcpkit against hand-written servers on every backend, and a C server.",
    )
    _measure_options(parser)
    _output_options(parser)
    parser.add_argument("--list", action="store_true", help="list servers and scenarios")
    return parser.parse_args(argv)


def _measure_options(parser: argparse.ArgumentParser) -> None:
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
    parser.add_argument(
        "--loadgen",
        choices=("c", "python"),
        default="c",
        help="the load generator: C (built on first use; the default) or benchmarks/loadgen.py",
    )
    parser.add_argument("--server-cpu", type=int, default=0)
    parser.add_argument("--client-cpu", type=int, default=1)
    parser.add_argument(
        "--baseline",
        type=Path,
        help="also run the chosen tcpkit servers with tcpkit imported from BASELINE/src "
        "(named base:<server>): before/after ratios measured in the same run",
    )


def _output_options(parser: argparse.ArgumentParser) -> None:
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
    parser.add_argument("--note", help="a sentence to print under the header of RESULTS.md")
    parser.add_argument(
        "--from-json",
        type=Path,
        help="measure nothing: render the report (and --docs) from a --json file",
    )


def select_servers(only: str | None) -> list[ServerSpec]:
    if not only:
        return list(SERVERS.values())
    patterns = [p.strip() for p in only.split(",") if p.strip()]
    chosen = [s for s in SERVERS.values() if any(fnmatch.fnmatch(s.name, p) for p in patterns)]
    unknown = [p for p in patterns if not any(fnmatch.fnmatch(n, p) for n in SERVERS)]
    if unknown:
        raise SystemExit(f"unknown server(s): {', '.join(unknown)}; see --list")
    return chosen


def add_baselines(servers: list[ServerSpec], tree: Path) -> list[ServerSpec]:
    """Each tcpkit server again, right after it, importing tcpkit from ``tree``/src."""
    src = (tree / "src").resolve()
    if not (src / "tcpkit" / "__init__.py").exists():
        raise SystemExit(f"--baseline: no tcpkit package in {src}")
    out: list[ServerSpec] = []
    for spec in servers:
        out.append(spec)
        if spec.tcpkit:
            base = dataclasses.replace(
                spec,
                name=f"base:{spec.name}",
                description=f"{spec.description}; tcpkit from {src}",
                src=str(src),
            )
            SERVERS[base.name] = base
            out.append(base)
    return out


def list_all() -> int:
    for spec in SERVERS.values():
        speaks = ",".join(sorted(spec.protocols))
        print(f"{spec.name:<24} {spec.backend:<8} {speaks:<20} {spec.description}")
    for s in SCENARIOS.values():
        print(f"scenario {s.key:<9} {s.protocol:<5} {s.title}")
    return 0


def _scenario_keys(args: argparse.Namespace) -> list[str]:
    if args.scenarios:
        keys = [k.strip() for k in args.scenarios.split(",")]
    else:
        keys = list(QUICK_SCENARIOS if args.quick else SCENARIOS)
    bad = [k for k in keys if k not in SCENARIOS]
    if bad:
        raise SystemExit(f"unknown scenario(s): {', '.join(bad)}; see --list")
    return keys


_DEFAULTS = {False: (3, 5.0, 1.0, 5000), True: (1, 0.5, 0.2, 500)}
"""(runs, duration, warm-up, idle connections), without and with --quick."""


def make_setup(args: argparse.Namespace) -> Setup:
    runs, duration, warmup, idle_conns = _DEFAULTS[bool(args.quick)]
    pin = shutil.which("taskset") is not None and (os.cpu_count() or 1) >= 2
    return Setup(
        runs=args.runs or runs,
        duration=args.duration or duration,
        warmup=warmup if args.warmup is None else args.warmup,
        idle_conns=args.idle_conns or idle_conns,
        server_cpu=args.server_cpu if pin else None,
        client_cpu=args.client_cpu if pin else None,
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.list:
        return list_all()
    if args.from_json is not None:
        results = results_from_json(json.loads(args.from_json.read_text()))
        if args.note:
            results.note = args.note
        return report(results, args)
    setup = make_setup(args)
    servers = select_servers(args.only)
    if args.baseline is not None:
        servers = add_baselines(servers, args.baseline)
    limit = raise_nofile()
    keys = _scenario_keys(args)
    if "idle" in keys and limit < setup.idle_conns + 200:
        raise SystemExit(
            f"RLIMIT_NOFILE is {limit}: too low for {setup.idle_conns} idle connections"
        )
    shown = sys.argv[1:] if argv is None else list(argv)
    command = " ".join(["python -m benchmarks", *([shlex.join(shown)] if shown else [])])

    def on_signal(signum: int, _frame: Any) -> None:
        raise SystemExit(128 + signum)

    old = signal.signal(signal.SIGTERM, on_signal)
    atexit.register(kill_all)
    try:
        with tempfile.TemporaryDirectory(prefix="tcpkit-bench-") as tmp:
            keys = prepare_loadgen(keys, setup, use_c=args.loadgen == "c")
            keys = prepare_scenarios(keys, setup, Path(tmp))
            servers = prepare_servers(servers, keys, setup)
            results = run_all(servers, [SCENARIOS[k] for k in keys], setup, command, Path(tmp))
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
