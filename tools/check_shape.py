"""Function shape check: no function over 50 lines or over cyclomatic complexity 12.

``python tools/check_shape.py [DIR]`` (default ``src/tcpkit``) prints every
function of the ``.py`` files under ``DIR`` that exceeds a limit, and exits 1
if there is one (``make lint`` runs it). A function's length is its lines from
``def`` to its last line, decorators and docstring not counted; its complexity
is radon's. Every function is measured on its own, nested ones and methods of
classes defined inside functions included (radon's ``cc_visit`` of a whole file
skips the latter).
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, cast

from radon import complexity as radon_cc  # type: ignore[import-untyped]

MAX_LINES = 50
MAX_COMPLEXITY = 12

# Functions allowed to exceed a limit, by "path under DIR:qualified name"; an
# entry that no longer exceeds is reported, so the list stays exact. Empty: keep it so.
ALLOWED: frozenset[str] = frozenset()

FunctionNode = ast.FunctionDef | ast.AsyncFunctionDef


class _Block(Protocol):
    complexity: int


# radon has no type information: its one function used here, typed.
_cc_visit_ast = cast(
    "Callable[[ast.AST], list[_Block]]",
    radon_cc.cc_visit_ast,  # pyright: ignore[reportUnknownMemberType]
)


@dataclass(frozen=True)
class Shape:
    """One function's measures: ``where`` is ``path:qualified.name``, ``line`` its ``def``."""

    where: str
    line: int
    lines: int
    complexity: int

    def problems(self) -> list[str]:
        """What exceeds a limit, in words (empty if nothing does)."""
        out: list[str] = []
        if self.lines > MAX_LINES:
            out.append(f"{self.lines} lines > {MAX_LINES}")
        if self.complexity > MAX_COMPLEXITY:
            out.append(f"complexity {self.complexity} > {MAX_COMPLEXITY}")
        return out


def _length(node: FunctionNode) -> int:
    """Lines from ``def`` to the end, minus the docstring's."""
    assert node.end_lineno is not None
    lines = node.end_lineno - node.lineno + 1
    first = node.body[0]
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
        docstring = isinstance(first.value.value, str)
        if docstring and first.end_lineno is not None:
            lines -= first.end_lineno - first.lineno + 1
    return lines


def _complexity(node: FunctionNode) -> int:
    """Radon's cyclomatic complexity of one function (its nested functions not added)."""
    [block] = _cc_visit_ast(ast.Module(body=[node], type_ignores=[]))
    return block.complexity


def _functions(tree: ast.AST, prefix: str = "") -> Iterator[tuple[str, FunctionNode]]:
    """Every function and method under ``tree`` with its dotted name (``Class.method``)."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, FunctionNode | ast.ClassDef):
            name = prefix + node.name
            if not isinstance(node, ast.ClassDef):
                yield name, node
            yield from _functions(node, name + ".")
        else:
            yield from _functions(node, prefix)


def measure(root: Path) -> list[Shape]:
    """The shape of every function in the ``.py`` files under ``root``, in file order."""
    shapes: list[Shape] = []
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        module = path.relative_to(root).as_posix()
        for name, node in _functions(tree):
            where = f"{module}:{name}"
            shapes.append(Shape(where, node.lineno, _length(node), _complexity(node)))
    return shapes


def report(shapes: list[Shape], allowed: frozenset[str] = ALLOWED) -> list[str]:
    """One line per function over a limit (not allowed), and per allowed one that is not.

    An allowed name is checked only if its file was measured.
    """
    lines: list[str] = []
    over: set[str] = set()
    for shape in shapes:
        problems = shape.problems()
        if problems:
            over.add(shape.where)
        if problems and shape.where not in allowed:
            lines.append(f"{shape.where} (line {shape.line}): {', '.join(problems)}")
    files = {shape.where.partition(":")[0] for shape in shapes}
    for stale in sorted(allowed - over):
        if stale.partition(":")[0] in files:
            lines.append(f"{stale}: in ALLOWED but within the limits (or gone): remove it")
    return lines


def main(argv: list[str]) -> int:
    """Check the directory ``argv[0]`` (default ``src/tcpkit``); the exit status."""
    root = Path(argv[0] if argv else "src/tcpkit")
    found = report(measure(root))
    for line in found:
        print(line)
    if found:
        print(f"{len(found)} function shape problem(s) under {root}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
