"""``python -m benchmarks`` runs end to end and writes its tables, figures and JSON.

This proves the harness works (servers start in every mode, the load
generators talk to them, every process is cleaned up, the report is written);
it never asserts anything about timing: a rate above zero only says that
replies came back.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="the load generator uses epoll and /proc"
)

# A run that proves a scenario works: 0.2 s per cell after 0.05 s of warm-up.
TINY = ["--runs", "1", "--duration", "0.2", "--warmup", "0.05", "--no-plot"]


def bench(
    *args: str, timeout: float = 55, module: str = "benchmarks"
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "src")])}
    result = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def c_compiler() -> str | None:
    """None if the C programs build here, else why not."""
    from benchmarks import native

    try:
        native.build("loadgen")
        native.build("epoll_echo")
    except native.NativeUnavailable as exc:
        return str(exc)
    return None


def runs_by_cell(path: Path) -> dict[tuple[str, str], dict[str, Any]]:
    data = json.loads(path.read_text())
    return {(c["server"], c["scenario"]): c["runs"][0] for c in data["cells"]}


def test_quick_benchmark_produces_the_table(tmp_path: Path) -> None:
    output = tmp_path / "RESULTS.md"
    plots = tmp_path / "plots"
    bench(
        "--quick",
        "--only",
        "tcpkit-asyncio,anyio-asyncio",
        "--idle-conns",
        "200",
        "--output",
        str(output),
        "--plots",
        str(plots),
    )
    text = output.read_text()
    assert "python -m benchmarks --quick" in text
    assert "Machine load" in text
    assert "### 1 conn ping-pong" in text and "### idle RSS" in text
    headers = [line for line in text.splitlines() if line.startswith("| server | backend")]
    assert len(headers) == 4, headers  # a table per scenario of --quick
    rows: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("| `"):
            rows.setdefault(line.split("|")[1].strip(), line)  # the first table's row
    for name in ("`tcpkit-asyncio`", "`anyio-asyncio`"):
        assert name in rows, text
        assert "error" not in rows[name], text
    assert "Ratios" in text and "`anyio-asyncio`" in text
    assert "Errors:" not in text, text
    figures = sorted(p.name for p in plots.glob("*.png"))
    if figures:  # matplotlib is optional (the bench dependency group)
        assert figures == ["conn.png", "idle.png", "pipe.png", "pp1.png"], figures
        assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in plots.glob("*.png"))
        assert "](plots/pp1.png)" in text


# The JSON fields each new scenario reports (besides rate and count).
FIELDS = {
    "sparse50": ("cpu_us", "cpu_util", "p50_us", "p99_us", "late", "offered"),
    "sparse5": ("cpu_us", "cpu_util", "p50_us", "p99_us", "late", "offered"),
    "tls1": ("cpu_us", "p50_us", "p99_us"),
    "tlspipe": ("cpu_us",),
    "tlsconn": ("cpu_us", "errors"),
    "bulk": ("cpu_us", "msg_rate", "size"),
    "resp": ("cpu_us", "p50_us", "p99_us", "tests"),
    "resppipe": ("cpu_us", "p50_us", "p99_us", "tests"),
}


def test_new_scenarios_report_their_fields(tmp_path: Path) -> None:
    """Sparse load, TLS, bulk and RESP: tcpkit, the C server and Redis each produce a row."""
    if (why := c_compiler()) is not None:
        pytest.skip(why)
    output, raw = tmp_path / "RESULTS.md", tmp_path / "results.json"
    servers = "tcpkit-asyncio,c-epoll,redis-server"
    bench(*TINY, "--only", servers, "--scenarios", ",".join(FIELDS), "--output", str(output),
          "--json", str(raw))  # fmt: skip
    text, runs = output.read_text(), runs_by_cell(raw)
    redis = shutil.which("redis-server") and shutil.which("redis-benchmark")
    for scenario, fields in FIELDS.items():
        if scenario.startswith("resp") and not redis:
            assert f"Skipped `{scenario}`" in text or "Skipped `redis-server`" in text, text
            continue
        reference = "redis-server" if scenario.startswith("resp") else "c-epoll"
        for server in ("tcpkit-asyncio", reference):
            result = runs[(server, scenario)]
            assert "error" not in result, (server, scenario, result)
            assert result["rate"] > 0 and result["count"] > 0, (server, scenario, result)
            assert all(result.get(f) is not None for f in fields), (server, scenario, result)
    assert runs[("tcpkit-asyncio", "bulk")]["size"] == 65536
    assert "Errors:" not in text, text
    assert "Load generator: C" in text
    assert "### Ratios: TLS, bulk transfer, Redis protocol" in text


def test_baseline_runs_every_tcpkit_mode(tmp_path: Path) -> None:
    """--baseline: base:tcpkit-* rows, from another tree, in the bulk and RESP scenarios."""
    if (why := c_compiler()) is not None:
        pytest.skip(why)
    scenarios = ["bulk"] + (["resp"] if shutil.which("redis-benchmark") else [])
    output, raw = tmp_path / "RESULTS.md", tmp_path / "results.json"
    bench(*TINY, "--only", "tcpkit-trio", "--scenarios", ",".join(scenarios), "--baseline",
          str(ROOT), "--output", str(output), "--json", str(raw))  # fmt: skip
    runs = runs_by_cell(raw)
    for scenario in scenarios:
        for server in ("tcpkit-trio", "base:tcpkit-trio"):
            assert runs[(server, scenario)]["rate"] > 0, (server, scenario, runs)
    assert "| `tcpkit-trio` | `base:tcpkit-trio` |" in output.read_text()


def test_python_load_generator_fallback(tmp_path: Path) -> None:
    """--loadgen python: the scenarios it supports run; the others are skipped, with why."""
    if (why := c_compiler()) is not None:
        pytest.skip(why)
    output = tmp_path / "RESULTS.md"
    bench(*TINY, "--loadgen", "python", "--only", "c-epoll", "--scenarios", "pp1,sparse5",
          "--output", str(output))  # fmt: skip
    text = output.read_text()
    assert "Load generator: Python" in text
    assert "### 1 conn ping-pong" in text and "| `c-epoll` | c |" in text
    assert "Skipped `sparse5`: needs the C load generator (--loadgen python)" in text, text
    assert "### sparse" not in text


@pytest.mark.slow
@pytest.mark.timeout(600)  # (valgrind: each server starts in 10-20 s)
@pytest.mark.skipif(
    shutil.which("valgrind") is None, reason="valgrind is not installed (apt-get install valgrind)"
)
def test_instruction_counts(tmp_path: Path) -> None:
    """``python -m benchmarks.icount`` counts every workload of a tcpkit server and its
    reference under callgrind, and writes both tables (counts, ratios)."""
    out = tmp_path / "INSTRUCTIONS.md"
    bench(
        "--only",
        "tcpkit-trio,trio-serve-tcp",
        "--quick",
        "--jobs",
        "2",
        "--output",
        str(out),
        module="benchmarks.icount",
        timeout=600,
    )
    counts_table, ratios_table = out.read_text().split("Ratios:")
    rows = {
        cells[0]: cells[1:]
        for line in counts_table.splitlines()
        if line.startswith("| `")
        for cells in [[c.strip(" `") for c in line.strip("|").split("|")]]
    }
    for name in ("tcpkit-trio", "trio-serve-tcp"):
        backend, *counts = rows[name]
        assert backend == "trio"
        assert len(counts) == 3
        assert all(float(c.rstrip("k").replace(",", "")) > 0 for c in counts), counts
    assert "| `tcpkit-trio` | `trio-serve-tcp` |" in ratios_table
