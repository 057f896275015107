"""FAVOR in transformers' Auto classes, registered without ``import favor_llm`` importing transformers.

After ``import favor_llm``, ``AutoConfig`` / ``AutoModel`` / ``AutoModelForCausalLM`` / ``AutoProcessor`` load
``model_type="favor"`` checkpoints. Registering needs `FavorModel`, hence torch, transformers and peft (seconds),
which ``import favor_llm`` no longer pays for (``favor --help`` builds its parser with the standard library only).
Every Auto class lives in the package ``transformers.models.auto``, so `register_with_transformers` (run by
``favor_llm/__init__``):

- registers at once when that package is already imported (what ``import favor_llm`` always did);
- otherwise puts a finder at the front of `sys.meta_path` that follows every import (the stack of imports running
  in each thread) and registers as soon as one finishes with ``transformers.models.auto`` imported while no import of
  transformers, peft or favor_llm runs in any thread, then removes itself. ``from transformers import AutoModel``,
  ``import peft``, ``favor_llm.FavorModel`` are such imports; so is a transformers import inside a user's module
  imported after ``import favor_llm`` (a server's ``app.py`` that loads a checkpoint at import time): the next
  statement sees FAVOR registered.

Why not at once when the Auto package is imported: transformers imports ``transformers.models.auto`` half-way through
its own modules (``transformers.modeling_utils`` -> quantizers -> ``configuration_auto``), and a FAVOR module may be
half-imported too (``favor_llm.modeling`` imports ``AutoModelForCausalLM``); importing `FavorModel` at that moment
would meet those half-initialised modules. Only a module of those packages (the ones that import transformers and that
`FavorModel` imports) can be half-initialised under the Auto package's import; once none is running, none is. Another
thread's import of them is waited for too (it registers when it is done), so two threads never deadlock on each
other's module locks.

A registration that fails to import (a dependency of `FavorModel` missing) warns instead of failing the import that
happened to trigger it (the user's own, or ``import favor_llm`` itself); ``favor_llm.FavorModel`` then raises the
import error.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
import threading
import types
import warnings
from collections.abc import Sequence
from typing import Any

__all__ = ["AUTO_PACKAGE", "register_auto_classes", "register_with_transformers"]

#: The package that holds every transformers Auto class.
AUTO_PACKAGE = "transformers.models.auto"

_LOCK = threading.Lock()


def register_auto_classes() -> None:
    """Register `FavorConfig` (``model_type="favor"``), `FavorModel` and `FavorProcessor` with ``AutoConfig``,
    ``AutoModel``, ``AutoModelForCausalLM`` and ``AutoProcessor`` (idempotent)."""
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoProcessor

    from .configuration import FavorConfig
    from .modeling import FavorModel
    from .processing import FavorProcessor

    AutoConfig.register("favor", FavorConfig, exist_ok=True)
    AutoModel.register(FavorConfig, FavorModel, exist_ok=True)
    AutoModelForCausalLM.register(FavorConfig, FavorModel, exist_ok=True)
    AutoProcessor.register(FavorConfig, FavorProcessor, exist_ok=True)


def register_with_transformers() -> None:
    """`register_auto_classes` now if transformers' Auto package is imported, else right after the top-level import
    that imports it (see the module docstring)."""
    with _LOCK:
        if AUTO_PACKAGE not in sys.modules:
            if not any(isinstance(f, _RegisterAfterImport) for f in sys.meta_path):
                sys.meta_path.insert(0, _RegisterAfterImport())
            return
    _register_or_warn()


def _register_or_warn() -> None:
    """`register_auto_classes`, or a warning when it cannot import `FavorModel` (a dependency missing): the import
    that got here (``import favor_llm``, or the user's own import) goes on, and ``favor_llm.FavorModel`` raises
    the import error itself."""
    try:
        register_auto_classes()
    except ImportError as error:
        warnings.warn(
            f"favor_llm: transformers' Auto classes cannot load model_type 'favor' checkpoints ({error})",
            stacklevel=3,
        )


#: Packages whose half-imported modules `register_auto_classes` must not meet: they import transformers, and
#: `FavorModel` imports them.
_REGISTRATION_PACKAGES = frozenset({"transformers", "peft", "favor_llm"})


class _RegisterAfterImport(importlib.abc.MetaPathFinder):
    """Finds nothing itself: it asks the other finders and wraps the loader of the spec they return in a `_Followed`
    loader, which keeps the stack of imports running in its thread and calls `finished` after each."""

    def __init__(self) -> None:
        # thread id -> names of the imports running there, outermost first
        self._running: dict[int, list[str]] = {}

    def enter(self, name: str) -> None:
        self._running.setdefault(threading.get_ident(), []).append(name)

    def leave(self) -> None:
        thread = threading.get_ident()
        running = self._running[thread]
        running.pop()
        if not running:
            del self._running[thread]

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: types.ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        for finder in list(sys.meta_path):
            if finder is self:
                continue
            find_spec = getattr(finder, "find_spec", None)
            if find_spec is None:
                return None  # a legacy finder: let the import system consult the finders in order
            spec = find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        if spec.loader is not None and hasattr(spec.loader, "exec_module"):
            spec.loader = _Followed(self, spec.loader)
        return spec

    def finished(self) -> None:
        """An import finished: register once transformers' Auto package is imported and no module of
        `_REGISTRATION_PACKAGES` is being imported (see the module docstring)."""
        if AUTO_PACKAGE not in sys.modules:
            return
        for running in list(self._running.values()):
            if any(name.partition(".")[0] in _REGISTRATION_PACKAGES for name in list(running)):
                return
        with _LOCK:
            if self not in sys.meta_path:
                return  # another thread registered
            sys.meta_path.remove(self)
        _register_or_warn()  # the user's import that got here has nothing to do with it


class _Followed:
    """The loader a spec came with, counted as one running import; the module keeps the original, and whoever only
    finds the spec sees the original's methods (``get_code`` for ``python -m``, ``get_source``,
    ``get_resource_reader``, ``is_package``)."""

    def __init__(self, finder: _RegisterAfterImport, loader: Any) -> None:
        self.finder = finder
        self.loader = loader

    def __getattr__(self, name: str) -> Any:
        return getattr(vars(self).get("loader"), name)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType | None:
        self.finder.enter(spec.name)  # an extension module runs its initialisation here
        try:
            return self.loader.create_module(spec)
        finally:
            self.finder.leave()

    def exec_module(self, module: types.ModuleType) -> None:
        # from here on the module and its spec name the real loader (resources, reload, source lookups)
        if getattr(module.__spec__, "loader", None) is self:
            module.__spec__.loader = self.loader
        if getattr(module, "__loader__", None) is self:
            module.__loader__ = self.loader
        self.finder.enter(module.__name__)
        try:
            self.loader.exec_module(module)
        finally:
            self.finder.leave()
        self.finder.finished()
