"""FAVOR in transformers' Auto classes, registered without ``import favor_llm`` importing transformers.

After ``import favor_llm``, ``AutoConfig`` / ``AutoModel`` / ``AutoModelForCausalLM`` / ``AutoProcessor`` load
``model_type="favor"`` checkpoints. Registering needs `FavorModel`, hence torch, transformers and peft (seconds),
which ``import favor_llm`` no longer pays for (``favor --help`` builds its parser with the standard library only).
Every Auto class lives in the package ``transformers.models.auto``, so `register_with_transformers` (run by
``favor_llm/__init__``):

- registers at once when that package is already imported (what ``import favor_llm`` always did);
- otherwise puts a finder at the front of `sys.meta_path` that follows the imports made at top level (not while
  another import it follows runs) and registers as soon as one of them finishes with ``transformers.models.auto``
  imported, then removes itself. ``from transformers import AutoModel``, ``import peft``, ``favor_llm.FavorModel``
  are such imports; the user's next statement sees FAVOR registered.

Why the outermost import and not the Auto package itself: transformers imports ``transformers.models.auto`` half-way
through its own modules (``transformers.modeling_utils`` -> quantizers -> ``configuration_auto``), and a FAVOR
module may be half-imported too (``favor_llm.modeling`` imports ``AutoModelForCausalLM``); importing `FavorModel` at
that moment would meet those half-initialised modules. When the outermost import has finished, nothing it started is.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
import threading
import types
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
    register_auto_classes()


class _RegisterAfterImport(importlib.abc.MetaPathFinder):
    """Finds nothing itself: for an import made at top level it asks the other finders and wraps the loader of the
    spec they return in a `_Followed` loader, which counts the depth and calls `finished` after executing."""

    def __init__(self) -> None:
        self._depth = threading.local()  # followed imports running in this thread

    @property
    def depth(self) -> int:
        return getattr(self._depth, "value", 0)

    def enter(self) -> None:
        self._depth.value = self.depth + 1

    def leave(self) -> None:
        self._depth.value = self.depth - 1

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: types.ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if self.depth:
            return None  # inside a followed import: the outermost one decides
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
        """A followed import finished: register once transformers' Auto package is imported."""
        if self.depth or AUTO_PACKAGE not in sys.modules:
            return
        with _LOCK:
            if self not in sys.meta_path:
                return  # another thread registered
            sys.meta_path.remove(self)
        register_auto_classes()


class _Followed:
    """The loader a spec came with, counted as one level of followed import; the module keeps the original, and
    whoever only finds the spec sees the original's methods (``get_code`` for ``python -m``, ``get_source``,
    ``get_resource_reader``, ``is_package``)."""

    def __init__(self, finder: _RegisterAfterImport, loader: Any) -> None:
        self.finder = finder
        self.loader = loader

    def __getattr__(self, name: str) -> Any:
        return getattr(vars(self).get("loader"), name)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType | None:
        self.finder.enter()  # an extension module runs its initialisation here
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
        self.finder.enter()
        try:
            self.loader.exec_module(module)
        finally:
            self.finder.leave()
        self.finder.finished()
