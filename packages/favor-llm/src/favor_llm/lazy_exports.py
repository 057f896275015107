"""Package attributes that import their module on first use (PEP 562 ``__getattr__`` / ``__dir__``).

``import favor_llm`` (and so every ``favor`` command, ``favor --help`` included) must not pay for torch and
transformers before a name that needs them is used: a package lists ``{".module": ("Name", ...)}`` and
`lazy_exports` gives it the module-level ``__getattr__`` and ``__dir__`` that import ``.module`` when ``Name`` is
first read. ``from package import Name`` and ``import *`` (through ``__all__``) go through the same path, and
``package.submodule`` imports the submodule, as it worked when the package imported its modules eagerly.

A public name that equals one of the package's submodule names (``favor_llm.components`` the function and
``favor_llm/components.py``) must not be lazy: importing the submodule binds the package attribute to the module,
and ``__getattr__`` is only asked for attributes that are missing. Such names stay ordinary imports.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(
    package: str, exports: Mapping[str, Sequence[str]]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The ``(__getattr__, __dir__)`` pair of ``package``, whose names in ``exports`` (relative module -> names)
    load on first use.

    Raises:
        ValueError: a name listed under two modules.
    """
    where: dict[str, str] = {}
    for module, names in exports.items():
        for name in names:
            if name in where:
                raise ValueError(f"exports: {name!r} listed under both {where[name]!r} and {module!r}")
            where[name] = module

    def __getattr__(name: str) -> Any:
        module = where.get(name)
        if module is None:
            # ``package.submodule`` without importing it first: as when the package imported its modules eagerly
            # (a dotted name is no attribute: `hasattr(package, "a.b")` is False, not an import of ``package.a``)
            submodule = f"{package}.{name}"
            if name.isidentifier() and not name.startswith("__") and importlib.util.find_spec(submodule):
                return importlib.import_module(submodule)
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module, package), name)
        setattr(sys.modules[package], name, value)  # later reads are plain attribute lookups
        return value

    def __dir__() -> list[str]:
        return sorted({*vars(sys.modules[package]), *where})

    return __getattr__, __dir__
