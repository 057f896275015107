"""The size guideline of every package (the brief: files under about 500 lines, classes under about 300), shared by
each package's structure test so the three packages are held to one rule, measured one way.

``tests/`` is on ``sys.path`` through its ``conftest.py`` (pytest's default ``prepend`` import mode), so any test
imports this module as ``structure_helpers``.
"""

from __future__ import annotations

import ast
from pathlib import Path

MAX_FILE_LINES = 500
MAX_CLASS_LINES = 300


def oversized(package_root: Path) -> list[str]:
    """Every file over ``MAX_FILE_LINES`` and every class (nested ones too) over ``MAX_CLASS_LINES`` in the
    package at ``package_root``, subpackages and ``__init__.py`` included; ``[]`` when all fit.

    A class's size runs from its ``class`` line to its last line (decorators and the blank lines after it not
    counted), so a docstring counts as code: the guideline is about what a reader has to hold at once.
    """
    found = []
    for path in sorted(package_root.rglob("*.py")):
        name = path.relative_to(package_root.parent).as_posix()
        source = path.read_text()
        lines = len(source.splitlines())
        if lines > MAX_FILE_LINES:
            found.append(f"{name} has {lines} lines (at most {MAX_FILE_LINES})")
        for node in ast.walk(ast.parse(source, str(path))):
            if isinstance(node, ast.ClassDef):
                size = node.end_lineno - node.lineno + 1
                if size > MAX_CLASS_LINES:
                    found.append(f"{name}: class {node.name} has {size} lines (at most {MAX_CLASS_LINES})")
    return found
