"""A griffe extension: show a parameter default that names a private constant as its value.

``App.run(host=_DEFAULT_HOST, port=_DEFAULT_PORT)`` uses module constants
that the code tells apart by identity (an explicit ``port=12345`` is not the
default ``12345``); the API reference should show what a reader can type:
``host='127.0.0.1'``, ``port=12345``. For every function of the package, a
default that is the name of a private (``_``-prefixed) module attribute is
replaced by that attribute's value; a value that is a call of a private
wrapper with one argument (``_Default('127.0.0.1')``) becomes the argument.
A default it cannot resolve to a value free of private names is left alone,
and ``tests/test_api_docs.py`` then fails.
"""

from __future__ import annotations

from typing import Any

import griffe


class PrivateDefaults(griffe.Extension):
    """Replace private-constant defaults by their values in every loaded signature."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        for function in _functions(pkg):
            module = function.module
            for parameter in function.parameters:
                value = _value(parameter.default, module)
                if value is not None:
                    parameter.default = value


def _functions(obj: griffe.Object) -> list[griffe.Function]:
    found: list[griffe.Function] = [obj] if isinstance(obj, griffe.Function) else []
    for member in obj.members.values():
        if not member.is_alias and isinstance(member, griffe.Object):
            found.extend(_functions(member))
    return found


def _value(default: str | griffe.Expr | None, module: griffe.Module) -> str | None:
    """The value behind a default naming a private module constant, or None."""
    if not isinstance(default, griffe.ExprName) or not default.name.startswith("_"):
        return None
    constant = module.members.get(default.name)
    if not isinstance(constant, griffe.Attribute) or constant.value is None:
        return None
    value = constant.value
    if (
        isinstance(value, griffe.ExprCall)
        and str(value.function).startswith("_")
        and len(value.arguments) == 1
    ):
        value = value.arguments[0]
    text = str(value)
    return None if _names_private(value) else text


def _names_private(value: str | griffe.Expr) -> bool:
    if isinstance(value, str):
        return False
    return any(isinstance(e, griffe.ExprName) and e.name.startswith("_") for e in value.iterate())
