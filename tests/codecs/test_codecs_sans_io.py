"""Codecs are sans-IO: no module under tcpkit/codecs imports an I/O library."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import tcpkit.codecs

FORBIDDEN = {"anyio", "trio", "asyncio", "socket", "ssl", "selectors", "uvloop"}
CODECS_DIR = Path(tcpkit.codecs.__file__).parent
MODULES = sorted(CODECS_DIR.rglob("*.py"))


def imported_modules(tree: ast.AST) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):  # every import, at any depth (functions, TYPE_CHECKING...)
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, (ast.Name, ast.Attribute))
            and (node.func.id if isinstance(node.func, ast.Name) else node.func.attr)
            in {"__import__", "import_module"}
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            names.add(node.args[0].value)
    return names


def test_the_codec_modules_are_found() -> None:
    assert {path.name for path in MODULES} >= {
        "base.py",
        "lines.py",
        "raw.py",
        "fixed.py",
        "length.py",
        "netstrings.py",
        "json.py",
        "map.py",
        "filter.py",
    }


@pytest.mark.parametrize("path", MODULES, ids=lambda path: path.name)
def test_no_io_imports(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    top_level = {name.partition(".")[0] for name in imported_modules(tree)}
    assert not top_level & FORBIDDEN, f"{path.name} imports {sorted(top_level & FORBIDDEN)}"


def test_the_checker_sees_nested_and_dynamic_imports() -> None:
    source = (
        "import os\n"
        "def f():\n"
        "    import socket\n"
        "    from anyio.abc import ByteStream\n"
        "    importlib.import_module('trio')\n"
        "    __import__('ssl')\n"
        "from . import base\n"
    )
    assert {name.partition(".")[0] for name in imported_modules(ast.parse(source))} == {
        "os",
        "socket",
        "anyio",
        "trio",
        "ssl",
    }
