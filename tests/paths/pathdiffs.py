"""The known path differences: one table, one entry per defect.

Each entry names the checks it affects and the rows (a predicate on
:class:`~pathmatrix.Path`; ``None``: every row, or a check with no path) where
the check fails today. The conftest marks those tests
``xfail(strict=True)``: the suite stays green, and a fix turns the xfail into
a failure (XPASS), a reminder to delete the entry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pathmatrix import Path


@dataclass(frozen=True)
class Difference:
    reason: str
    checks: tuple[str, ...]
    when: Callable[[Path], bool] | None = None
    raises: type[BaseException] | tuple[type[BaseException], ...] | None = None
    """How the check fails today (any other failure is reported as a failure)."""

    def hits(self, check: str, path: Path | None) -> bool:
        if check not in self.checks:
            return False
        return self.when is None or (path is not None and self.when(path))


KNOWN_DIFFERENCES: list[Difference] = []
"""Empty: every path behaves the same. It listed 13 differences when the suite
was written (issue 15: on_flushed after trio's writes, socket errors as empty
BrokenResourceErrors, in-memory resets read as EOF, chains of events piling
up output, TLS writes after a bare FIN escaping as unexpected errors,
``await server.shutdown()`` from handlers never returning, ``post``'s rule,
and what a custom acceptor got); see the git history of this file."""


def differences_for(check: str, path: Path | None) -> list[Difference]:
    return [d for d in KNOWN_DIFFERENCES if d.hits(check, path)]
