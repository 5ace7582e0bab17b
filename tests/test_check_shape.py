"""tools/check_shape.py: functions over 50 lines or complexity 12 are flagged, others not."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from tools import check_shape

ROOT = Path(__file__).resolve().parent.parent


def _long(name: str, statements: int, docstring_lines: int = 0) -> str:
    """A function of ``statements`` + 1 lines (``def`` included), plus a docstring."""
    doc = []
    if docstring_lines:
        doc = ['    """Doc.', *["    more"] * (docstring_lines - 2), '    """']
    body = [f"    x{i} = {i}" for i in range(statements - 1)] + ["    return 0"]
    return "\n".join([f"def {name}() -> int:", *doc, *body]) + "\n"


def _complex(name: str, branches: int) -> str:
    """A function of complexity ``branches`` + 1."""
    body = [f"    if x == {i}:\n        return {i}" for i in range(branches)]
    return "\n".join([f"def {name}(x: int) -> int:", *body, "    return -1"]) + "\n"


def _write(tmp_path: Path, text: str, name: str = "mod.py") -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def _shapes(tmp_path: Path) -> dict[str, check_shape.Shape]:
    return {shape.where: shape for shape in check_shape.measure(tmp_path)}


def test_lengths_count_from_def_to_the_end_without_the_docstring(tmp_path: Path) -> None:
    _write(tmp_path, _long("fifty", 49) + _long("documented", 49, docstring_lines=30))
    shapes = _shapes(tmp_path)
    assert shapes["mod.py:fifty"].lines == 50
    assert shapes["mod.py:documented"].lines == 50
    assert check_shape.report(list(shapes.values()), allowed=frozenset()) == []


def test_a_long_function_is_flagged(tmp_path: Path) -> None:
    _write(tmp_path, _long("short", 10) + _long("too_long", 50))
    found = check_shape.report(check_shape.measure(tmp_path), allowed=frozenset())
    assert found == ["mod.py:too_long (line 12): 51 lines > 50"]


def test_a_complex_function_is_flagged(tmp_path: Path) -> None:
    _write(tmp_path, _complex("twelve", 11) + _complex("thirteen", 12))
    shapes = _shapes(tmp_path)
    assert shapes["mod.py:twelve"].complexity == 12
    assert shapes["mod.py:thirteen"].complexity == 13
    found = check_shape.report(list(shapes.values()), allowed=frozenset())
    assert found == [f"mod.py:thirteen (line {shapes['mod.py:thirteen'].line}): complexity 13 > 12"]


def test_methods_and_nested_functions_are_measured_on_their_own(tmp_path: Path) -> None:
    nested = textwrap.indent(_complex("inner", 12), "        ")
    text = "def outer() -> None:\n    class Local:\n" + nested.replace("(x: int)", "(self, x: int)")
    _write(tmp_path, text, "pkg/deep.py")
    shapes = _shapes(tmp_path)
    assert shapes["pkg/deep.py:outer"].complexity == 1
    assert shapes["pkg/deep.py:outer.Local.inner"].complexity == 13
    found = check_shape.report(list(shapes.values()), allowed=frozenset())
    assert found == ["pkg/deep.py:outer.Local.inner (line 3): complexity 13 > 12"]


def test_the_allowlist_silences_its_entries_and_reports_stale_ones(tmp_path: Path) -> None:
    _write(tmp_path, _complex("thirteen", 12) + _long("small", 3))
    shapes = check_shape.measure(tmp_path)
    assert check_shape.report(shapes, allowed=frozenset({"mod.py:thirteen"})) == []
    stale = {"mod.py:thirteen", "mod.py:small", "mod.py:renamed", "other.py:elsewhere"}
    assert check_shape.report(shapes, allowed=frozenset(stale)) == [
        "mod.py:renamed: in ALLOWED but within the limits (or gone): remove it",
        "mod.py:small: in ALLOWED but within the limits (or gone): remove it",
    ]


def test_the_command_exits_1_with_the_offenders_and_0_without(tmp_path: Path) -> None:
    script = str(ROOT / "tools" / "check_shape.py")
    bad, good = tmp_path / "bad", tmp_path / "good"
    _write(bad, _long("too_long", 60))
    _write(good, _long("small", 10))
    failed = subprocess.run(
        [sys.executable, script, str(bad)], capture_output=True, text=True, check=False
    )
    assert failed.returncode == 1
    assert "mod.py:too_long (line 1): 61 lines > 50" in failed.stdout.splitlines()
    passed = subprocess.run(
        [sys.executable, script, str(good)], capture_output=True, text=True, check=False
    )
    assert (passed.returncode, passed.stdout) == (0, "")
