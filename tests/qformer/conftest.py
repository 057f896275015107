"""Fixtures of the favor-qformer tests: the released-FAVOR golden files."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from qformer_helpers import REFERENCE_NAMES
from safetensors.torch import load_file


@pytest.fixture(scope="session", params=REFERENCE_NAMES)
def reference(request, reference_dir: Path) -> dict[str, torch.Tensor]:
    """One golden file's tensors (both files, one after the other)."""
    path = reference_dir / f"{request.param}.safetensors"
    if not path.is_file():
        pytest.skip(f"missing {path}")
    tensors = load_file(str(path))
    return tensors
