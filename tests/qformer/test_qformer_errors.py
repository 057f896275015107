"""Bad input gets a ValueError naming the argument, what was expected and what came; edge cases stay defined."""

from __future__ import annotations

import pytest
import torch
from qformer_helpers import tiny_config, tiny_model

from favor_qformer import (
    BlockCausalAttention,
    CausalQFormer,
    CausalQFormerConfig,
    MultiHeadAttention,
    block_causal_mask,
    count_windows,
    diversity_loss,
    query_similarity,
)


@pytest.fixture(scope="module")
def model():
    return tiny_model()


@pytest.mark.parametrize(
    ("features", "pattern"),
    [
        (torch.randn(2, 4, 12), r"features: expected a 4-D tensor .*got shape \(2, 4, 12\)"),
        (torch.randn(2, 4, 2, 13), r"features: expected encoder_hidden_size=12 .*got 13"),
        (torch.randn(2, 4, 3, 12), r"features: expected tokens_per_frame=2 .*got 3"),
        (torch.randn(2, 0, 2, 12), r"features: expected at least one frame, got 0 frames"),
        (torch.randn(0, 4, 2, 12), r"features: expected at least one video"),
        (
            torch.ones(2, 4, 2, 12, dtype=torch.long),
            r"features: expected a floating-point tensor, got torch.int64",
        ),
        ([[1.0]], r"features: expected a torch.Tensor, got list"),
    ],
)
def test_bad_features(model, features, pattern):
    with pytest.raises(ValueError, match=pattern):
        model(features)


@pytest.mark.parametrize(
    ("frame_mask", "pattern"),
    [
        (torch.ones(2, 5, dtype=torch.bool), r"frame_mask: expected shape \(2, 4\) .*got \(2, 5\)"),
        (torch.ones(2, 4), r"frame_mask: expected dtype torch.bool .*got torch.float32"),
        (torch.ones(2, 4, dtype=torch.long), r"frame_mask: expected dtype torch.bool .*got torch.int64"),
        (
            torch.tensor([[True, False, True, True], [True] * 4]),
            r"frame_mask: expected real frames first.*rows \[0\]",
        ),
        ([[True] * 4] * 2, r"frame_mask: expected a bool torch.Tensor"),
    ],
)
def test_bad_frame_mask(model, frame_mask, pattern):
    with pytest.raises(ValueError, match=pattern):
        model(torch.randn(2, 4, 2, 12), frame_mask)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_features_are_detected(model, bad):
    features = torch.randn(2, 4, 2, 12)
    features[1, 2, 0, 5] = bad
    with pytest.raises(ValueError, match=r"features: expected finite values, got 1 NaN/inf entries"):
        model(features)


def test_features_on_another_device(model):
    with pytest.raises(ValueError, match=r"features: expected a tensor on the model's device cpu, got meta"):
        model(torch.randn(2, 4, 2, 12, device="meta"))


def test_non_finite_check_can_be_switched_off():
    model = tiny_model(check_finite=False)
    features = torch.randn(1, 4, 2, 12)
    features[0, 3] = float("nan")
    with torch.no_grad():
        out = model(features, torch.tensor([[True, True, True, False]]))  # NaN only in a padding frame
    assert torch.isfinite(out.tokens).all()


def test_all_masked_batch_is_defined(model):
    frame_mask = torch.zeros(2, 4, dtype=torch.bool)
    out = model(torch.randn(2, 4, 2, 12), frame_mask)
    assert out.tokens.shape == (2, 1, 4, 16)
    assert not out.window_mask.any()
    assert out.tokens.abs().sum() == 0 and torch.isfinite(out.tokens).all()
    assert out.window_frames.abs().sum() == 0
    assert diversity_loss(out.tokens, out.window_mask).item() == 0.0


def test_one_empty_video_among_others(model):
    frame_mask = torch.tensor([[False] * 4, [True] * 4])
    with torch.no_grad():
        out = model(torch.randn(2, 4, 2, 12), frame_mask)
    assert out.window_mask.tolist() == [[False, False], [True, True]]
    assert out.tokens[0].abs().sum() == 0 and torch.isfinite(out.tokens).all()


@pytest.mark.parametrize(
    ("fields", "pattern"),
    [
        ({"hidden_size": 15}, r"hidden_size: expected a multiple of num_heads=2, got 15"),
        (
            {"encoder_hidden_size": 13},
            r"encoder_hidden_size: expected a multiple of causal_num_heads=2, got 13",
        ),
        ({"window_stride": 4}, r"window_stride: expected <= window_size=3"),
        ({"causal_direction": "up"}, r"causal_direction: expected one of \('future', 'past'\), got 'up'"),
        ({"position_embedding": "rope"}, r"position_embedding: expected one of"),
        ({"attention_backend": "flash"}, r"attention_backend: expected one of"),
        ({"num_layers": 0}, r"num_layers: expected a positive int, got 0"),
        (
            {"max_position_embeddings": 5},
            r"max_position_embeddings: expected >= window_size \* tokens_per_frame = 6",
        ),
        ({"dropout": 1.5}, r"dropout: expected a value in \[0, 1\)"),
        # hand-edited JSON (issue 10): "false" is truthy, "0.1" raised a TypeError from the range check
        (
            {"causal_attends_window_padding": "false"},
            r"causal_attends_window_padding: expected true or false",
        ),
        ({"causal": "false"}, r"causal: expected true or false, got 'false'"),
        ({"stack_causal": 1}, r"stack_causal: expected true or false, got 1"),
        ({"dropout": "0.1"}, r"dropout: expected a number, got '0.1'"),
    ],
)
def test_bad_config(fields, pattern):
    with pytest.raises(ValueError, match=pattern):
        tiny_config(**fields)


def test_config_dict_round_trip_and_unknown_keys():
    config = tiny_config(causal_direction="past", stack_causal=True)
    assert CausalQFormerConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match=r"unknown keys \['colour'\]"):
        CausalQFormerConfig.from_dict({**config.to_dict(), "colour": 1})


def test_released_defaults():
    config = CausalQFormerConfig()
    assert (config.hidden_size, config.num_layers, config.num_heads, config.intermediate_size) == (
        768,
        2,
        12,
        3072,
    )
    assert (config.num_queries, config.encoder_hidden_size, config.window_size, config.tokens_per_frame) == (
        32,
        1536,
        10,
        32,
    )
    assert config.causal and config.causal_direction == "future" and not config.stack_causal
    assert config.layer_norm_eps == 1e-12 and config.input_layer_norm_eps == 1e-5
    assert not config.causal_attends_window_padding


def test_block_causal_attention_errors():
    layer = BlockCausalAttention(dim=8, num_heads=2)
    with pytest.raises(ValueError, match=r"x: expected a 4-D tensor .*got shape \(2, 8\)"):
        layer(torch.randn(2, 8))
    with pytest.raises(ValueError, match=r"frame_mask: expected a bool tensor of shape \(1, 3\)"):
        layer(torch.randn(1, 3, 2, 8), torch.ones(1, 3))
    with pytest.raises(ValueError, match=r"direction: expected one of"):
        BlockCausalAttention(dim=8, num_heads=2, direction="sideways")
    with pytest.raises(ValueError, match=r"num_heads: expected a divisor of dim=8, got 3"):
        BlockCausalAttention(dim=8, num_heads=3)
    with pytest.raises(ValueError, match=r"direction"):
        block_causal_mask(3, 2, "both")


def test_block_causal_mask_pattern():
    future = block_causal_mask(3, 2, "future")
    assert future.shape == (6, 6)
    assert future[0].all() and future[5].tolist() == [False] * 4 + [True] * 2
    assert torch.equal(block_causal_mask(3, 2, "past"), future.T)


def test_diversity_loss_errors():
    with pytest.raises(ValueError, match=r"tokens: expected .*got shape \(4, 8\)"):
        diversity_loss(torch.randn(4, 8))
    with pytest.raises(ValueError, match=r"tokens: expected at least 2 queries per window, got 1"):
        diversity_loss(torch.randn(3, 1, 8))
    with pytest.raises(ValueError, match=r"mask: expected a bool tensor of shape \(2, 3\)"):
        diversity_loss(torch.randn(2, 3, 4, 8), torch.ones(2, 3))


def test_diversity_loss_of_zero_vectors_is_zero():
    tokens = torch.zeros(2, 4, 8)
    assert diversity_loss(tokens).item() == 0.0
    parallel = torch.ones(1, 3, 8)
    torch.testing.assert_close(diversity_loss(parallel), torch.tensor(1.0))


def test_from_pretrained_refuses_mismatches(tmp_path):
    model = tiny_model()
    model.save_pretrained(tmp_path)
    other = tiny_config(intermediate_size=24)
    other.save(tmp_path / "config.json")
    with pytest.raises(
        ValueError,
        match=r"wrong shapes \[.*'layers\.0\.ffn\.fc1\.weight: expected \(24, 16\), got \(32, 16\)'",
    ):
        CausalQFormer.from_pretrained(tmp_path)
    tiny_config(causal=False).save(tmp_path / "config.json")
    with pytest.raises(ValueError, match=r"unexpected keys \['layers.0.causal_attention"):
        CausalQFormer.from_pretrained(tmp_path)
    tiny_config(num_layers=3).save(tmp_path / "config.json")
    with pytest.raises(ValueError, match=r"missing keys \['layers.2"):
        CausalQFormer.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"lacks .*model.safetensors"):
        (tmp_path / "model.safetensors").unlink()
        CausalQFormer.from_pretrained(tmp_path)


def test_gradient_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    model = tiny_model()
    model.train()  # dropout is 0 in the tiny config, so train mode is deterministic
    features = torch.randn(2, 5, 2, 12)

    def grads():
        model.zero_grad()
        model(features).tokens.square().sum().backward()
        return {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}

    plain = grads()
    model.gradient_checkpointing_enable()
    checkpointed = grads()
    model.gradient_checkpointing_disable()
    assert plain.keys() == checkpointed.keys() and len(plain) > 10
    for key in plain:
        torch.testing.assert_close(checkpointed[key], plain[key], rtol=0, atol=1e-6)


def test_import_does_not_pull_transformers_or_xformers():
    import subprocess
    import sys

    code = "import sys, favor_qformer; print('transformers' in sys.modules, 'xformers' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["False", "False"]


def test_xformers_attn_bias_pattern():
    from favor_qformer import block_causal_additive_bias, block_causal_attn_bias

    bias = block_causal_attn_bias(3, 3, "future", batch_size=2, num_heads=4, dtype=torch.float32)
    assert bias.shape == (2, 4, 9, 9) and bias.stride(-2) % 8 == 0  # rows stored 8-aligned for xformers
    allowed = block_causal_mask(3, 3, "future")
    assert torch.equal(bias[1, 3] == 0, allowed) and bool(torch.isneginf(bias[0, 0][~allowed]).all())
    assert torch.equal(block_causal_additive_bias(3, 3, "past") == 0, block_causal_mask(3, 3, "past"))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_features_that_overflow_the_model_dtype_are_detected(dtype):
    # Finite float32 features become inf when cast to a half-precision model: a clear error, never NaN tokens.
    model = tiny_model().to(dtype)
    # Past the range of float16 (65504) in float32, of bfloat16 (about 3.4e38) in float64.
    features = torch.randn(1, 4, 2, 12, dtype=torch.float32 if dtype == torch.float16 else torch.float64)
    features[0, 1, 1, 3] = 1e5 if dtype == torch.float16 else 1e39
    name = str(dtype).removeprefix("torch.")
    with pytest.raises(
        ValueError,
        match=rf"features: expected values within the range of the model's dtype {name} .*got 1 entries",
    ):
        model(features)
    features[0, 1, 1, 3] = 1.0
    with torch.no_grad():
        assert torch.isfinite(model(features).tokens).all()


def test_block_causal_attention_wrong_width():
    layer = BlockCausalAttention(dim=8, num_heads=2)
    with pytest.raises(
        ValueError, match=r"x: expected dim=8 features \(dim 3\), got 6 \(shape \(1, 2, 2, 6\)\)"
    ):
        layer(torch.randn(1, 2, 2, 6))


def test_diversity_loss_non_tensor_arguments():
    with pytest.raises(ValueError, match=r"tokens: expected a torch.Tensor, got list"):
        diversity_loss([[[1.0, 2.0], [3.0, 4.0]]])
    with pytest.raises(ValueError, match=r"mask: expected a bool tensor of shape \(2,\), got list"):
        diversity_loss(torch.randn(2, 3, 4), [True, False])


def test_query_similarity_of_no_window_is_an_error_not_nan():
    """An average over no window has no value: a ValueError, not a (Q, Q) matrix of NaN (a figure of NaN, a
    JSON file Python writes as the non-standard ``NaN``)."""
    with pytest.raises(ValueError, match=r"mask: no window selected"):
        query_similarity(torch.randn(2, 3, 4, 8), torch.zeros(2, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"tokens: no window"):
        query_similarity(torch.randn(0, 4, 8))
    with pytest.raises(ValueError, match=r"tokens: expected at least 2 queries per window, got 1"):
        query_similarity(torch.randn(3, 1, 8))


def test_all_masked_diversity_loss_ignores_non_finite_masked_windows():
    # Masked windows never count, even when every window is masked and they hold NaN/inf.
    tokens = torch.randn(2, 3, 4, 8, requires_grad=True)
    garbage = tokens.detach().clone()
    garbage[0, 1] = float("nan")
    garbage[1, 2] = float("inf")
    garbage.requires_grad_(True)
    loss = diversity_loss(garbage, torch.zeros(2, 3, dtype=torch.bool))
    assert loss.item() == 0.0
    loss.backward()
    assert garbage.grad is not None and torch.equal(garbage.grad, torch.zeros_like(garbage))


@pytest.mark.parametrize(
    ("args", "pattern"),
    [
        (
            (5, 3, 0),
            r"window_stride: expected an int in \[1, window_size=3\].*got 0",
        ),  # was ZeroDivisionError
        (
            (5, 3, 4),
            r"window_stride: expected an int in \[1, window_size=3\].*got 4",
        ),  # was 2 windows skipping
        ((5, 0, 1), r"window_size: expected an int >= 1, got 0"),  # was 6 windows
        ((5.5, 3, 1), r"num_frames: expected an int >= 0, got 5.5"),  # was 4 windows
        ((-1, 3, 1), r"num_frames: expected an int >= 0, got -1"),
    ],
)
def test_count_windows_errors(args, pattern):
    with pytest.raises(ValueError, match=pattern):
        count_windows(*args)
    assert count_windows(0, 3, 1) == 0 and count_windows(5, 3, 1) == 3 and count_windows(7, 3, 3) == 3


@pytest.mark.parametrize(
    ("x", "context", "pattern"),
    [
        (
            torch.randn(2, 3, 7),
            torch.randn(2, 4, 6),
            r"x: expected \(batch, tokens, 8\), got shape \(2, 3, 7\)",
        ),
        (torch.randn(3, 8), None, r"x: expected \(batch, tokens, 8\), got shape \(3, 8\)"),
        (
            torch.randn(2, 3, 8),
            torch.randn(2, 4, 5),
            r"context: expected \(batch=2, tokens, 6\), got shape \(2, 4, 5\)",
        ),
        (
            torch.randn(2, 3, 8),
            torch.randn(3, 4, 6),
            r"context: expected \(batch=2, tokens, 6\), got shape \(3, 4, 6\)",
        ),
    ],
)
def test_multi_head_attention_shape_errors(x, context, pattern):
    # Public block: wrong widths were matmul RuntimeErrors, a wrong batch a backend refusal about q/k/v.
    block = MultiHeadAttention(8, 2, kv_dim=6)
    with pytest.raises(ValueError, match=pattern):
        block(x, context)
