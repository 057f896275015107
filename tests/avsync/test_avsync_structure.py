"""favor_avsync keeps to the size guideline (files <= 500 lines, classes <= 300; ``structure_helpers``)."""

from __future__ import annotations

from pathlib import Path

import favor_avsync
from structure_helpers import oversized


def test_files_and_classes_stay_small():
    assert oversized(Path(favor_avsync.__file__).resolve().parent) == []
