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


def test_to_dict_from_dict_and_json_round_trips(tmp_path):
    from favor_llm.testing import tiny_config

    c = tiny_config()
    again = FavorConfig.from_dict(c.to_dict())
    assert again.to_dict() == c.to_dict()
    assert isinstance(again.causal_qformer_config, CausalQFormerConfig)
    assert again.causal_qformer_config == c.causal_qformer_config
    from_json = FavorConfig.from_json_file(_write(tmp_path / "c.json", c.to_json_string()))
    assert from_json.to_dict() | {"_name_or_path": ""} == c.to_dict() | {"_name_or_path": ""}
    # the dataclass or a dict of its fields on input, the same config
    as_dict = tiny_config(causal_qformer_config=c.causal_qformer_config.to_dict())
    assert as_dict.causal_qformer_config == c.causal_qformer_config
    with pytest.raises(ValueError, match="causal_qformer_config: unknown fields"):
        tiny_config(causal_qformer_config={"num_querys": 4})


def _write(path, text):
    path.write_text(text)
    return path


def test_sub_configs_load_alone_from_a_favor_config(tmp_path):
    """``InstructBlipQFormerConfig.from_pretrained(dir)`` reads the key ``qformer_config`` first: the causal
    Q-Former's config is named ``causal_qformer_config`` so the frame encoder's Q-Former config is found instead."""
    from transformers import InstructBlipQFormerConfig, InstructBlipVisionConfig, LlamaConfig

    from favor_llm.testing import tiny_config

    c = tiny_config()
    c.save_pretrained(tmp_path)
    strip = lambda d: {k: v for k, v in d.items() if k not in ("transformers_version", "_name_or_path")}  # noqa: E731
    for cls, sub in (
        (InstructBlipVisionConfig, c.vision_config),
        (InstructBlipQFormerConfig, c.vision_qformer_config),
        (LlamaConfig, c.text_config),
    ):
        loaded = cls.from_pretrained(tmp_path)
        assert strip(loaded.to_dict()) == strip(sub.to_dict()), cls.__name__
    for name, sub in c.sub_configs.items():
        assert getattr(c, name) is None or isinstance(getattr(c, name), type(getattr(c, name))), (name, sub)


def test_run_time_switches_are_not_saved(tmp_path):
    import json

    from favor_llm.testing import tiny_model_and_processor

    model, _ = tiny_model_and_processor()
    model.gradient_checkpointing_enable()
    model.causal_qformer.config.check_finite = False
    assert model.causal_qformer.config.gradient_checkpointing
    model.config.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())["causal_qformer_config"]
    assert "gradient_checkpointing" not in saved and "check_finite" not in saved
    assert not model.config.causal_qformer_config.gradient_checkpointing  # the model's switch is its own


def test_earlier_field_names_still_load(tmp_path):
    from favor_llm.testing import tiny_config

    tiny_config().save_pretrained(tmp_path)
    assert FavorConfig.from_pretrained(tmp_path, image_repeat=3).repeat_image == 3

    c = tiny_config(
        image_repeat=5, qformer_config={**tiny_config().causal_qformer_config.to_dict(), "num_queries": 2}
    )
    assert c.repeat_image == 5 and c.image_repeat == 5
    assert c.num_queries == 2 and c.qformer_config is c.causal_qformer_config


def test_config_common_properties(tmp_path):
    """What transformers' ConfigTester checks: subfolders, num_labels, init without arguments."""
    from favor_llm.testing import tiny_config

    c = tiny_config()
    c.save_pretrained(tmp_path / "sub")
    loaded = FavorConfig.from_pretrained(tmp_path, subfolder="sub")
    assert loaded.to_dict() | {"_name_or_path": ""} == c.to_dict() | {"_name_or_path": ""}
    assert len(FavorConfig(num_labels=5).id2label) == 5
    assert FavorConfig().to_dict()["causal_qformer_config"]["num_queries"] == 32


@pytest.mark.parametrize(
    ("field", "value"),
    [("use_lora", "false"), ("qformer_fp32", "false"), ("repeat_image", "8"), ("lora_r", True), ("fps", "2")],
)
def test_hand_edited_config_with_wrong_types_is_refused(tmp_path, field, value):
    """Issue 10: a config.json edited by hand with ``"false"`` (truthy) or quoted numbers is a ValueError naming
    the field, not a model built with LoRA on."""
    import json

    from favor_llm.testing import tiny_config

    tiny_config().save_pretrained(tmp_path)
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), field: value}))
    with pytest.raises(ValueError, match=f"FavorConfig.{field}: expected"):
        FavorConfig.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match=field):
        tiny_config(**{field: value})
