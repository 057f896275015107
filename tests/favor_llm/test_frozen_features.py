"""Frozen-feature inputs: `FavorModel.encode_frozen_media` once, then `forward` / `get_av_features` / `generate`
from its output give exactly what the raw-media path gives (the contract a feature cache relies on)."""

from __future__ import annotations

import pytest
import torch

from favor_llm.modeling import AV_INPUT_NAMES

RAW_KEYS = (
    "pixel_values",
    "pixel_lengths",
    "input_features",
    "qformer_input_ids",
    "qformer_attention_mask",
    "input_features_1",
)


def _frozen_inputs(model, inputs):
    frozen = model.encode_frozen_media(
        **{k: v for k, v in inputs.items() if k in (*RAW_KEYS, "frame_lengths", "audio_lengths")}
    )
    rest = {k: v for k, v in inputs.items() if k not in (*RAW_KEYS, "frame_lengths", "audio_lengths")}
    return frozen, {**rest, **frozen}


@pytest.fixture(scope="module")
def batch(tiny, media):
    _, processor = tiny
    return processor(
        text=["What?", "Sound?", "Picture?", "Both?"],
        media=[
            media["video"],
            media["audio"],
            media["image"],
            {"video": media["long_video"], "audio": media["short_audio"]},
        ],
        answers=["red", "a dog", "a cat", "blue"],
    )


def test_encode_frozen_media_shapes_and_padding(tiny, batch):
    model, _ = tiny
    frozen, _ = _frozen_inputs(model, batch)
    cfg = model.config
    b = batch["input_ids"].shape[0]
    visual = frozen["visual_features"]
    assert visual.shape[0] == b and visual.shape[2:] == (cfg.tokens_per_frame, cfg.visual_hidden_size)
    torch.testing.assert_close(frozen["frame_lengths"], batch["frame_lengths"])
    # the image (sample 2) is repeated over image_repeat frames: identical frames
    assert int(frozen["frame_lengths"][2]) == cfg.image_repeat
    torch.testing.assert_close(visual[2, 0], visual[2, cfg.image_repeat - 1], atol=0, rtol=0)
    audio = frozen["audio_features"]
    steps = torch.ceil(batch["audio_lengths"].double() * 50 / 16000).long()
    assert audio.shape == (b, int(steps.max()), cfg.audio_configs[0].d_model)  # cut to the longest real steps
    for i, s in enumerate(steps.tolist()):
        assert not audio[i, s:].any(), f"sample {i}: non-zero features past its {s} real steps"
        if s:
            assert audio[i, :s].abs().sum() > 0
    assert not visual.requires_grad and not audio.requires_grad  # frozen: no graph


def test_frozen_features_give_the_same_loss_and_logits(tiny, batch):
    model, _ = tiny
    _, frozen_batch = _frozen_inputs(model, batch)
    with torch.no_grad():
        raw = model(**batch)
        cached = model(**frozen_batch)
    torch.testing.assert_close(cached.logits, raw.logits, atol=1e-6, rtol=0)
    torch.testing.assert_close(cached.loss, raw.loss, atol=1e-6, rtol=0)
    torch.testing.assert_close(cached.diversity_loss, raw.diversity_loss, atol=1e-6, rtol=0)


def test_get_av_features_from_frozen_features(tiny, batch):
    model, _ = tiny
    frozen, _ = _frozen_inputs(model, batch)
    raw_media = {k: v for k, v in batch.items() if k not in ("input_ids", "attention_mask", "labels")}
    with torch.no_grad():
        raw = model.get_av_features(**raw_media)
        cached = model.get_av_features(**frozen)
    torch.testing.assert_close(cached.av_embeds, raw.av_embeds, atol=1e-6, rtol=0)
    torch.testing.assert_close(cached.av_tokens, raw.av_tokens, atol=1e-6, rtol=0)
    assert torch.equal(cached.window_mask, raw.window_mask)
    torch.testing.assert_close(cached.diversity_loss, raw.diversity_loss, atol=1e-6, rtol=0)
    # projected into the LLM's embedding space: (B, W, Q, E)
    assert raw.av_embeds.shape == (*raw.av_tokens.shape[:3], model.config.text_config.hidden_size)
    torch.testing.assert_close(raw.av_embeds, model.language_projection(raw.av_tokens))


def test_frozen_features_train_the_same_parameters(fresh_tiny, media):
    model, processor = fresh_tiny
    inputs = processor(
        text=["What?"], media=[{"video": media["video"], "audio": media["audio"]}], answers=["red"]
    )
    _, frozen_batch = _frozen_inputs(model, inputs)
    model.train()
    model(**frozen_batch).loss.backward()
    grads = {n for n, p in model.named_parameters() if p.grad is not None}
    assert grads == {n for n, p in model.named_parameters() if p.requires_grad}


def test_generate_from_frozen_features(tiny, batch):
    model, _ = tiny
    prompt = {k: v for k, v in batch.items() if k != "labels"}
    _, frozen_prompt = _frozen_inputs(model, prompt)
    with torch.no_grad():
        raw = model.generate(**prompt, max_new_tokens=4, do_sample=False)
        cached = model.generate(**frozen_prompt, max_new_tokens=4, do_sample=False)
    assert torch.equal(raw, cached)


def test_frozen_feature_names_are_dropped_after_prefill():
    for name in ("visual_features", "frame_lengths", "audio_features", "audio_features_1", "audio_lengths"):
        assert name in AV_INPUT_NAMES


def test_raw_and_frozen_media_together_is_an_error(tiny, batch):
    model, _ = tiny
    frozen, _ = _frozen_inputs(model, batch)
    with pytest.raises(ValueError, match="not both"):
        model(**batch, visual_features=frozen["visual_features"])


def test_frozen_features_of_the_wrong_width_are_an_error(tiny, batch):
    model, _ = tiny
    frozen, frozen_batch = _frozen_inputs(model, batch)
    frozen_batch["audio_features"] = frozen["audio_features"][..., :-1]
    with pytest.raises(ValueError, match="audio_features: expected"):
        model(**frozen_batch)
    frozen_batch = {**frozen_batch, "audio_features": frozen["audio_features"]}
    frozen_batch.pop("audio_lengths")
    with pytest.raises(ValueError, match="audio_lengths: required"):
        model(**frozen_batch)
