"""Overlapping windows (stride < size) share each frame's projections, and equal the naive per-window path.

The naive path is the definition: cut every window out of its video and run it alone (stride = size, one window
per "video"), so each window's copy of a frame is normalised and projected again.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from qformer_helpers import tiny_model

from favor_qformer import CausalQFormer, CausalQFormerConfig
from favor_qformer.shared_frames import SharedFrameTokens
from favor_qformer.windows import plan_windows


def _naive(model: CausalQFormer, features: torch.Tensor, lengths: list[int]):
    """Every window of every video run as its own video by a copy of ``model`` with stride = size."""
    config = model.config
    naive = CausalQFormer(
        CausalQFormerConfig(**{**config.to_dict(), "window_stride": config.window_size})
    ).eval()
    naive.load_state_dict(model.state_dict())
    plan = plan_windows(lengths, config.window_size, config.window_stride)
    size = config.window_size
    clips = torch.zeros(plan.num_real, size, *features.shape[2:])
    for w, (b, start, length) in enumerate(zip(plan.batch_index, plan.start, plan.real_frames, strict=True)):
        clips[w, :length] = features[b, start : start + length]
    mask = torch.arange(size)[None, :] < torch.tensor(plan.real_frames)[:, None]
    with torch.no_grad():
        out = naive(clips, mask, output_hidden_states=True)
    return plan, out


def _check(model, features, lengths, atol=1e-5):
    frame_mask = torch.arange(features.shape[1])[None, :] < torch.tensor(lengths)[:, None]
    with torch.no_grad():
        got = model(features, frame_mask, output_hidden_states=True)
    plan, want = _naive(model, features, lengths)
    rows = (plan.batch_index, plan.slot)
    torch.testing.assert_close(got.tokens[rows], want.tokens[:, 0], rtol=0, atol=atol)
    torch.testing.assert_close(
        got.encoder_hidden_states[rows], want.encoder_hidden_states[:, 0], rtol=0, atol=atol
    )
    for g, w in zip(got.causal_hidden_states, want.causal_hidden_states, strict=True):
        assert (g is None) == (w is None)
        if g is not None:
            torch.testing.assert_close(g[rows], w[:, 0], rtol=0, atol=atol)


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("attends_padding", [False, True])
@pytest.mark.parametrize("stack_causal", [False, True])
def test_overlap_reuse_equals_naive(causal, attends_padding, stack_causal):
    torch.manual_seed(0)
    model = tiny_model(
        window_size=4,
        window_stride=2,
        causal=causal,
        causal_attends_window_padding=attends_padding,
        stack_causal=stack_causal,
    )
    _check(model, torch.randn(3, 9, 2, 12), [9, 5, 1])


@pytest.mark.parametrize("position_embedding", ["window", "none"])
@pytest.mark.parametrize("input_layernorm", [True, False])
def test_overlap_reuse_equals_naive_at_the_released_sizes_fp32(position_embedding, input_layernorm):
    """Released widths (D 1536, 12 heads, 10-frame windows of 32 tokens), stride 5 of 10, fp32: within 1e-5."""
    torch.manual_seed(0)
    config = CausalQFormerConfig(
        num_layers=1,
        hidden_size=96,
        num_heads=4,
        intermediate_size=64,
        num_queries=4,
        window_stride=5,
        position_embedding=position_embedding,
        input_layernorm=input_layernorm,
        attention_backend="sdpa",
    )
    model = CausalQFormer(config).eval()
    _check(model, torch.randn(2, 23, 32, 1536), [23, 12])


@settings(max_examples=15, deadline=None)
@given(
    size=st.integers(2, 5),
    stride_fraction=st.floats(0.01, 0.99),
    lengths=st.lists(st.integers(1, 12), min_size=1, max_size=3),
)
def test_overlap_reuse_property(size, stride_fraction, lengths):
    stride = max(1, min(size - 1, int(size * stride_fraction)))
    torch.manual_seed(1)
    model = tiny_model(window_size=size, window_stride=stride, max_position_embeddings=64)
    _check(model, torch.randn(len(lengths), max(lengths), 2, 12), lengths)


def test_shared_tokens_project_each_frame_once():
    """Exactly the window copies' key/value projections are saved: FLOPs of the naive path minus the shared one."""
    from torch.utils.flop_counter import FlopCounterMode

    torch.manual_seed(0)
    model = tiny_model(window_size=4, window_stride=2, causal=False)
    features = torch.randn(1, 20, 2, 12)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(features)
    shared = counter.get_total_flops()
    with FlopCounterMode(display=False) as counter:
        plan, _ = _naive(model, features, [20])
    naive = counter.get_total_flops()
    config = model.config
    length, width, hidden = config.tokens_per_window, config.encoder_hidden_size, config.hidden_size
    # Per key/value projection: Nw * L token rows (naive) against M * N frame rows + the L-row position table
    # (no window is partial here, so no padding frame row).
    assert all(r == config.window_size for r in plan.real_frames)
    rows_saved = plan.num_real * length - 20 * config.tokens_per_frame - length
    projections = 2 * sum(config.has_cross_attention(i) for i in range(config.num_layers))
    assert naive - shared == projections * 2 * rows_saved * width * hidden

    tokens = SharedFrameTokens(torch.randn(3, 2, 4), torch.tensor([[0, 1], [1, 2]]), torch.randn(4, 4))
    assert tokens.shape == (2, 4, 4) and tokens.dim() == 3


@pytest.mark.parametrize("checkpointing", [False, True])
def test_overlap_reuse_gradients_equal_naive(checkpointing):
    """Training through the shared path (also with gradient checkpointing) gives the naive path's gradients."""
    torch.manual_seed(0)
    model = tiny_model(window_size=4, window_stride=2, gradient_checkpointing=checkpointing).train()
    naive = CausalQFormer(CausalQFormerConfig(**{**model.config.to_dict(), "window_stride": 4})).train()
    naive.load_state_dict(model.state_dict())
    features = torch.randn(2, 9, 2, 12)
    lengths = [9, 6]
    frame_mask = torch.arange(9)[None, :] < torch.tensor(lengths)[:, None]
    model(features, frame_mask).tokens.square().sum().backward()
    plan = plan_windows(lengths, 4, 2)
    clips = torch.zeros(plan.num_real, 4, 2, 12)
    for w, (b, start, length) in enumerate(zip(plan.batch_index, plan.start, plan.real_frames, strict=True)):
        clips[w, :length] = features[b, start : start + length]
    clip_mask = torch.arange(4)[None, :] < torch.tensor(plan.real_frames)[:, None]
    naive(clips, clip_mask).tokens.square().sum().backward()
    for (name, got), want in zip(model.named_parameters(), naive.parameters(), strict=True):
        torch.testing.assert_close(got.grad, want.grad, rtol=1e-4, atol=1e-6, msg=name)
