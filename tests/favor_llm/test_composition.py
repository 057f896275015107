"""Composing other encoders and LLMs: CLIP / SigLIP patch tokens pooled per frame, a Qwen2 LLM, two audio encoders."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoConfig

from favor_llm.testing import tiny_model_and_processor, tiny_text_config, tiny_tokenizer, tiny_whisper_config

QFORMER = {
    "hidden_size": 32,
    "num_layers": 2,
    "num_heads": 4,
    "intermediate_size": 64,
    "num_queries": 4,
    "causal_num_heads": 4,
    "window_size": 4,
    "window_stride": 4,
    "max_position_embeddings": 128,
    "tokens_per_frame": 32,
}


def _vision(kind: str):
    sizes = dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=48,
        patch_size=8,
    )
    return AutoConfig.for_model(kind, **sizes)


@pytest.mark.parametrize("vision", ["clip_vision_model", "siglip_vision_model"])
def test_pooled_vision_tower_and_qwen2(vision, media):
    tok = tiny_tokenizer()
    text = tiny_text_config(tok, "qwen2")
    model, processor = tiny_model_and_processor(
        vision_config=_vision(vision), vision_qformer_config=None, qformer_config=QFORMER, text_config=text
    )
    assert model.causal_lm.config.model_type == "qwen2"
    assert not hasattr(model.vision, "qformer") and processor.qformer_tokenizer is None
    frames = model.vision(torch.randn(3, 3, 48, 48))
    assert frames.shape == (3, 32, 32)  # 36 patches pooled to 32 tokens per frame
    inputs = processor(
        text=["What?", "Hi"],
        media=[{"video": media["video"], "audio": media["audio"]}, None],
        answers=["red", "hello"],
    )
    out = model(**inputs)
    assert torch.isfinite(out.loss)
    out.loss.backward()
    assert all(p.grad is None for p in model.vision.parameters())
    with torch.no_grad():
        generated = model.generate(
            **{k: v for k, v in inputs.items() if k != "labels"}, max_new_tokens=3, do_sample=False
        )
    assert generated.shape[1] == inputs["input_ids"].shape[1] + 3


def test_two_audio_encoders(media):
    audio = [
        tiny_whisper_config(d_model=32),
        tiny_whisper_config(d_model=48),
    ]
    model, processor = tiny_model_and_processor(audio_configs=audio, audio_feature_rates=[50.0, 50.0])
    # 32 visual + 2 x 32 projected audio
    assert model.config.causal_qformer_config.encoder_hidden_size == 96
    assert [p.in_features for p in model.audio_projections] == [32, 48]
    inputs = processor(
        text=["What?", "Sound?"],
        media=[{"video": media["video"], "audio": media["audio"]}, media["short_audio"]],
    )
    assert "input_features_1" in inputs
    with torch.no_grad():
        out = model(**inputs)
        generated = model.generate(**inputs, max_new_tokens=3, do_sample=False)
    assert torch.isfinite(out.logits).all()
    assert generated.shape[1] == inputs["input_ids"].shape[1] + 3
    # the second encoder matters: zeroing its column changes the AV tokens
    with torch.no_grad():
        masked = model(**inputs, modality_mask=torch.tensor([[1.0, 1.0, 0.0], [0.0, 1.0, 0.0]]))
    assert (masked.av_tokens - out.av_tokens).abs().max() > 1e-6
