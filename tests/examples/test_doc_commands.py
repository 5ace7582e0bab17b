"""Every shell command in the docs and the examples' docstrings works when copied.

The rules (which block talks to which server, expected output, terminal
clients, markers) are in ``tests/doc_commands.py``. Here the commands run with
the development venv's ``tcpkit`` and ``python``; ``tests/test_package.py``
runs the getting-started page and every docstring again against a wheel
installed in a fresh venv.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest
from doc_commands import ROOT, Script, docstring_script, example_paths, page_script, run_script

PAGES = [*sorted((ROOT / "docs").glob("*.md")), ROOT / "README.md", ROOT / "PYPI.md"]
SCRIPTS = [docstring_script(p) for p in example_paths()] + [page_script(p) for p in PAGES]


@pytest.mark.parametrize("script", [s for s in SCRIPTS if s.commands], ids=lambda s: s.name)
def test_commands_work_as_written(script: Script, tmp_path: Path) -> None:
    runner = run_script(script, tmp_path, Path(sys.executable).parent, may_install=False)
    print("ran:", *runner.ran, "not run:", *runner.not_run, sep="\n  ")  # pytest -rP shows it
    assert runner.ran, f"{script.name}: no command ran"


@pytest.mark.parametrize("path", list(example_paths()), ids=lambda p: p.name)
def test_docstring_reads_as_written(path: Path) -> None:
    """The docstring in the file is the text ``help()`` shows: no escapes to get wrong."""
    module = ast.parse(path.read_text())
    node = module.body[0]
    assert isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
    source = ast.get_source_segment(path.read_text(), node.value) or ""
    body = source.lstrip("rR")[3:-3]
    assert body == node.value.value, f"{path.name}: write the docstring as r'''...''' raw text"


def test_every_example_says_how_to_try_it() -> None:
    for script in SCRIPTS[: len(list(example_paths()))]:
        kinds = {c.kind for c in script.commands}
        assert {"server"} < kinds, f"{script.name}: the docstring shows no command to try"


def test_skipped_blocks_say_why() -> None:
    for script in SCRIPTS:
        for skipped in script.skipped:
            assert len(skipped.reason) > 10, f"{skipped.where}: say why the block is not run"
