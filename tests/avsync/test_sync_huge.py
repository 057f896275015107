"""Finite but huge inputs to the synchroniser (issue 10, item 5): they keep working, or are refused clearly.

Huge values near a dtype's maximum, long streams, extreme rates and lengths past int64 each either give the
exact answer (checked against a float64 mean or a step count) or a ValueError naming the argument and the limit.
"""

from __future__ import annotations

import pytest
import torch

from favor_avsync import TemporalSynchroniser


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_values_at_the_dtype_maximum_pool_without_overflow(dtype):
    # 1 fps against 50 Hz: 50 steps per frame into 32 slots, so slots average 1 or 2 steps of maximal values.
    big = torch.finfo(dtype).max
    sync = TemporalSynchroniser(fps=1.0, audio_rates=(50.0,), overflow="pool")
    audio = torch.full((1, 100, 3), big, dtype=dtype)
    audio[0, 1::2] = big / 2  # pairs (big, big / 2) average to 0.75 * big
    out = sync(torch.full((1, 2, 32, 2), big, dtype=dtype), audio)
    assert out.features.dtype == dtype
    assert bool(torch.isfinite(out.features).all())
    assert out.features[0, :, :, :2].eq(big).all()  # visual unchanged
    # The same pooling in float64 (where these values are far from overflow), cast once: what it must give.
    reference = sync(torch.full((1, 2, 32, 2), big, dtype=torch.float64), audio.double()).features
    torch.testing.assert_close(out.features, reference.to(dtype), rtol=0, atol=0)
    assert bool((out.features[0, 0, :, 2] < big).any())  # some slots really averaged big and big / 2


def test_long_stream_every_step_is_placed():
    # 2 million 50 Hz steps (11 hours) against 2 fps: 80 000 frames, each step in exactly one slot.
    steps = 2_000_000
    sync = TemporalSynchroniser(fps=2.0, audio_rates=(50.0,))
    out = sync(torch.zeros(1, 0, 32, 1), torch.ones(1, steps, 1))
    assert out.features.shape == (1, 80_000, 32, 2)
    assert int(out.features[..., 1].sum()) == steps
    assert bool(out.frame_mask.all())
    assert sync.num_frames(steps) == 80_000
    assert sync.frames_for_duration(1e12) == 2 * 10**12  # exact on Python ints


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"fps": 1e7}, r"fps must be at most 1e\+06 per second, got 10000000\.0"),
        ({"audio_rates": (50.0, 1e12)}, r"audio_rates\[1\] must be at most 1e\+06 per second"),
        ({"fps": 1e-300}, "fps is too small to represent"),
        ({"audio_rates": (1e-9,)}, r"audio_rates\[0\] is too small to represent"),
    ],
)
def test_extreme_rates_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TemporalSynchroniser(**kwargs)


def test_extreme_rate_ratio_is_refused_clearly():
    # 1e6 fps against one audio step every 1000 s: ~1e9 frames per step, a (1, ~1e12, 32, 1001) output.
    sync = TemporalSynchroniser(fps=1e6, audio_rates=(0.001,))
    with pytest.raises(
        ValueError, match=r"synchronised output .* cannot be allocated.*check fps and audio_rates"
    ):
        sync(torch.zeros(1, 0, 32, 1000), torch.ones(1, 1000, 1))


def test_index_arithmetic_past_int64_is_refused():
    # 1e6 fps against 1/9999 Hz: 2e9 frames per step, so 1e12 steps would overflow int64 indices (wrap silently).
    sync = TemporalSynchroniser(fps=1e6, audio_rates=(1 / 9999,))
    with pytest.raises(ValueError, match="past the exact 64-bit index arithmetic"):
        sync.num_frames(10**12)


@pytest.mark.parametrize("length", [2**63, 2**70, -(2**64)])
def test_lengths_past_int64_are_range_errors(length):
    sync = TemporalSynchroniser()
    with pytest.raises(ValueError, match=r"visual_lengths must be in \[0, 3\]"):
        sync(torch.zeros(1, 3, 32, 1), torch.zeros(1, 75, 1), visual_lengths=[length])
    with pytest.raises(ValueError, match=r"audio_lengths must be in \[0, 75\]"):
        sync(torch.zeros(1, 3, 32, 1), torch.zeros(1, 75, 1), audio_lengths=[length])
