"""FavorModel: loss, training (what gets gradients), modalities, batch invariance, generation, mixed precision,
and clear errors."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from favor_llm import FavorModel


def _inputs(processor, items, answers=None):
    return processor(text=[q for q, _ in items], media=[m for _, m in items], answers=answers)


def test_loss_is_ce_plus_weighted_diversity(tiny, media):
    model, processor = tiny
    inputs = processor(
        text=["What?", "Sound?"], media=[media["video"], media["audio"]], answers=["red", "a dog"]
    )
    with torch.no_grad():
        out = model(**inputs)
    # eager reference of the answer cross-entropy
    logits, labels = out.logits[:, :-1], inputs["labels"][:, 1:]
    ce = nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100
    )
    torch.testing.assert_close(out.lm_loss, ce)
    from favor_qformer import diversity_loss

    torch.testing.assert_close(out.diversity_loss, diversity_loss(out.av_tokens, out.window_mask))
    torch.testing.assert_close(
        out.loss, out.lm_loss + model.config.diversity_loss_weight * out.diversity_loss
    )
    assert out.diversity_loss.abs() > 0


def test_training_step_touches_only_trainable_parameters(fresh_tiny, media):
    model, processor = fresh_tiny
    model.train()
    assert not model.vision.training and not model.audio_encoders[0].training  # frozen encoders stay in eval
    inputs = processor(
        text=["What?", "Sound?"],
        media=[{"video": media["video"], "audio": media["audio"]}, media["audio"]],
        answers=["red", "a dog"],
    )
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    out = model(**inputs)
    out.loss.backward()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable, "nothing to train"
    assert all(
        n.startswith(
            ("media_encoder.audio_projections.", "media_encoder.causal_qformer.", "language_projection.")
        )
        or "lora_" in n
        for n in trainable
    )
    assert any("lora_" in n for n in trainable) and any(
        n.startswith("media_encoder.causal_qformer.") for n in trainable
    )
    for n, p in model.named_parameters():
        if n in trainable:
            assert p.grad is not None, n
        else:
            assert p.grad is None, n
    # gradients reach every trainable block (LoRA A gets none while B is zero, but B is random in the tiny model)
    for prefix in ("media_encoder.audio_projections.0.weight", "language_projection.weight"):
        assert dict(model.named_parameters())[prefix].grad.abs().sum() > 0
    assert any(p.grad.abs().sum() > 0 for n, p in model.named_parameters() if "lora_A" in n)
    torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2).step()
    for n, p in model.named_parameters():
        if n in trainable:
            continue
        assert torch.equal(p, before[n]), f"frozen parameter {n} changed"
    assert any(not torch.equal(p, before[n]) for n, p in model.named_parameters() if n in trainable)


MODALITIES = {
    "video+audio": lambda m: {"video": m["video"], "audio": m["audio"]},
    "video": lambda m: m["video"],
    "audio": lambda m: m["audio"],
    "image": lambda m: {"image": m["image"]},
    "image+audio": lambda m: {"image": m["image"], "audio": m["short_audio"]},
    "text": lambda m: None,
}


@pytest.mark.parametrize("modality", list(MODALITIES))
def test_every_modality_forward_and_generate(tiny, media, modality):
    model, processor = tiny
    inputs = processor(text="Describe it.", media=MODALITIES[modality](media), answers="ok")
    with torch.no_grad():
        out = model(**inputs)
        prompt = {k: v for k, v in inputs.items() if k != "labels"}
        generated = model.generate(**prompt, max_new_tokens=3, do_sample=False)
    assert torch.isfinite(out.loss)
    assert generated.shape[1] == inputs["input_ids"].shape[1] + 3
    if modality == "text":
        assert out.av_tokens is None
    else:
        assert int(out.window_mask.sum()) * out.av_tokens.shape[2] == int(
            (inputs["input_ids"] == processor.av_token_id).sum()
        )


def test_missing_stream_is_zeroed_as_released(tiny, media):
    """Audio only == the same audio with any video whose visual column of the modality mask is 0 (and the
    converse for video only): the missing stream enters the Q-Former as zeros."""
    model, processor = tiny
    both = processor(text="q", media={"video": media["video"], "audio": media["short_audio"]})
    audio_only = processor(text="q", media=media["short_audio"])
    video_only = processor(text="q", media=media["video"])
    with torch.no_grad():
        zero_visual = model(**both, modality_mask=torch.tensor([[0.0, 1.0]]))
        ref_audio = model(**audio_only)
        zero_audio = model(**both, modality_mask=torch.tensor([[1.0, 0.0]]))
        ref_video = model(**video_only)
    # 2 s of audio = 4 frames < 6 video frames: audio-only has fewer windows, compare its windows
    torch.testing.assert_close(zero_visual.av_tokens[:, :1], ref_audio.av_tokens[:, :1], rtol=0, atol=1e-5)
    torch.testing.assert_close(zero_audio.av_tokens, ref_video.av_tokens, rtol=0, atol=1e-5)


def test_image_is_a_repeated_frame(tiny, media):
    model, processor = tiny
    image = media["image"]
    as_image = processor(text="q", media={"image": image})
    repeats = model.config.repeat_image
    as_video = processor(text="q", media={"video": image.permute(2, 0, 1)[None].expand(repeats, -1, -1, -1)})
    with torch.no_grad():
        a, b = model(**as_image), model(**as_video)
    torch.testing.assert_close(a.logits, b.logits, rtol=0, atol=1e-5)


def test_batch_invariance_of_logits_and_greedy_generation(tiny, media):
    model, processor = tiny
    items = [
        ("What is happening in the video?", {"video": media["video"], "audio": media["audio"]}),
        ("What sound?", media["audio"]),
        ("Describe", {"image": media["image"]}),
        ("hi there, how are you today?", None),
        ("colour?", media["long_video"]),
    ]
    batch = _inputs(processor, items)
    with torch.no_grad():
        out = model(**batch)
        generated = model.generate(**batch, max_new_tokens=6, do_sample=False)
    width = batch["input_ids"].shape[1]
    for i, item in enumerate(items):
        alone = _inputs(processor, [item])
        with torch.no_grad():
            single = model(**alone)
            single_gen = model.generate(**alone, max_new_tokens=6, do_sample=False)
        n = alone["input_ids"].shape[1]
        torch.testing.assert_close(single.logits[0], out.logits[i, width - n :], rtol=0, atol=1e-4)
        assert single_gen[0, n:].tolist() == generated[i, width:].tolist()


def test_generate_uses_the_cache_and_matches_greedy_decoding(tiny, media):
    model, processor = tiny
    inputs = processor(text="What?", media={"video": media["video"], "audio": media["audio"]})
    with torch.no_grad():
        generated = model.generate(**inputs, max_new_tokens=5, do_sample=False)
        # greedy decoding by hand without any cache: full forward over the growing sequence each step
        ids, mask = inputs["input_ids"], inputs["attention_mask"]
        media_kwargs = {k: v for k, v in inputs.items() if k not in ("input_ids", "attention_mask")}
        for _ in range(5):
            logits = model(input_ids=ids, attention_mask=mask, use_cache=False, **media_kwargs).logits
            nxt = logits[:, -1].argmax(-1, keepdim=True)
            ids = torch.cat([ids, nxt], dim=1)
            mask = torch.cat([mask, torch.ones_like(nxt)], dim=1)
    assert generated.tolist() == ids.tolist()


def test_mixed_precision_forward_is_finite(media):
    from favor_llm.testing import tiny_model_and_processor

    model, processor = tiny_model_and_processor(dtype=torch.bfloat16)
    assert next(model.causal_qformer.parameters()).dtype == torch.float32  # kept in fp32
    assert model.causal_lm.get_input_embeddings().weight.dtype == torch.bfloat16
    inputs = processor(
        text=["q", "r"], media=[{"video": media["video"], "audio": media["audio"]}, None], answers=["a", "b"]
    )
    with torch.no_grad():
        out = model(**inputs)
    assert out.logits.dtype == torch.bfloat16
    assert torch.isfinite(out.loss) and torch.isfinite(out.diversity_loss)
    model.to(torch.float16)  # everything half, Q-Former included: still finite
    with torch.no_grad():
        assert torch.isfinite(model(**inputs).loss)


def test_placeholder_count_mismatch_is_a_clear_error(tiny, media):
    model, processor = tiny
    inputs = processor(text="q", media=media["video"])
    av = processor.av_token_id
    extra = inputs["input_ids"].clone()
    extra[0, -1] = av  # one placeholder too many
    with pytest.raises(ValueError, match="placeholder"):
        model(**{**inputs, "input_ids": extra})
    fewer = inputs["input_ids"].clone()
    fewer[fewer == av] = processor.tokenizer.pad_token_id
    with pytest.raises(ValueError, match="placeholder"):  # media without any placeholder
        model(**{**inputs, "input_ids": fewer})
    text_only = processor(text="q")
    ids = text_only["input_ids"].clone()
    ids[0, -1] = av
    with pytest.raises(ValueError, match="no media"):  # a placeholder without media
        model(input_ids=ids, attention_mask=text_only["attention_mask"])


def test_mismatched_batch_sizes_are_clear_errors(tiny, media):
    model, processor = tiny
    one = processor(text="q", media={"video": media["video"], "audio": media["audio"]})
    two = processor(text=["q", "r"], media=[media["video"], media["video"]])
    with pytest.raises(ValueError, match="batch"):
        model(
            input_ids=two["input_ids"],
            attention_mask=two["attention_mask"],
            pixel_values=one["pixel_values"],
            pixel_lengths=one["pixel_lengths"],
        )
    with pytest.raises(ValueError, match="batch"):
        model(**{**one, "input_features": torch.cat([one["input_features"]] * 2)})
    with pytest.raises(ValueError, match="audio_lengths"):
        model(**{k: v for k, v in one.items() if k != "audio_lengths"})
    with pytest.raises(ValueError, match="labels"):
        model(**one, labels=torch.zeros(1, 3, dtype=torch.long))


def test_long_audio_is_encoded_in_consecutive_windows(tiny, media):
    """7 s of audio with 5 s windows: the features are those of [0, 5) s then [5, 7) s, nothing cut."""
    model, processor = tiny
    audio = media["audio"]
    full = processor(text="q", media=audio)
    first = processor(text="q", media=audio[: 5 * 16000])
    second = processor(text="q", media=audio[5 * 16000 :])
    enc = model.audio_encoders[0]
    with torch.no_grad():
        whole = enc(full["input_features"], torch.tensor([2]))
        a = enc(first["input_features"], torch.tensor([1]))
        b = enc(second["input_features"], torch.tensor([1]))
    steps = enc.steps_per_chunk
    torch.testing.assert_close(whole[:, :steps], a[:, :steps])
    torch.testing.assert_close(whole[:, steps:], b)
    # 7 s at 50 Hz = 350 steps reach the synchroniser: 14 frames, 4 windows
    with torch.no_grad():
        out = model(**full)
    assert int(out.window_mask.sum()) == 4


def test_automodel_for_causal_lm_maps_to_favor(tiny):
    from transformers import AutoModel, AutoModelForCausalLM

    model, _ = tiny
    assert AutoModel._model_mapping[type(model.config)] is FavorModel
    assert AutoModelForCausalLM._model_mapping[type(model.config)] is FavorModel
    assert model.can_generate()


POOL = ["video+audio", "video", "audio", "image", "image+audio", "text"]
QUESTIONS = ["What?", "What happens in the video, in detail?", "Is there speech in the audio? Yes or no."]


@settings(max_examples=10)
@given(st.lists(st.tuples(st.sampled_from(POOL), st.sampled_from(QUESTIONS)), min_size=2, max_size=4))
def test_batch_composition_does_not_change_a_sample(tiny, media, picks):
    """Property: any mix of modalities, media lengths and prompt lengths; each row equals its sample alone."""
    model, processor = tiny
    items = [(q, MODALITIES[kind](media)) for kind, q in picks]
    batch = _inputs(processor, items)
    with torch.no_grad():
        logits = model(**batch).logits
    width = batch["input_ids"].shape[1]
    for i, item in enumerate(items):
        alone = _inputs(processor, [item])
        with torch.no_grad():
            single = model(**alone).logits[0]
        torch.testing.assert_close(single, logits[i, width - single.shape[0] :], rtol=0, atol=1e-4)


def test_gradient_checkpointing_gives_the_same_gradients(media):
    from favor_llm.testing import tiny_model_and_processor

    grads = []
    for checkpointing in (False, True):
        model, processor = tiny_model_and_processor(seed=0, lora_dropout=0.0)
        model.causal_qformer.config.dropout = (
            0.0  # no dropout anywhere, so both runs compute the same function
        )
        for m in model.causal_qformer.modules():
            if isinstance(getattr(m, "dropout", None), float):
                m.dropout = 0.0
        if checkpointing:
            model.gradient_checkpointing_enable()
            assert (
                model.causal_lm.is_activation_checkpointing
                and model.causal_qformer.config.gradient_checkpointing
            )
        model.train()
        inputs = processor(
            text=["q", "r"],
            media=[{"video": media["video"], "audio": media["audio"]}, None],
            answers=["a", "b"],
        )
        model(**inputs).loss.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad})
    for name, g in grads[0].items():
        torch.testing.assert_close(grads[1][name], g, rtol=1e-4, atol=1e-6, msg=name)


def test_generation_modes(tiny, media):
    """Without a cache the media go to every step and greedy decoding is unchanged; beams and sampling expand
    the media inputs with the batch."""
    model, processor = tiny
    inputs = processor(
        text=["What?", "hi"], media=[{"video": media["video"], "audio": media["audio"]}, media["audio"]]
    )
    with torch.no_grad():
        cached = model.generate(**inputs, max_new_tokens=4, do_sample=False)
        uncached = model.generate(**inputs, max_new_tokens=4, do_sample=False, use_cache=False)
        beams = model.generate(**inputs, max_new_tokens=4, num_beams=2, do_sample=False)
        sampled = model.generate(**inputs, max_new_tokens=4, do_sample=True, num_return_sequences=2)
    assert torch.equal(cached, uncached)
    assert beams.shape == cached.shape and sampled.shape == (4, cached.shape[1])
    with pytest.raises(ValueError, match="inputs_embeds"):
        model(inputs_embeds=torch.zeros(1, 3, 64), pixel_values=inputs["pixel_values"][:1])


def test_placeholder_id_outside_the_llm_vocabulary(fresh_tiny, media):
    """Like <AV> appended to Vicuna's 32000-token vocabulary: the placeholder is never embedded, so its id may lie
    past the LLM's embedding matrix (no resize needed) and the outputs are the same."""
    model, processor = fresh_tiny
    inputs = processor(text=["What?", "hi"], media=[media["video"], None], answers=["red", "x"])
    with torch.no_grad():
        ref = model(**inputs)
    outside = model.get_input_embeddings().num_embeddings + 5
    ids = inputs["input_ids"].masked_fill(inputs["input_ids"] == processor.av_token_id, outside)
    model.config.av_token_id = outside
    with torch.no_grad():
        out = model(**{**inputs, "input_ids": ids})
    torch.testing.assert_close(out.logits, ref.logits, rtol=0, atol=0)
    torch.testing.assert_close(out.loss, ref.loss, rtol=0, atol=0)


def test_hidden_states_are_returned_and_generate_can_report_them(tiny, media):
    """``output_hidden_states=True`` gives the LLM's hidden states (the AV tokens' included), in `forward` and in
    ``generate(return_dict_in_generate=True, ...)``, as for any transformers causal LM."""
    model, processor = tiny
    inputs = processor(
        text=["What?", "hi there"], media=[{"video": media["video"], "audio": media["audio"]}, None]
    )
    with torch.no_grad():
        out = model(**inputs, output_hidden_states=True)
        ref = model.causal_lm(
            inputs_embeds=out.hidden_states[0],
            attention_mask=inputs["attention_mask"],
            output_hidden_states=True,
            position_ids=(inputs["attention_mask"].cumsum(-1) - 1).clamp(min=0),
        )
        generated = model.generate(
            **inputs,
            max_new_tokens=3,
            do_sample=False,
            return_dict_in_generate=True,
            output_hidden_states=True,
        )
    layers = model.config.text_config.num_hidden_layers
    assert len(out.hidden_states) == layers + 1
    for mine, theirs in zip(out.hidden_states, ref.hidden_states):
        torch.testing.assert_close(mine, theirs)
    is_av = inputs["input_ids"] == processor.av_token_id
    assert (out.hidden_states[0][is_av] != model.get_input_embeddings().weight[processor.av_token_id]).any()
    assert len(generated.hidden_states) == 3 and len(generated.hidden_states[0]) == layers + 1


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ({"pixel_values": torch.randn(1, 6, 3, 64, 64)}, r"pixel_values: .*\(3, 32, 32\).*\(3, 64, 64\)"),
        ({"pixel_values": torch.randn(1, 6, 1, 32, 32)}, r"pixel_values: .*\(3, 32, 32\).*\(1, 32, 32\)"),
        ({"input_features": torch.randn(1, 2, 64, 500)}, r"input_features: .*\(80, 500\).*\(64, 500\)"),
        ({"input_features": torch.randn(1, 2, 80, 3000)}, r"input_features: .*\(80, 500\).*\(80, 3000\)"),
        ({"audio_lengths": torch.tensor([-5])}, r"audio_lengths: .*-5"),
        ({"pixel_lengths": torch.tensor([-1])}, r"pixel_lengths: .*-1"),
        ({"audio_lengths": torch.tensor([1.5])}, r"audio_lengths: expected integer counts"),
        ({"frame_lengths": [5.5]}, r"frame_lengths: expected integer counts"),
        ({"pixel_lengths": torch.tensor([True])}, r"pixel_lengths: expected integer counts"),
        ({"audio_lengths": [7 * 16000]}, None),  # a list is fine (as a tensor)
        ({"pixel_lengths": [6], "frame_lengths": [6]}, None),
    ],
)
def test_bad_media_tensors_are_clear_errors(tiny, media, override, match):
    """Media tensors given to the model directly (not through the processor): wrong frame size or channels, wrong
    mel bins or window length, negative lengths are ValueErrors naming the argument, not errors from deep in the
    encoders; lengths may be lists."""
    model, processor = tiny
    inputs = dict(processor(text="q", media={"video": media["video"], "audio": media["audio"]}))
    if match is None:
        with torch.no_grad():
            expected = model(**inputs).logits
            assert torch.equal(model(**{**inputs, **override}).logits, expected)
        return
    with pytest.raises(ValueError, match=match):
        model(**{**inputs, **override})


def test_attention_mask_of_another_length_is_a_clear_error(tiny, media):
    model, processor = tiny
    inputs = processor(text=["q", "rr"], media=[media["video"], None])
    with pytest.raises(ValueError, match=r"attention_mask: .*\(2, 2[0-9]\)"):
        model(**{**inputs, "attention_mask": inputs["attention_mask"][:, 1:]})
