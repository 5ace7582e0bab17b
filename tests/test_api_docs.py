"""The API reference shows defaults a reader can type, never a private name.

The reference is rendered by mkdocstrings from what griffe reads in the source,
with the extensions listed in mkdocs.yml. This loads the package the same way
and checks every public function's signature: a default such as
``_DEFAULT_WRITE_BUFFER`` would be shown as that name instead of its value.
"""

from __future__ import annotations

import re

import pytest
from helpers import ROOT

griffe = pytest.importorskip("griffe", reason="griffe comes with the docs dependency group")

PRIVATE_NAME = re.compile(r"(?<![\w.'\"])_[A-Za-z]\w*")


def extensions() -> list[str]:
    """The griffe extensions that mkdocs.yml loads, as ``path:Class``."""
    config = (ROOT / "mkdocs.yml").read_text()
    return re.findall(r"^\s+- (docs/_ext/\w+\.py:\w+)$", config, re.M)


def public_functions(obj: griffe.Object, path: str = "") -> list[tuple[str, griffe.Function]]:
    found = []
    for name, member in obj.members.items():
        if (name.startswith("_") and name != "__init__") or member.is_alias:
            continue
        if isinstance(member, griffe.Function):
            found.append((f"{path}{name}", member))
        elif isinstance(member, (griffe.Class, griffe.Module)):
            found += public_functions(member, f"{path}{name}.")
    return found


def test_mkdocs_loads_the_private_defaults_extension() -> None:
    assert "docs/_ext/private_defaults.py:PrivateDefaults" in extensions()


def test_no_signature_default_names_a_private_object() -> None:
    loaded = griffe.load_extensions(*[str(ROOT / e) for e in extensions()])
    package = griffe.load("tcpkit", search_paths=[str(ROOT / "src")], extensions=loaded)
    functions = public_functions(package)
    assert len(functions) > 50, functions  # the walk found the API
    private = [
        f"{path}({p.name}={p.default})"
        for path, function in functions
        for p in function.parameters
        if p.default is not None and PRIVATE_NAME.search(str(p.default))
    ]
    assert not private, private
    run = package["app.App.run"]
    assert str(run.parameters["host"].default) == "'127.0.0.1'"
    assert str(run.parameters["port"].default) == "12345"
    assert str(package["app.App.start"].parameters["port"].default) == "0"
