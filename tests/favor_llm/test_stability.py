"""Stability (issue 10, item 5): 200 consecutive `generate` calls and 200 training steps keep nothing alive.

A leak in this code path keeps tensors alive (a cache, the media features, a loss kept for logging), so each test
counts the tensors the garbage collector can reach after a warm-up and again after the remaining calls: the count
must not grow. The process's resident memory is checked too, with room for the allocator.
"""

from __future__ import annotations

import gc
import warnings
from pathlib import Path

import pytest
import torch

CALLS = 200
WARMUP = 20


def _live_tensors() -> int:
    gc.collect()
    with warnings.catch_warnings():  # isinstance on torch.distributed's deprecated reduce_op object warns
        warnings.simplefilter("ignore", FutureWarning)
        return sum(1 for obj in gc.get_objects() if isinstance(obj, torch.Tensor))


def _rss_mib() -> float:
    statm = Path("/proc/self/statm")
    if not statm.exists():
        return 0.0
    import os

    return int(statm.read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@pytest.fixture
def batch(fresh_tiny, media):
    _, processor = fresh_tiny
    return processor(
        text=["What?", "Sound?"],
        media=[{"video": media["video"], "audio": media["audio"]}, media["short_audio"]],
        answers=["red", "a dog"],
    )


def test_200_generate_calls_keep_no_tensor_alive(fresh_tiny, batch):
    model, _ = fresh_tiny
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    answers = set()
    for i in range(CALLS):
        if i == WARMUP:
            tensors, rss = _live_tensors(), _rss_mib()
        out = model.generate(**inputs, max_new_tokens=3, do_sample=False)
        answers.add(tuple(out[0].tolist()))
    assert len(answers) == 1  # the same greedy answer every time
    assert _live_tensors() <= tensors
    assert _rss_mib() - rss < 64


def test_200_training_steps_keep_no_tensor_alive(fresh_tiny, batch):
    model, _ = fresh_tiny
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    losses = []
    for i in range(CALLS):
        if i == WARMUP:
            tensors, rss = _live_tensors(), _rss_mib()
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < losses[0]  # it trains
    assert _live_tensors() <= tensors
    assert _rss_mib() - rss < 64
