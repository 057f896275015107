"""No import cycles in favor_qformer (issue 9), and every module imports on its own in a fresh interpreter.

The graph is read from the source with ``ast``: every ``import`` counts, also those inside functions and under
``TYPE_CHECKING`` (a lazy import that closes a loop is still a cycle, only hidden from the interpreter).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import favor_qformer

PACKAGE = "favor_qformer"
ROOT = Path(favor_qformer.__file__).resolve().parent


def _modules(root: Path, package: str) -> dict[str, Path]:
    found = {}
    for path in sorted(root.rglob("*.py")):
        parts = [package, *path.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def import_graph(root: Path, package: str) -> dict[str, set[str]]:
    """module -> the package's modules it imports (anywhere in its source)."""
    modules = _modules(root, package)
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = name.split(".")
                    base = base[: len(base) - node.level + (1 if is_package else 0)]
                    stem = ".".join(base + ([node.module] if node.module else []))
                else:
                    stem = node.module or ""
                targets = [
                    f"{stem}.{alias.name}" if f"{stem}.{alias.name}" in modules else stem
                    for alias in node.names
                ]
            for target in targets:
                while target and target not in modules:  # `import a.b.c` of a non-module: nearest module
                    target = target.rpartition(".")[0]
                if target and target != name:
                    graph[name].add(target)
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every elementary cycle found by a depth-first search (each reported once, from its smallest module)."""
    cycles: set[tuple[str, ...]] = set()

    def visit(node: str, path: list[str]) -> None:
        for nxt in sorted(graph[node]):
            if nxt == path[0]:
                cycles.add(tuple(path))
            elif nxt not in path and nxt > path[0]:
                visit(nxt, [*path, nxt])

    for start in sorted(graph):
        visit(start, [start])
    return [list(cycle) for cycle in sorted(cycles)]


def test_the_cycle_finder_finds_a_lazy_import_cycle(tmp_path):
    (tmp_path / "__init__.py").write_text("")
    (tmp_path / "a.py").write_text("from .b import f\n")
    (tmp_path / "b.py").write_text("def f():\n    from .a import g\n")
    (tmp_path / "c.py").write_text("from . import a\n")
    graph = import_graph(tmp_path, "pkg")
    assert graph["pkg.c"] == {"pkg.a"}
    assert find_cycles(graph) == [["pkg.a", "pkg.b"]]


def test_favor_qformer_has_no_import_cycles():
    graph = import_graph(ROOT, PACKAGE)
    # The checkpoint mixin imports _hub / _convert only inside its methods: the graph must still see them.
    assert "favor_qformer.checkpoints" in graph["favor_qformer.model"]
    assert {"favor_qformer._hub", "favor_qformer._convert"} <= graph["favor_qformer.checkpoints"]
    assert find_cycles(graph) == []


def test_every_module_imports_first_in_a_fresh_interpreter():
    """Each module imported first, with none of the package loaded: catches order-dependent imports."""
    names = sorted(_modules(ROOT, PACKAGE))
    code = (
        "import importlib, sys\n"
        f"for name in {names!r}:\n"
        "    for loaded in [m for m in sys.modules if m.split('.')[0] == 'favor_qformer']:\n"
        "        del sys.modules[loaded]\n"
        "    importlib.import_module(name)\n"
        "assert 'transformers' not in sys.modules, 'favor_qformer must not import transformers'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
