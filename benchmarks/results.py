"""What a run measured: a cell per server and scenario, each with its runs' JSON lines.

Ratios are taken within one run (both servers measured minutes apart at
most), then their median is reported. ``--json`` saves a run, and
``--from-json`` renders it again, baselines included.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import platform
import statistics
from dataclasses import dataclass, field
from typing import Any

from .catalog import SERVERS


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
    notes: list[str] = field(default_factory=list[str])  # the load generator, skipped scenarios

    def cell(self, server: str, scenario: str) -> Cell | None:
        return self.cells.get((server, scenario))

    def ratio(self, server: str, ref: str, scenario: str, key: str = "rate") -> float | None:
        """Median over runs of the per-run ratio server/ref of ``key`` (both from that run)."""
        a, b = self.cell(server, scenario), self.cell(ref, scenario)
        if a is None or b is None:
            return None
        ratios: list[float] = []
        for ra, rb in zip(a.runs, b.runs, strict=False):
            if "error" in ra or "error" in rb or not rb.get(key) or ra.get(key) is None:
                continue
            ratios.append(ra[key] / rb[key])
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


def machine_info() -> list[str]:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    versions: list[str] = []
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
