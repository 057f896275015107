"""favor_qformer keeps to the size guideline (files <= 500 lines, classes <= 300; ``structure_helpers``)."""

from __future__ import annotations

from pathlib import Path

import favor_qformer
from structure_helpers import MAX_CLASS_LINES, MAX_FILE_LINES, oversized


def test_files_and_classes_stay_small():
    assert oversized(Path(favor_qformer.__file__).resolve().parent) == []


def test_the_size_check_finds_a_long_file_and_a_long_nested_class(tmp_path):
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("\n" * (MAX_FILE_LINES + 1))
    body = "".join(f"        x{i} = {i}\n" for i in range(MAX_CLASS_LINES))  # Inner: 1 + 300 lines
    (package / "sub" / "mod.py").write_text(f"class Outer:\n    class Inner:\n{body}")
    (package / "sub" / "fits.py").write_text("class Fits:\n" + "    x = 1\n" * (MAX_CLASS_LINES - 1))
    assert oversized(package) == [
        f"pkg/__init__.py has {MAX_FILE_LINES + 1} lines (at most {MAX_FILE_LINES})",
        f"pkg/sub/mod.py: class Outer has {MAX_CLASS_LINES + 2} lines (at most {MAX_CLASS_LINES})",
        f"pkg/sub/mod.py: class Inner has {MAX_CLASS_LINES + 1} lines (at most {MAX_CLASS_LINES})",
    ]
