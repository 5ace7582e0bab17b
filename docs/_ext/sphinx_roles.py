"""A griffe extension: render the reST roles of tcpkit's docstrings as cross-references.

tcpkit's docstrings are Google style but name other objects with Sphinx roles
(``:class:`~tcpkit.Lines```, ``:meth:`take_pending```), which Markdown would
show as raw text. This extension rewrites each role, once the package is
loaded, into an optional autorefs cross-reference when the name resolves to a
tcpkit object, and into inline code otherwise (``:mod:`struct```). Optional
cross-references to objects that no page renders are shown as plain code, so
``mkdocs build --strict`` never fails on them.

A reST literal-block marker (a paragraph ending in ``::``) becomes a single
colon, since the indented block after it is already a Markdown code block.
"""

from __future__ import annotations

import html
import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:class|meth|func|data|attr|mod|exc|obj|const):`(?P<target>[^`]+)`")
LITERAL_MARKER = re.compile(r"(?<=\S)::(?=\n\n[ \t])")


class SphinxRoles(griffe.Extension):
    """Rewrite Sphinx roles in every docstring of a loaded package."""

    def on_package(self, *, pkg: griffe.Module, loader: griffe.GriffeLoader, **kwargs: Any) -> None:
        for obj in _walk(pkg):
            if obj.docstring is not None:
                obj.docstring.value = _rewrite(obj.docstring.value, obj, loader)


def _rewrite(text: str, scope: griffe.Object, loader: griffe.GriffeLoader) -> str:
    text = ROLE.sub(lambda match: _reference(match["target"], scope, loader), text)
    return LITERAL_MARKER.sub(":", text)


def _walk(obj: griffe.Object) -> list[griffe.Object]:
    found = [obj]
    for member in obj.members.values():
        if not member.is_alias and isinstance(member, griffe.Object):
            found.extend(_walk(member))
    return found


def _reference(target: str, scope: griffe.Object, loader: griffe.GriffeLoader) -> str:
    short = target.startswith("~")
    name = target.lstrip("~.")
    title = name.rsplit(".", 1)[-1] if short else name
    path = _resolve(name, scope, loader)
    code = f"<code>{html.escape(title)}</code>"
    if path is None:
        return code
    return f'<autoref identifier="{html.escape(path)}" optional>{code}</autoref>'


def _resolve(name: str, scope: griffe.Object, loader: griffe.GriffeLoader) -> str | None:
    """The canonical path of ``name`` as seen from ``scope``, or None."""
    candidates = [name]
    first, _, rest = name.partition(".")
    current: griffe.Object | None = scope
    while current is not None:
        if first in current.members:
            candidates.append(f"{current.path}.{name}")
        try:
            resolved = current.resolve(first)
        except (griffe.NameResolutionError, AttributeError):
            resolved = None
        if resolved:
            candidates.append(f"{resolved}.{rest}" if rest else resolved)
        current = current.parent
    for candidate in candidates:
        try:
            found = loader.modules_collection.get_member(candidate)
            return str(found.final_target.path if found.is_alias else found.path)
        except _UNRESOLVED:
            continue
    return None


_UNRESOLVED = (
    KeyError,
    ValueError,
    AttributeError,
    griffe.AliasResolutionError,
    griffe.CyclicAliasError,
)
