"""Where a checkpoint's frozen parts are: the ``config.component_sources`` entries of `favor_llm.checkpoint`.

An entry is ``{"name_or_path": ..., "fingerprint": ..., "prefix": ...}``: a Hub repo id, a local directory, or (with
``"embedded": true``) a folder inside the checkpoint. A delta checkpoint referencing a local directory also records
it relative to itself (``"relative_path"``, e.g. ``"../frozen/vision"`` for a `favor train` run's
``checkpoint-N/`` or ``final/``), and loading tries that first: a run folder moved or copied whole (its
``frozen/`` parts and its checkpoints together, or a fine-tuned run together with the run it started from) keeps
loading, while the absolute ``name_or_path`` still serves a checkpoint copied alone. The fingerprint decides that
a candidate is the part the checkpoint was trained with.

In a loaded model's config every local entry holds the absolute path it was loaded from, so a delta saved from it
(fine-tuning) references the same folders, relative to where that delta goes.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from .weights import part_fingerprint

__all__ = ["RELATIVE_PATH_KEY", "loaded_source", "referenced_from", "resolve_source"]

RELATIVE_PATH_KEY = "relative_path"


def _is_local(source: dict) -> bool:
    text = str(source["name_or_path"])
    if source.get("embedded") or source.get(RELATIVE_PATH_KEY):
        return True
    # a Hub repo id never looks like this; an absolute path of either system (a run folder copied between Windows
    # and Linux keeps the other system's paths, and its relative paths must still be tried)
    absolute = PurePosixPath(text).is_absolute() or PureWindowsPath(text).is_absolute()
    return absolute or text.startswith((".", "~"))


def _candidates(root: Path, source: dict) -> list[Path]:
    """The places the part may be, in the order they are tried."""
    if source.get("embedded"):
        return [root / source["name_or_path"]]
    found = [root / source[RELATIVE_PATH_KEY]] if source.get(RELATIVE_PATH_KEY) else []
    return [*found, Path(str(source["name_or_path"])).expanduser()]


def resolve_source(root: Path, source: dict, name: str) -> str:
    """Where to load the frozen part ``name`` of the checkpoint in ``root`` from: a local directory or a Hub id.

    Raises:
        ValueError: no ``name_or_path``; a local part that is nowhere; or one whose fingerprint differs from the
            recorded one (another save went into that folder).
    """
    if not isinstance(source, dict) or "name_or_path" not in source:
        raise ValueError(f"component_sources[{name!r}]: needs a 'name_or_path', got {source}")
    if not _is_local(source):
        return str(source["name_or_path"])
    candidates = _candidates(root, source)
    # A local frozen part is a directory (what save_frozen_components writes): a file of that name is not one, and
    # would have no fingerprint to check.
    existing = [path for path in candidates if path.is_dir()]
    if not existing:
        raise ValueError(
            f"component_sources[{name!r}]: {' or '.join(str(p) for p in candidates)} does not exist (was the "
            "directory of the frozen parts moved or deleted? point config.json's component_sources at it, or pass "
            "config=...)"
        )
    recorded = None if source.get("embedded") else source.get("fingerprint")
    if not recorded:
        return str(existing[0])
    found = [part_fingerprint(path) for path in existing]
    for path, fingerprint in zip(existing, found):
        if fingerprint == recorded:
            return str(path)
    raise ValueError(
        f"component_sources[{name!r}]: {existing[0]} changed since this checkpoint was saved (fingerprint "
        f"{found[0]}, recorded {recorded}; e.g. another save went into that folder). The checkpoint's trained "
        "weights belong to the old part: restore it, or load with config=... naming the part you mean (and no "
        "'fingerprint')"
    )


def loaded_source(root: Path, source: dict, name: str) -> dict[str, Any]:
    """The entry kept in a model loaded from ``root``: a local part as the absolute path it was loaded from (an
    embedded one with its fingerprint), so that a delta saved from the model loads from anywhere."""
    if not _is_local(source):
        return dict(source)
    path = resolve_source(root, source, name)
    entry = {k: v for k, v in source.items() if k not in ("embedded", RELATIVE_PATH_KEY)}
    entry["name_or_path"] = str(Path(path).resolve())
    if source.get("embedded"):
        entry["fingerprint"] = part_fingerprint(path)
    return entry


def referenced_from(source: dict, target: Path) -> dict[str, Any]:
    """``source`` as written into a delta checkpoint at ``target``: a local directory also relative to ``target``
    (tried first on load; see the module docstring)."""
    entry = {k: v for k, v in source.items() if k != RELATIVE_PATH_KEY}
    path = Path(str(entry.get("name_or_path", ""))).expanduser()
    if entry.get("embedded") or not path.is_absolute():
        return entry
    try:
        entry[RELATIVE_PATH_KEY] = Path(os.path.relpath(path.resolve(), Path(target).resolve())).as_posix()
    except ValueError:  # another drive (Windows): no relative path exists
        pass
    return entry
