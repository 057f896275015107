"""Shared test set-up: offline Hugging Face, deterministic torch, hypothesis profiles.

Profiles: ``ci`` (default, small and derandomised so a run is reproducible and fast on 2 cores) and ``dev``
(more examples). Pick one with ``HYPOTHESIS_PROFILE=dev``.
"""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    max_examples=25,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile("dev", max_examples=200, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

# The golden files of the released FAVOR code ship with the tests (tests/data/reference, see PROVENANCE.md there);
# FAVOR_REFERENCE_DIR points the tests at another copy.
REFERENCE_DIR = Path(
    os.environ.get("FAVOR_REFERENCE_DIR") or Path(__file__).resolve().parent / "data" / "reference"
)


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    """The released-FAVOR golden files.

    They are part of the repository, so a clone always has them; a ``FAVOR_REFERENCE_DIR`` that points nowhere
    skips the golden tests outside CI, and in CI (``CI`` set) it is a failure, so the equivalence tests can never
    pass by being skipped.
    """
    if not REFERENCE_DIR.is_dir():
        message = f"reference files not found at {REFERENCE_DIR} (set FAVOR_REFERENCE_DIR)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return REFERENCE_DIR


def pytest_configure(config: pytest.Config) -> None:
    # Under pytest-xdist each worker gets one core: two workers with two torch threads each would fight.
    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch

        torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed_torch():
    import torch

    torch.manual_seed(0)
    yield
