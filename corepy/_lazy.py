"""Lazy package exports (PEP 562): a name's module is imported when the name is first used."""

from __future__ import annotations

import importlib
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any


def lazy_exports(package: str, names: dict[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package``, exporting each of ``names`` from its
    submodule (``{"name": "submodule"}``, relative to the package). The first access imports
    the submodule and stores the value in the package, so later accesses are plain lookups.
    A name may not be its own submodule's: importing that submodule binds the name to it."""
    clash = sorted(name for name, module in names.items() if name == module)
    if clash:
        raise ValueError(f"{package}: {clash} would be shadowed by the submodules of that name")

    def __getattr__(name: str) -> Any:
        module = names.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{module}"), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted({*vars(sys.modules[package]), *names})

    return __getattr__, __dir__
