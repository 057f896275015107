"""FavorModel behaves as transformers models do, tested the way transformers' common model tests check them
(outputs, loss arguments, embeddings resizing, meta-device initialisation, attention implementation, loading
arguments, dtypes and float32 islands, tied weights / no-split / tensor-parallel plans under LoRA)."""

from __future__ import annotations

import copy
import re

import pytest
import torch
from transformers import PreTrainedModel

from favor_llm import FavorModel
from favor_llm.testing import tiny_config, tiny_model_and_processor, tiny_text_config, tiny_tokenizer


@pytest.fixture(scope="module")
def batch(tiny, media):
    _, processor = tiny
    return processor(
        text=["What?", "Sound?"],
        media=[{"video": media["video"], "audio": media["audio"]}, media["audio"]],
        answers=["red", "a dog"],
    )


def _prompt(batch):
    return {k: v for k, v in batch.items() if k != "labels"}


# ------------------------------------------------------------------------------------------------------ outputs
def test_loss_only_with_labels_and_logits_first_otherwise(tiny, batch):
    model, _ = tiny
    with torch.no_grad():
        without = model(**_prompt(batch))
        with_labels = model(**batch)
    assert without.loss is None and without.lm_loss is None
    assert torch.equal(without[0], without.logits) and torch.equal(without.to_tuple()[0], without.logits)
    assert torch.equal(with_labels[0], with_labels.loss) and torch.equal(with_labels[1], with_labels.logits)


def test_return_dict_false_gives_the_same_values_as_a_tuple(tiny, batch):
    model, _ = tiny
    with torch.no_grad():
        as_dict = model(**batch)
        as_tuple = model(**batch, return_dict=False)
        prompt_tuple = model(**_prompt(batch), return_dict=False)
    assert isinstance(as_tuple, tuple) and len(as_tuple) == len(as_dict.to_tuple())
    for a, b in zip(as_tuple, as_dict.to_tuple()):
        assert torch.equal(a, b) if torch.is_tensor(a) else type(a) is type(b)
    assert torch.equal(prompt_tuple[0], as_dict.logits)


def test_hidden_states_and_attentions_are_returned(fresh_tiny, batch):
    model, _ = fresh_tiny
    model.set_attn_implementation("eager")  # attention weights need the eager path
    layers = model.config.text_config.num_hidden_layers
    with torch.no_grad():
        out = model(**_prompt(batch), output_hidden_states=True, output_attentions=True)
    length = batch["input_ids"].shape[1]
    assert len(out.hidden_states) == layers + 1 and len(out.attentions) == layers
    assert out.hidden_states[-1].shape == (2, length, model.config.text_config.hidden_size)
    assert out.attentions[0].shape[-2:] == (length, length)
    # the first hidden state is the LLM's input: token embeddings with the projected AV tokens at the placeholders
    is_av = batch["input_ids"] == model.config.av_token_id
    torch.testing.assert_close(
        out.hidden_states[0][~is_av], model.get_input_embeddings()(batch["input_ids"])[~is_av]
    )


# --------------------------------------------------------------------------------------------------------- loss
def test_shift_labels_and_num_items_in_batch_are_honoured(tiny, batch):
    model, _ = tiny
    labels = batch["labels"]
    shifted = torch.nn.functional.pad(labels[:, 1:], (0, 1), value=-100)
    prompt = _prompt(batch)
    with torch.no_grad():
        reference = model(**batch)
        by_shift = model(**prompt, shift_labels=shifted)
        items = int((shifted != -100).sum())
        summed = model(**batch, num_items_in_batch=2 * items)
    torch.testing.assert_close(by_shift.lm_loss, reference.lm_loss)
    torch.testing.assert_close(by_shift.loss, reference.loss)
    # a sum over the answer tokens divided by num_items_in_batch (here twice the tokens: half the mean)
    torch.testing.assert_close(summed.lm_loss, reference.lm_loss / 2)
    # the LLM's own loss function: eager cross-entropy of shifted logits
    logits = reference.logits[:, :-1].float()
    eager = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=-100
    )
    torch.testing.assert_close(reference.lm_loss, eager)


# --------------------------------------------------------------------------------------------------- embeddings
def test_resize_token_embeddings_under_lora(fresh_tiny, media, tmp_path):
    model, processor = fresh_tiny
    model.save_frozen_components(tmp_path / "base")  # the LLM has a source, which the resize makes stale
    tokenizer = processor.tokenizer
    old = len(tokenizer)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<AV>", "<new1>", "<new2>"]})
    new = len(tokenizer)
    assert new == old + 2
    embeddings = model.resize_token_embeddings(new)
    assert embeddings.weight.shape[0] == new
    assert model.get_input_embeddings().weight.shape[0] == new
    assert model.get_output_embeddings().weight.shape[0] == new
    assert model.config.text_config.vocab_size == new
    assert not model.get_input_embeddings().weight.requires_grad  # frozen stays frozen, LoRA stays trainable
    assert any(p.requires_grad for n, p in model.named_parameters() if "lora_" in n)
    # (new tokens in the answer: the tiny model shares its tokenizer with the frame encoder's Q-Former)
    inputs = processor(text="What?", media=media["video"], answers="red <new1> <new2>")
    out = model(**inputs)
    assert out.logits.shape[-1] == new and torch.isfinite(out.loss)
    with torch.no_grad():
        generated = model.generate(**{k: v for k, v in inputs.items() if k != "labels"}, max_new_tokens=2)
    assert generated.shape[1] == inputs["input_ids"].shape[1] + 2
    # the resized LLM no longer is its source checkpoint: it goes into the saved checkpoint, which reloads
    assert "text" not in model.config.component_sources and "vision" in model.config.component_sources
    model.save_pretrained(tmp_path / "resized")
    assert (tmp_path / "resized" / "text").is_dir() and not (tmp_path / "resized" / "vision").exists()
    loaded = FavorModel.from_pretrained(tmp_path / "resized")
    model.eval()
    with torch.no_grad():
        assert torch.equal(loaded(**inputs).logits, model(**inputs).logits)


def test_instruction_ids_outside_the_frame_encoders_vocabulary_are_a_value_error(fresh_tiny, media):
    """A token added after resize_token_embeddings, typed in the question, reaches the frame encoder's Q-Former when
    it shares the LLM's tokenizer (the tiny model; any mismatched qformer_tokenizer): an IndexError from deep
    inside torch's embedding before, a ValueError naming qformer_input_ids now."""
    model, processor = fresh_tiny
    processor.tokenizer.add_special_tokens({"additional_special_tokens": ["<new1>"]})
    model.resize_token_embeddings(len(processor.tokenizer))
    inputs = processor(text="What is <new1>?", media=media["video"])
    with pytest.raises(ValueError, match=r"qformer_input_ids: ids must lie in \[0, 384\)"):
        model(**inputs)


# ------------------------------------------------------------------------------------------------ meta device
def test_meta_device_construction_then_init_weights_gives_correct_buffers_and_weights():
    config = tiny_config()
    reference = FavorModel(copy.deepcopy(config))
    with torch.device("meta"):
        model = FavorModel(copy.deepcopy(config))
    assert all(p.is_meta for p in model.parameters())
    model.to_empty(device="cpu")
    model.init_weights()
    buffers, expected = dict(model.named_buffers()), dict(reference.named_buffers())
    assert buffers.keys() == expected.keys() and buffers
    for name, value in buffers.items():
        torch.testing.assert_close(value, expected[name], msg=name)
    for name, param in model.named_parameters():
        assert torch.isfinite(param).all(), name
        if "lora_B" in name:  # a fresh adapter changes nothing (peft's init), not the LLM's normal init
            assert not param.any(), name
        if name.endswith("norm.weight") or "layernorm.weight" in name:
            assert torch.equal(param, torch.ones_like(param)), name
    # each part initialised by its own scheme: the same spread as a model built directly
    for name in ("media_encoder.causal_qformer.query_tokens", "language_projection.weight"):
        got, want = dict(model.named_parameters())[name], dict(reference.named_parameters())[name]
        assert 0.5 < float(got.detach().std() / want.detach().std()) < 2.0, name


# -------------------------------------------------------------------------------------------------- attention
def _sub_models(model):
    return [m for m in model.modules() if isinstance(m, PreTrainedModel) and m is not model]


@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
def test_attn_implementation_reaches_every_sub_model(fresh_tiny, batch, implementation):
    model, _ = fresh_tiny
    model.set_attn_implementation(implementation)
    kinds = {type(m).__name__: m.config._attn_implementation for m in _sub_models(model)}
    assert {
        "LlamaForCausalLM",
        "WhisperEncoder",
        "InstructBlipVisionModel",
        "InstructBlipQFormerModel",
    } <= set(kinds)
    assert set(kinds.values()) == {implementation}, kinds
    assert model.causal_qformer.config.attention_backend == implementation
    with torch.no_grad():
        assert torch.isfinite(model(**batch).loss)


@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
def test_attn_implementation_at_construction(implementation):
    model = FavorModel._from_config(tiny_config(), attn_implementation=implementation)
    assert {m.config._attn_implementation for m in _sub_models(model)} == {implementation}
    assert model.causal_qformer.config.attention_backend == implementation


def test_attn_implementation_at_load(fresh_tiny, tmp_path):
    model, _ = fresh_tiny
    model.save_pretrained(tmp_path / "m")
    loaded = FavorModel.from_pretrained(tmp_path / "m", attn_implementation="eager")
    assert {m.config._attn_implementation for m in _sub_models(loaded)} == {"eager"}
    assert loaded.causal_qformer.config.attention_backend == "eager"


# ---------------------------------------------------------------------------------------------------- loading
def test_from_pretrained_loading_info_and_low_cpu_mem_usage(fresh_tiny, batch, tmp_path):
    model, _ = fresh_tiny
    model.save_pretrained(
        tmp_path / "other_rank", is_main_process=False
    )  # as the Trainer calls it on rank > 0
    assert not (tmp_path / "other_rank").exists()
    model.save_pretrained(tmp_path / "m")
    loaded, info = FavorModel.from_pretrained(tmp_path / "m", output_loading_info=True)
    assert isinstance(loaded, FavorModel) and not loaded.training
    assert info == {"missing_keys": [], "unexpected_keys": [], "mismatched_keys": [], "error_msgs": []}
    for kwargs in ({"low_cpu_mem_usage": True}, {"device_map": "cpu"}):
        low = FavorModel.from_pretrained(tmp_path / "m", **kwargs)
        with torch.no_grad():
            assert torch.equal(low(**batch).logits, model(**batch).logits), kwargs
        assert dict(low.named_buffers()).keys() == dict(model.named_buffers()).keys()
        for name, value in low.named_buffers():
            torch.testing.assert_close(value, dict(model.named_buffers())[name], msg=name)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, "bfloat16", "auto"])
def test_dtypes_keep_float32_islands_exactly_where_declared(fresh_tiny, tmp_path, dtype):
    model, _ = fresh_tiny
    if dtype == "auto":  # saved in bfloat16: "auto" loads the dtype of the saved LLM weights
        model.to_mixed_precision(torch.bfloat16)
    model.save_pretrained(tmp_path / "m")
    loaded = FavorModel.from_pretrained(tmp_path / "m", dtype=dtype)
    half = {"auto": torch.bfloat16, "bfloat16": torch.bfloat16}.get(dtype, dtype)
    islands = {n for n, p in loaded.named_parameters() if p.dtype == torch.float32}
    declared = set(loaded.fp32_parameter_names())
    assert islands == declared
    assert declared == {
        n
        for n, _ in loaded.named_parameters()
        if n.startswith(("media_encoder.causal_qformer.", "media_encoder.audio_projections."))
    }
    # the frame encoder's own Q-Former is not an island
    assert all(
        p.dtype == half for n, p in loaded.named_parameters() if n.startswith("media_encoder.vision.qformer.")
    )
    assert loaded.get_input_embeddings().weight.dtype == half
    patterns = loaded._keep_in_fp32_modules
    assert not any(
        re.search(rf"(^|\.){re.escape(p)}(\.|$)", "media_encoder.vision.qformer.x") for p in patterns
    )


# -------------------------------------------------------------------------------------------- plans under LoRA
def _tied_model():
    tokenizer = tiny_tokenizer()
    text = tiny_text_config(tokenizer)
    text.tie_word_embeddings = True
    model, _ = tiny_model_and_processor(text_config=text)
    return model


def _check_tied(model):
    params = dict(model.named_parameters(remove_duplicate=False))
    assert model.all_tied_weights_keys, "the LLM ties lm_head to embed_tokens"
    for target, source in model.all_tied_weights_keys.items():
        a = params.get(target, params.get(target + ".weight"))
        b = params.get(source, params.get(source + ".weight"))
        assert a is not None and b is not None and a.data_ptr() == b.data_ptr(), (target, source)
    assert all(k.startswith("language_model.base_model.model.") for k in model.all_tied_weights_keys)


def test_tied_weights_keys_name_real_tied_parameters_under_lora(batch, tmp_path):
    model = (
        _tied_model()
    )  # building it tied under LoRA failed: transformers looked for language_model.model.*
    _check_tied(model)
    model.save_pretrained(tmp_path / "m")
    loaded = FavorModel.from_pretrained(tmp_path / "m")
    _check_tied(loaded)
    with torch.no_grad():
        assert torch.equal(loaded(**batch).logits, model(**batch).logits)
    loaded.resize_token_embeddings(loaded.config.text_config.vocab_size + 3)  # stays tied
    _check_tied(loaded)
    assert loaded.get_output_embeddings().weight.shape[0] == loaded.config.text_config.vocab_size


def test_no_split_modules_and_tp_plan_name_what_exists_under_lora(tiny):
    model, _ = tiny
    present = {type(m).__name__ for m in model.modules()}
    assert {"LlamaDecoderLayer", "WhisperEncoderLayer"} <= set(model._no_split_modules) <= present
    modules = {name for name, _ in model.named_modules()}
    assert model.tp_plan
    for pattern in model.tp_plan:
        regex = re.compile(re.escape(pattern).replace(r"\*", r"\d+") + "$")
        assert any(regex.match(m) for m in modules), pattern
