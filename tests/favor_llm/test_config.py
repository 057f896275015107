"""FavorConfig: released defaults, serialisation, AutoConfig, derived sizes, statistics computed from configs."""

from __future__ import annotations

import pytest
from transformers import AutoConfig

from favor_llm import AVLayout, FavorConfig, av_tokens_per_minute, num_windows
from favor_llm.stats import parameter_counts
from favor_qformer import CausalQFormerConfig


def test_defaults_are_the_released_model():
    c = FavorConfig()
    assert c.model_type == "favor"
    assert c.vision_config.model_type == "instructblip_vision_model"
    assert c.vision_config.hidden_size == 1408 and c.vision_config.num_hidden_layers == 39
    assert c.vision_qformer_config.hidden_size == 768 and c.vision_num_query_tokens == 32
    assert [a.model_type for a in c.audio_configs] == ["whisper"] and c.audio_feature_rates == [50.0]
    assert c.audio_configs[0].d_model == 1280 and c.audio_configs[0].encoder_layers == 32
    assert c.text_config.hidden_size == 5120 and c.text_config.num_hidden_layers == 40
    assert (c.lora_r, c.lora_alpha, c.lora_dropout) == (32, 32, 0.1)
    assert c.lora_target_modules == ["q_proj", "k_proj", "v_proj", "o_proj"]
    assert c.diversity_loss_weight == 0.01 and c.fps == 2.0 and c.repeat_image == 60
    q = c.causal_qformer_config
    assert isinstance(q, CausalQFormerConfig)
    assert (q.hidden_size, q.num_layers, q.num_queries, q.window_size, q.window_stride) == (
        768,
        2,
        32,
        10,
        10,
    )
    # 768 visual + 768 projected Whisper features, 32 tokens per frame (released joint width)
    assert q.encoder_hidden_size == 1536 and q.tokens_per_frame == 32


def test_round_trip_and_autoconfig(tmp_path):
    from favor_llm.testing import tiny_config

    c = tiny_config()
    c.save_pretrained(tmp_path)
    loaded = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(loaded, FavorConfig)
    strip = lambda d: {k: v for k, v in d.items() if k != "_name_or_path"}  # noqa: E731
    assert strip(loaded.to_dict()) == strip(c.to_dict())
    assert loaded.audio_configs[0].max_source_positions == 250
    assert loaded.causal_qformer_config == c.causal_qformer_config


def test_bad_audio_rates():
    with pytest.raises(ValueError, match="audio_feature_rates"):
        FavorConfig(audio_feature_rates=[50.0, 25.0])
    with pytest.raises(ValueError, match="audio_feature_rates"):
        FavorConfig(audio_feature_rates=[0.0])
    with pytest.raises(ValueError, match="1 to 4 audio encoders"):
        FavorConfig(audio_configs=[])
    with pytest.raises(ValueError, match="model_type"):
        FavorConfig(audio_configs=[{"d_model": 3}])


def test_tokens_per_minute_released():
    # 2 fps x 60 s = 120 frames = 12 windows of 10 frames, x 32 queries
    assert av_tokens_per_minute() == 384.0
    layout = AVLayout.from_config(FavorConfig())
    assert layout.av_tokens(visual_frames=120, audio_samples=60 * 16000) == 384
    assert num_windows(0, 10, 10) == 0 and num_windows(1, 10, 10) == 1 and num_windows(23, 10, 10) == 3


def test_released_parameter_counts_from_configs():
    counts = parameter_counts(FavorConfig())
    parts = counts["components"]
    # LoRA: 40 layers x 4 projections x (A: 32 x 5120 + B: 5120 x 32)
    assert parts["lora"]["trainable"] == 40 * 4 * 2 * 32 * 5120 and parts["lora"]["frozen"] == 0
    # Vicuna-13B
    assert parts["text"]["frozen"] == 13_015_864_320 and parts["text"]["trainable"] == 0
    # released speech_pre_qformer_proj (1280 -> 768) and llama_proj (768 -> 5120)
    assert parts["audio_projections"]["trainable"] == 1280 * 768 + 768
    assert parts["language_projection"]["trainable"] == 768 * 5120 + 5120
    assert parts["vision"]["trainable"] == 0 and parts["audio_0"]["trainable"] == 0
    assert counts["trainable"] + counts["frozen"] == counts["total"]
    assert counts["trainable"] == 103_826_176 and counts["frozen"] == 14_824_285_952
