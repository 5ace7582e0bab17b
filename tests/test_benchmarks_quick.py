"""``python -m benchmarks --quick`` runs end to end and writes its table and plot.

This proves the harness works (servers start, the load generator talks to
them, every process is cleaned up, the report is written); it never asserts
anything about timing.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="the load generator uses epoll and /proc"
)


def test_quick_benchmark_produces_the_table(tmp_path: Path) -> None:
    output = tmp_path / "RESULTS.md"
    plots = tmp_path / "plots"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "src")])}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks",
            "--quick",
            "--only",
            "tcpkit-asyncio,anyio-asyncio",
            "--idle-conns",
            "200",
            "--output",
            str(output),
            "--plots",
            str(plots),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=55,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
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
