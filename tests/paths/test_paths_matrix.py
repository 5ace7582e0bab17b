"""The matrix itself: the covering subset covers every pair, the table names real checks."""

from __future__ import annotations

import ast
import itertools
from pathlib import Path as FsPath

from pathdiffs import KNOWN_DIFFERENCES
from pathmatrix import BACKENDS, DIMENSIONS, PAIRED, covering, full_product

HERE = FsPath(__file__).parent


def test_the_full_product_has_every_combination_once() -> None:
    rows = full_product()
    size = 1
    for values in DIMENSIONS.values():
        size *= len(values)
    assert len(rows) == len(set(rows)) == size == 144
    assert len({row.id for row in rows}) == size


def test_the_covering_subset_holds_every_pair_of_values_on_every_backend() -> None:
    rows = full_product()
    subset = covering(rows)
    assert subset == covering(rows)  # deterministic
    assert set(subset) <= set(rows)
    for backend in BACKENDS:
        mine = [r for r in subset if r.backend == backend]
        for a, b in itertools.combinations(PAIRED, 2):
            for va, vb in itertools.product(DIMENSIONS[a], DIMENSIONS[b]):
                assert any(getattr(r, a) == va and getattr(r, b) == vb for r in mine), (
                    backend,
                    (a, va),
                    (b, vb),
                )
    # 3 handler kinds x 4 streams is the least that holds every pair of those two.
    assert len(subset) == 3 * 4 * len(BACKENDS)


def test_a_filtered_matrix_is_covered_within_its_rows() -> None:
    rows = [r for r in full_product() if r.flushed]
    subset = covering(rows)
    assert all(r.flushed for r in subset)
    pairs = {(r.backend, r.handler, r.stream) for r in subset}
    assert len(pairs) == len(BACKENDS) * 3 * 4


def _check_names() -> set[str]:
    names: set[str] = set()
    for module in HERE.glob("test_*.py"):
        tree = ast.parse(module.read_text())
        names |= {
            node.name
            for node in tree.body
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.name.startswith("test_")
        }
    return names


def test_every_known_difference_names_existing_checks_and_hits_a_row() -> None:
    names = _check_names()
    rows = full_product()
    for difference in KNOWN_DIFFERENCES:
        assert set(difference.checks) <= names, difference.checks
        if difference.when is not None:
            assert any(difference.when(r) for r in rows), difference.reason
