"""favor-llm's structure: no import cycles between its modules (any import, module-level or inside a function),
files and classes of bounded size, and no reach into another module's private names."""

from __future__ import annotations

import ast
from pathlib import Path

import favor_llm
from structure_helpers import oversized

SRC = Path(favor_llm.__file__).parent
MODULES = {p.stem: p for p in SRC.glob("*.py") if p.stem != "__init__"}


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    """``(favor_llm module, imported names)`` for every relative / favor_llm import in ``path``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level == 1 or module.startswith("favor_llm"):
                target = module.removeprefix("favor_llm").lstrip(".") if node.level == 0 else module
                names = [a.name for a in node.names]
                if not target:  # "from . import checkpoint"
                    found += [(n, []) for n in names if n in MODULES]
                else:
                    found.append((target.split(".")[0], names))
    return found


def test_no_import_cycles():
    graph = {
        name: {t for t, _ in _imports(path) if t in MODULES and t != name} for name, path in MODULES.items()
    }
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                raise AssertionError(f"import cycle: {' -> '.join([*stack, node, nxt])}")
            if nxt not in state:
                visit(nxt, [*stack, node])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [])
    assert "modeling" not in graph["checkpoint"] and "cli" not in graph["demo"]


def test_no_private_names_across_modules():
    offenders = [
        f"{name} imports {target}.{n}"
        for name, path in MODULES.items()
        for target, names in _imports(path)
        for n in names
        if n.startswith("_") and target in MODULES
    ]
    assert not offenders


def test_files_and_classes_stay_small():
    """Files <= 500 lines, classes <= 300, subpackages (streaming, aveb) included: the rule and its measure are
    ``structure_helpers.oversized``, shared with favor_qformer's and favor_avsync's structure tests."""
    assert oversized(SRC) == []
