"""Fixtures: the tiny FAVOR (built offline from configs) and small synthetic media."""

from __future__ import annotations

import pytest
import torch

from favor_llm.testing import tiny_model_and_processor


@pytest.fixture(scope="module")
def tiny():
    """A shared tiny (model, processor) for tests that do not change the weights."""
    return tiny_model_and_processor(seed=0)


@pytest.fixture
def fresh_tiny():
    """A tiny (model, processor) of its own, for tests that train or change it."""
    return tiny_model_and_processor(seed=0)


@pytest.fixture(scope="module")
def media():
    """Synthetic media: video frames (uint8), a waveform at 16 kHz (longer than the tiny 5 s Whisper window)."""
    g = torch.Generator().manual_seed(1234)
    return {
        "video": torch.randint(0, 256, (6, 3, 40, 48), dtype=torch.uint8, generator=g),
        "long_video": torch.randint(0, 256, (11, 3, 40, 48), dtype=torch.uint8, generator=g),
        "audio": torch.randn(16000 * 7, generator=g) * 0.1,
        "short_audio": torch.randn(16000 * 2, generator=g) * 0.1,
        "image": torch.randint(0, 256, (40, 48, 3), dtype=torch.uint8, generator=g),
    }
