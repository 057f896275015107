"""The ``flex`` backend (FlexAttention + frame-aligned BlockMask) equals eager; the dispatcher uses it by rule.

Most checks run flex_attention uncompiled (``set_flex_compile(False)``: same mask logic, no compilation); one
test runs the compiled kernel on a tiny shape, the path users get.
"""

from __future__ import annotations

import logging

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from qformer_helpers import tiny_model

import favor_qformer.backends as backends
from favor_qformer import BlockCausalAttention
from favor_qformer.backends import AttentionInputs, flex_failure, select_backend, set_flex_compile
from favor_qformer.backends.flex import block_tokens
from favor_qformer.masks import BlockCausalPattern

# The uncompiled path is chosen on purpose here (mask logic without compilation).
pytestmark = pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")


@pytest.fixture
def uncompiled_flex():
    set_flex_compile(False)
    backends._LOGGED.clear()
    yield
    set_flex_compile(True)
    backends._LOGGED.clear()


def _eager_and(backend, model, features, frame_mask):
    model.set_attention_backend("eager")
    with torch.no_grad():
        want = model(features, frame_mask, output_hidden_states=True)
    model.set_attention_backend(backend)
    with torch.no_grad():
        got = model(features, frame_mask, output_hidden_states=True)
    return got, want


def _assert_same(got, want, atol=1e-5):
    torch.testing.assert_close(got.tokens, want.tokens, rtol=0, atol=atol)
    for g, w in zip(got.causal_hidden_states, want.causal_hidden_states, strict=True):
        if w is None:
            assert g is None
        else:
            torch.testing.assert_close(g, w, rtol=0, atol=atol)


@pytest.mark.parametrize("direction", ["future", "past"])
@pytest.mark.parametrize("attends_padding", [False, True])
@pytest.mark.parametrize("stack_causal", [False, True])
def test_flex_equals_eager_on_the_model(uncompiled_flex, direction, attends_padding, stack_causal):
    model = tiny_model(
        causal_direction=direction, causal_attends_window_padding=attends_padding, stack_causal=stack_causal
    )
    features = torch.randn(3, 8, 2, 12)
    frame_mask = torch.arange(8)[None, :] < torch.tensor([8, 5, 1])[:, None]  # partial windows everywhere
    got, want = _eager_and("flex", model, features, frame_mask)
    _assert_same(got, want)


@settings(max_examples=25, deadline=None)
@given(
    frames=st.integers(1, 6),
    tokens=st.integers(1, 5),
    lengths=st.lists(st.integers(0, 6), min_size=1, max_size=4),
    direction=st.sampled_from(["future", "past"]),
    attends_padding=st.booleans(),
)
def test_flex_module_equals_eager_property(frames, tokens, lengths, direction, attends_padding):
    """Any window size, frame size and partial lengths: flex gives eager's output on every token."""
    set_flex_compile(False)
    try:
        layer = BlockCausalAttention(8, 2, direction, attends_padding=attends_padding).eval()
        x = torch.randn(len(lengths), frames, tokens, 8)
        frame_mask = torch.arange(frames)[None, :] < torch.tensor(lengths).clamp(max=frames)[:, None]
        with torch.no_grad():
            layer.backend = "eager"
            want = layer(x, frame_mask)
            layer.backend = "flex"
            got = layer(x, frame_mask)
    finally:
        set_flex_compile(True)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)


@pytest.mark.parametrize("direction", ["future", "past"])
def test_pattern_dense_equals_build_mask(direction):
    layer = BlockCausalAttention(8, 2, direction)
    frame_mask = torch.arange(4)[None, :] < torch.tensor([4, 2, 0])[:, None]
    pattern = layer.build_pattern(4, 3, (4, 2, 0))
    assert torch.equal(pattern.dense(), layer.build_mask(4, 3, frame_mask))
    assert layer.build_pattern(4, 3, (4, 4)).real_frames is None  # no padding: one shared mask
    quirk = BlockCausalAttention(8, 2, direction, attends_padding=True)
    assert torch.equal(quirk.build_pattern(4, 3, (4, 2)).dense(), quirk.build_mask(4, 3, frame_mask[:2]))


def test_block_mask_is_frame_aligned_and_skips_masked_blocks():
    pytest.importorskip("torch.nn.attention.flex_attention")
    from torch.nn.attention.flex_attention import create_block_mask

    assert block_tokens(32, "cpu") == 32 and block_tokens(32, "cuda") == 128
    assert block_tokens(3, "cpu") % 3 == 0 and block_tokens(48, "cpu") == 48
    pattern = BlockCausalPattern(10, 32, "future")

    def mask_mod(b, h, q, k):
        return pattern.allowed(b, q, k, None)

    block_mask = create_block_mask(mask_mod, None, None, 320, 320, device="cpu", BLOCK_SIZE=32)
    # 10 x 10 frame blocks, 55 allowed (all of them entirely): 45% of the work is skipped, none is partial.
    assert block_mask.sparsity() == pytest.approx(45.0)
    assert int(block_mask.full_kv_num_blocks.sum()) == 55


def test_compiled_flex_equals_eager_on_the_model(caplog):
    """The compiled kernel (the path "flex" takes by default); falls back with one log line where it cannot run."""
    model = tiny_model(tokens_per_frame=4, window_size=4, window_stride=4)
    features = torch.randn(3, 10, 4, 12)
    frame_mask = torch.arange(10)[None, :] < torch.tensor([10, 6, 3])[:, None]
    backends._LOGGED.clear()
    with caplog.at_level(logging.WARNING, logger="favor_qformer"):
        got, want = _eager_and("flex", model, features, frame_mask)
    _assert_same(got, want)
    lines = [r.getMessage() for r in caplog.records if r.name == "favor_qformer"]
    if flex_failure(torch.device("cpu"), torch.float32) is None:
        assert lines == []  # the compiled kernel ran (no fallback to SDPA)
    else:
        assert len(lines) == 1 and "flex unavailable" in lines[0], lines


def _causal_inputs(batch, heads, frames, tokens, head_dim, requires_grad=False):
    pattern = BlockCausalPattern(frames, tokens, "future")
    q, k, v = (
        torch.randn(batch, heads, frames * tokens, head_dim, requires_grad=requires_grad) for _ in "qkv"
    )
    return AttentionInputs(q, k, v, mask=pattern.dense(), pattern=pattern)


def test_auto_picks_flex_only_on_large_block_causal_calls(uncompiled_flex):
    large = _causal_inputs(2, 12, 10, 32, 128)  # 2 windows at the released shape
    assert large.flops >= backends.AUTO_FLEX_MIN_FLOPS
    assert select_backend("auto", large).name == "flex"
    small = _causal_inputs(2, 2, 3, 2, 4)
    assert select_backend("auto", small).name == "sdpa"
    # The same call without its pattern (e.g. cross-attention) stays on SDPA, silently, even when flex is asked.
    plain = AttentionInputs(large.query, large.key, large.value)
    assert select_backend("auto", plain).name == "sdpa"
    assert select_backend("flex", plain).name == "sdpa"


def test_flex_refusals_fall_back_with_one_log_line(caplog):
    backends._LOGGED.clear()
    training = _causal_inputs(2, 2, 3, 2, 4, requires_grad=True)
    reasons = backends.BACKENDS["flex"].supports(training)
    assert any("backward on CPU" in r for r in reasons)
    dropout = _causal_inputs(2, 2, 3, 2, 4)
    dropout.dropout_p = 0.1
    assert any("dropout" in r for r in backends.BACKENDS["flex"].supports(dropout))
    with caplog.at_level(logging.WARNING, logger="favor_qformer"):
        for _ in range(3):
            assert select_backend("flex", training).name == "sdpa"
        assert select_backend("auto", training).name == "sdpa"
    lines = [r.getMessage() for r in caplog.records if r.name == "favor_qformer"]
    assert len(lines) == 1 and "flex unavailable, using sdpa" in lines[0], lines
    backends._LOGGED.clear()


def test_flex_trains_through_sdpa_on_cpu():
    """Training on CPU with backend "flex": gradients flow (through SDPA) and equal eager's."""
    model = tiny_model()
    features = torch.randn(2, 7, 2, 12)
    grads = {}
    for backend in ("eager", "flex"):
        model.zero_grad()
        model.set_attention_backend(backend)
        model(features).tokens.square().sum().backward()
        grads[backend] = model.layers[0].causal_attention.query.weight.grad.clone()
    torch.testing.assert_close(grads["flex"], grads["eager"], rtol=1e-4, atol=1e-6)
