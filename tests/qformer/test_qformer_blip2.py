"""Equivalence with transformers' BLIP-2 Q-Former after ``from_blip2_qformer`` (skips when transformers is absent)."""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest
import torch

from favor_qformer import CausalQFormer

transformers = pytest.importorskip(
    "transformers", reason="transformers not installed (favor-qformer does not need it)"
)

HIDDEN, HEADS, ENCODER, FRAMES, TOKENS = 32, 4, 24, 3, 5


def _blip2(frequency: int = 2, layers: int = 3):
    config = transformers.Blip2QFormerConfig(
        hidden_size=HIDDEN,
        num_hidden_layers=layers,
        num_attention_heads=HEADS,
        intermediate_size=64,
        encoder_hidden_size=ENCODER,
        cross_attention_frequency=frequency,
    )
    model = transformers.Blip2QFormerModel(config).eval()
    with torch.no_grad():  # non-trivial LayerNorms and biases
        for name, param in model.named_parameters():
            if "LayerNorm.weight" in name or "layernorm.weight" in name:
                param.copy_(1 + 0.1 * torch.randn_like(param))
            elif name.endswith("bias"):
                param.copy_(0.1 * torch.randn_like(param))
    return model


def _reference(model, query_tokens, features, frame_mask=None):
    flat = features.reshape(features.shape[0], -1, features.shape[-1])  # one window = the whole input
    kwargs = {}
    if frame_mask is not None:
        kwargs["encoder_attention_mask"] = frame_mask.repeat_interleave(TOKENS, dim=1).long()
    with torch.no_grad():
        return model(
            query_embeds=query_tokens.expand(features.shape[0], -1, -1), encoder_hidden_states=flat, **kwargs
        ).last_hidden_state


def _ours(converted, features, frame_mask=None):
    with torch.no_grad():
        out = converted.eval()(features, frame_mask)
    assert out.tokens.shape[1] == 1 and out.window_mask.all()
    return out.tokens[:, 0]


@pytest.mark.parametrize("frequency", [1, 2])
@pytest.mark.parametrize("backend", ["eager", "sdpa", "auto"])
def test_matches_blip2_qformer(frequency, backend):
    model = _blip2(frequency)
    query_tokens = torch.randn(1, 6, HIDDEN)
    ours = CausalQFormer.from_blip2_qformer(
        model,
        query_tokens,
        window_size=FRAMES,
        window_stride=FRAMES,
        tokens_per_frame=TOKENS,
        attention_backend=backend,
    )
    config = ours.config
    assert not config.causal and not config.input_layernorm and config.position_embedding == "none"
    assert (config.hidden_size, config.num_heads, config.encoder_hidden_size, config.num_layers) == (
        HIDDEN,
        HEADS,
        ENCODER,
        3,
    )
    assert config.cross_attention_every == frequency and config.num_queries == 6
    features = torch.randn(2, FRAMES, TOKENS, ENCODER)
    torch.testing.assert_close(
        _ours(ours, features), _reference(model, query_tokens, features), rtol=0, atol=1e-5
    )
    # videos shorter than the window: padding frames masked on both sides
    frame_mask = torch.tensor([[True, True, False], [True, True, True]])
    torch.testing.assert_close(
        _ours(ours, features, frame_mask),
        _reference(model, query_tokens, features, frame_mask),
        rtol=0,
        atol=1e-5,
    )


def test_whole_blip2_model_and_state_dict_inputs():
    model = _blip2()
    query_tokens = torch.randn(1, 6, HIDDEN)
    features = torch.randn(2, FRAMES, TOKENS, ENCODER)
    want = _reference(model, query_tokens, features)
    window = {"window_size": FRAMES, "window_stride": FRAMES, "tokens_per_frame": TOKENS}

    # a Blip2Model-like object: its .qformer and .query_tokens are used
    holder = SimpleNamespace(qformer=model, query_tokens=torch.nn.Parameter(query_tokens))
    torch.testing.assert_close(
        _ours(CausalQFormer.from_blip2_qformer(holder, **window), features), want, rtol=0, atol=1e-5
    )

    # a full Blip2Model state dict (qformer.* + query_tokens + other modules' tensors)
    full = {f"qformer.{k}": v for k, v in model.state_dict().items()}
    full.update({"query_tokens": query_tokens, "language_projection.weight": torch.zeros(2, 2)})
    converted = CausalQFormer.from_blip2_qformer(full, num_heads=HEADS, **window)
    assert not converted.training  # loaders return eval mode (issue 10)
    torch.testing.assert_close(_ours(converted, features), want, rtol=0, atol=1e-5)

    # LAVIS layout (Qformer.bert.…, attention.self.…, embeddings.LayerNorm), without and with the text FFN
    lavis = {}
    for key, value in model.state_dict().items():
        key = re.sub(r"\.(attention|crossattention)\.attention\.", r".\1.self.", key)
        key = key.replace("layernorm.", "embeddings.LayerNorm.")
        lavis[f"Qformer.bert.{key}"] = value
    lavis["query_tokens"] = query_tokens
    with_text = {
        **lavis,
        "Qformer.bert.encoder.layer.0.intermediate.dense.weight": torch.zeros(64, HIDDEN),
        "Qformer.bert.encoder.layer.0.output.LayerNorm.bias": torch.zeros(HIDDEN),
        "Qformer.bert.embeddings.word_embeddings.weight": torch.zeros(10, HIDDEN),
        "Qformer.cls.predictions.bias": torch.zeros(10),
    }
    for state in (lavis, with_text):
        converted = CausalQFormer.from_blip2_qformer(state, num_heads=HEADS, **window)
        torch.testing.assert_close(_ours(converted, features), want, rtol=0, atol=1e-5)


def test_overrides_add_fresh_causal_modules_and_windows():
    model = _blip2()
    ours = CausalQFormer.from_blip2_qformer(
        model,
        torch.randn(1, 6, HIDDEN),
        causal=True,
        causal_num_heads=4,
        window_size=2,
        tokens_per_frame=TOKENS,
    ).eval()
    assert ours.layers[0].causal_attention is not None
    torch.testing.assert_close(
        ours.layers[0].self_attention.query.weight, model.encoder.layer[0].attention.attention.query.weight
    )
    with torch.no_grad():
        out = ours(torch.randn(1, 5, TOKENS, ENCODER))
    assert out.tokens.shape == (1, 3, 6, HIDDEN) and torch.isfinite(out.tokens).all()


def test_conversion_errors():
    model = _blip2()
    state = model.state_dict()
    with pytest.raises(
        ValueError, match=r"unexpected keys for a BLIP-2 Q-Former: \['encoder\.layer\.0\.mystery\.weight'\]"
    ):
        CausalQFormer.from_blip2_qformer(
            {**state, "encoder.layer.0.mystery.weight": torch.zeros(1)}, num_heads=HEADS
        )
    with pytest.raises(ValueError, match=r"cannot infer num_heads"):
        CausalQFormer.from_blip2_qformer(state)
    broken = {k: v for k, v in state.items() if k != "encoder.layer.1.output_query.dense.bias"}
    with pytest.raises(ValueError, match=r"missing keys \['layers\.1\.ffn\.fc2\.bias'\]"):
        CausalQFormer.from_blip2_qformer(broken, num_heads=HEADS)
    with pytest.raises(ValueError, match=r"model_or_state_dict: expected a BLIP-2"):
        CausalQFormer.from_blip2_qformer(42)


def test_matches_instructblip_qformer_without_instruction():
    """InstructBLIP's Q-Former (the released frame encoder's) loads the same way; with no instruction tokens its
    query outputs equal ours."""
    config = transformers.InstructBlipQFormerConfig(
        hidden_size=HIDDEN,
        num_hidden_layers=2,
        num_attention_heads=HEADS,
        intermediate_size=64,
        encoder_hidden_size=ENCODER,
        cross_attention_frequency=1,
        vocab_size=100,
    )
    model = transformers.InstructBlipQFormerModel(config).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "layernorm.weight" in name.lower():
                param.copy_(1 + 0.1 * torch.randn_like(param))
            elif name.endswith("bias"):
                param.copy_(0.1 * torch.randn_like(param))
    queries = torch.randn(1, 8, HIDDEN)
    features = torch.randn(2, FRAMES, TOKENS, ENCODER)
    converted = CausalQFormer.from_blip2_qformer(
        model, query_tokens=queries, window_size=FRAMES, window_stride=FRAMES, tokens_per_frame=TOKENS
    )
    no_instruction = torch.zeros(2, 0, dtype=torch.long)
    with torch.no_grad():
        want = model(
            input_ids=no_instruction,
            attention_mask=torch.ones(2, queries.shape[1], dtype=torch.long),
            query_embeds=queries.expand(2, -1, -1),
            encoder_hidden_states=features.reshape(2, -1, ENCODER),
        ).last_hidden_state[:, : queries.shape[1]]
    torch.testing.assert_close(_ours(converted, features), want, atol=1e-5, rtol=0)
