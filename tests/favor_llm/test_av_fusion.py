"""``av_fusion="separate"``: the no-synchronisation ablation (issue 7, item 7a).

A video Q-Former reads only the visual columns of the synchronised frames, an audio Q-Former only the audio
columns, and the LLM gets two token blocks. Checked here: the blocks are what the two Q-Formers give on their own
columns (reference computed from the synchroniser and `CausalQFormer` directly), neither block sees the other
stream, the processor's placeholder count matches, training reaches both Q-Formers, and save / load keeps it.
"""

from __future__ import annotations

import pytest
import torch

from favor_llm import AVLayout, FavorConfig, FavorModel, components
from favor_llm.testing import tiny_config, tiny_model_and_processor, tiny_tokenizer


@pytest.fixture(scope="module")
def separate():
    return tiny_model_and_processor(seed=0, av_fusion="separate")


def _clip(media, audio_scale: float = 1.0, video=None):
    return {"video": media["video"] if video is None else video, "audio": media["short_audio"] * audio_scale}


def test_config_widths_and_refusal():
    tokenizer = tiny_tokenizer()
    fused = tiny_config(tokenizer)
    split = tiny_config(tokenizer, av_fusion="separate")
    dv = fused.visual_hidden_size
    assert fused.causal_qformer_config.encoder_hidden_size == dv + fused.audio_width
    assert fused.audio_qformer_config is None and fused.av_blocks == 1
    assert split.causal_qformer_config.encoder_hidden_size == dv
    assert split.audio_qformer_config.encoder_hidden_size == split.audio_width
    assert split.av_blocks == 2
    assert FavorConfig.from_dict(split.to_dict()).av_fusion == "separate"
    with pytest.raises(ValueError, match="av_fusion"):
        tiny_config(tokenizer, av_fusion="early")
    with pytest.raises(ValueError, match="av_fusion"):
        tiny_config(tokenizer, av_fusion=1)
    names = [c.name for c in components(split)]
    assert "audio_qformer" in names and "audio_qformer" not in [c.name for c in components(fused)]


def test_a_processor_layout_with_an_unknown_av_fusion_is_refused(separate, tmp_path):
    """A misspelt ``av_fusion`` in a hand-edited processor_config.json counted one token block per item."""
    import json

    from favor_llm import FavorProcessor

    _, processor = separate
    processor.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "processor_config.json").read_text())
    assert saved["layout"]["av_fusion"] == "separate"
    saved["layout"]["av_fusion"] = "seperate"
    (tmp_path / "processor_config.json").write_text(json.dumps(saved))
    with pytest.raises(
        ValueError, match=r"layout.av_fusion: expected one of \['synchronised', 'separate'\], got 'seperate'"
    ):
        FavorProcessor.from_pretrained(tmp_path)


def test_blocks_are_each_streams_own_qformer_output(separate, media):
    """Reference: the synchroniser's joint frames split by columns and fed to each Q-Former by hand."""
    model, processor = separate
    inputs = processor(text="q", media=_clip(media))
    encoder = model.media_encoder
    with torch.no_grad():
        out = model(**inputs)
        names = ("pixel_values", "pixel_lengths", "input_features", "audio_lengths", "qformer_input_ids")
        frozen = model.encode_frozen_media(
            **{k: inputs[k] for k in names}, qformer_attention_mask=inputs["qformer_attention_mask"]
        )
        steps = frozen["audio_lengths"] * 50 // 16000
        audio = encoder.audio_projections[0](frozen["audio_features"])
        synced = encoder.synchroniser(
            frozen["visual_features"],
            audio,
            visual_lengths=frozen["frame_lengths"],
            audio_lengths=steps,
            modality_mask=torch.ones(1, 2),
        )
        dv = model.config.visual_hidden_size
        video_ref = encoder.causal_qformer(synced.features[..., :dv], synced.frame_mask)
        audio_ref = encoder.audio_qformer(synced.features[..., dv:], synced.frame_mask)
    windows = video_ref.tokens.shape[1]
    assert out.av_tokens.shape[1] == 2 * windows
    torch.testing.assert_close(out.av_tokens[:, :windows], video_ref.tokens, rtol=0, atol=1e-6)
    torch.testing.assert_close(out.av_tokens[:, windows:], audio_ref.tokens, rtol=0, atol=1e-6)
    placeholders = int((inputs["input_ids"] == processor.av_token_id).sum())
    assert placeholders == int(out.window_mask.sum()) * model.config.num_queries
    layout = AVLayout.from_config(model.config)
    assert layout.av_tokens(6, 2 * 16000) == placeholders


def test_neither_block_sees_the_other_stream(separate, media):
    """Louder audio changes only the audio block; other frames change only the video block (with synchronised
    fusion both change: the control)."""
    model, processor = separate
    fused, fused_processor = tiny_model_and_processor(seed=0)
    other_video = torch.flip(media["video"], dims=[0])
    for m, p, separate_blocks in ((model, processor, True), (fused, fused_processor, False)):
        with torch.no_grad():
            base = m(**p(text="q", media=_clip(media))).av_tokens
            louder = m(**p(text="q", media=_clip(media, audio_scale=3.0))).av_tokens
            moved = m(**p(text="q", media=_clip(media, video=other_video))).av_tokens
        if separate_blocks:
            w = base.shape[1] // 2
            torch.testing.assert_close(louder[:, :w], base[:, :w], rtol=0, atol=0)
            torch.testing.assert_close(moved[:, w:], base[:, w:], rtol=0, atol=0)
            assert not torch.allclose(louder[:, w:], base[:, w:])
            assert not torch.allclose(moved[:, :w], base[:, :w])
        else:
            assert not torch.allclose(louder, base) and not torch.allclose(moved, base)


def test_training_reaches_both_qformers_and_save_load_round_trips(media, tmp_path):
    model, processor = tiny_model_and_processor(seed=0, av_fusion="separate")
    model.train()
    inputs = processor(text=["q", "r"], media=[_clip(media), media["video"]], answers=["yes", "no"])
    model(**inputs).loss.backward()
    for name in ("causal_qformer", "audio_qformer"):
        grads = [p.grad for p in getattr(model.media_encoder, name).parameters() if p.grad is not None]
        assert grads and any(float(g.abs().sum()) > 0 for g in grads), name
    model.eval()
    model.save_pretrained(tmp_path / "ckpt")
    loaded = FavorModel.from_pretrained(tmp_path / "ckpt")
    assert loaded.config.av_fusion == "separate" and not loaded.training
    prompt = processor(text="q", media=_clip(media))
    with torch.no_grad():
        torch.testing.assert_close(loaded(**prompt).logits, model(**prompt).logits, rtol=0, atol=0)
        generated = loaded.generate(**prompt, max_new_tokens=2, do_sample=False)
    assert generated.shape[1] == prompt["input_ids"].shape[1] + 2


def test_streaming_refuses_separate_blocks(separate):
    model, processor = separate
    with pytest.raises(ValueError, match="av_fusion"):
        model.stream(processor)
