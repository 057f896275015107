"""Save / load: delta (released style) and merged checkpoints, AutoModel, strict loading errors."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModel

from favor_llm import FavorModel


@pytest.fixture
def inputs(tiny, media):
    _, processor = tiny
    return processor(
        text=["What?", "Sound?"],
        media=[{"video": media["video"], "audio": media["audio"]}, media["audio"]],
        answers=["red", "a dog"],
    )


def _logits(model, inputs):
    with torch.no_grad():
        return model(**inputs).logits


def test_save_without_sources_embeds_the_frozen_parts(fresh_tiny, inputs, tmp_path, caplog):
    model, _ = fresh_tiny  # built from a config: its frozen parts have no source
    with caplog.at_level("WARNING", logger="favor_llm"):
        model.save_pretrained(tmp_path / "self_contained")
    notes = [r for r in caplog.records if "no component_sources" in r.getMessage()]
    assert len(notes) == 1 and "vision, audio_0, text" in notes[0].getMessage()
    sources = json.loads((tmp_path / "self_contained" / "config.json").read_text())["component_sources"]
    assert {k: v["embedded"] for k, v in sources.items()} == {"vision": True, "audio_0": True, "text": True}
    assert (
        json.loads((tmp_path / "self_contained" / "favor_checkpoint.json").read_text())["format"] == "delta"
    )
    loaded = FavorModel.from_pretrained(tmp_path / "self_contained")
    assert torch.equal(_logits(loaded, inputs), _logits(model, inputs))
    for (n, p), (n2, p2) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert n == n2 and torch.equal(p, p2), n
    # the reloaded model knows where its frozen parts are: its own save is a small delta again, no log line
    caplog.clear()
    with caplog.at_level("WARNING", logger="favor_llm"):
        loaded.save_pretrained(tmp_path / "delta_again")
    assert not [r for r in caplog.records if "no component_sources" in r.getMessage()]
    assert not (tmp_path / "delta_again" / "vision").exists()
    assert torch.equal(
        _logits(FavorModel.from_pretrained(tmp_path / "delta_again"), inputs), _logits(model, inputs)
    )


def test_delta_round_trip_is_bit_identical(fresh_tiny, inputs, tmp_path):
    model, _ = fresh_tiny
    model.save_frozen_components(tmp_path / "base")
    model.save_pretrained(tmp_path / "delta")
    saved = load_file(str(tmp_path / "delta" / "model.safetensors"))
    # the delta holds only trainable non-LoRA weights; LoRA is in the peft adapter
    assert saved and all(
        k.startswith(
            ("media_encoder.audio_projections.", "media_encoder.causal_qformer.", "language_projection.")
        )
        for k in saved
    )
    assert (tmp_path / "delta" / "adapter" / "adapter_model.safetensors").is_file()
    loaded = FavorModel.from_pretrained(tmp_path / "delta")
    assert torch.equal(_logits(loaded, inputs), _logits(model, inputs))
    for (n, p), (n2, p2) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert n == n2 and torch.equal(p, p2), n
    assert {n for n, p in loaded.named_parameters() if p.requires_grad} == {
        n for n, p in model.named_parameters() if p.requires_grad
    }


def test_merged_round_trip(fresh_tiny, inputs, tmp_path):
    model, _ = fresh_tiny
    model.save_pretrained(tmp_path / "full", merge_lora=True)
    loaded = AutoModel.from_pretrained(tmp_path / "full")
    assert isinstance(loaded, FavorModel) and not loaded.config.use_lora
    assert not any("lora_" in n for n, _ in loaded.named_parameters())
    # merging W + BA changes the order of float operations only
    torch.testing.assert_close(_logits(loaded, inputs), _logits(model, inputs), rtol=0, atol=1e-5)
    # the LoRA is really in there: without it the logits differ
    with model.language_model.disable_adapter():
        unadapted = _logits(model, inputs)
    assert (unadapted - _logits(model, inputs)).abs().max() > 1e-3
    loaded.save_pretrained(tmp_path / "again", merge_lora=True)
    again = FavorModel.from_pretrained(tmp_path / "again")
    assert torch.equal(_logits(again, inputs), _logits(loaded, inputs))


def test_after_training_the_reload_is_identical(fresh_tiny, inputs, tmp_path):
    model, _ = fresh_tiny
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model(**inputs).loss.backward()
    opt.step()
    model.eval()
    model.save_frozen_components(tmp_path / "base")
    model.save_pretrained(tmp_path / "delta")
    assert torch.equal(
        _logits(FavorModel.from_pretrained(tmp_path / "delta"), inputs), _logits(model, inputs)
    )


def test_missing_and_mismatched_weights_fail_loudly(fresh_tiny, tmp_path):
    model, _ = fresh_tiny
    model.save_frozen_components(tmp_path / "base")
    model.save_pretrained(tmp_path / "delta")
    path = tmp_path / "delta" / "model.safetensors"
    weights = load_file(str(path))
    missing = dict(weights)
    missing.pop("language_projection.weight")
    save_file(missing, str(path))
    with pytest.raises(ValueError, match=r"missing \[language_projection.weight"):
        FavorModel.from_pretrained(tmp_path / "delta")
    wrong = dict(weights)
    wrong["language_projection.bias"] = torch.zeros(3)
    save_file(wrong, str(path))
    with pytest.raises(ValueError, match="shape mismatch"):
        FavorModel.from_pretrained(tmp_path / "delta")
    extra = dict(weights)
    extra["media_encoder.causal_qformer.surprise"] = torch.zeros(1)
    save_file(extra, str(path))
    with pytest.raises(ValueError, match="unexpected"):
        FavorModel.from_pretrained(tmp_path / "delta")
    save_file(weights, str(path))
    # a frozen component with a tensor missing
    vision = tmp_path / "base" / "vision" / "model.safetensors"
    vision_weights = load_file(str(vision))
    vision_weights.pop("query_tokens")
    save_file(vision_weights, str(vision))
    with pytest.raises(ValueError, match=r"component_sources\['vision'\].*changed since"):  # its fingerprint
        FavorModel.from_pretrained(tmp_path / "delta")
    config_file = tmp_path / "delta" / "config.json"
    config = json.loads(config_file.read_text())
    for source in config["component_sources"].values():
        source.pop("fingerprint")
    config_file.write_text(json.dumps(config))
    with pytest.raises(ValueError, match="query_tokens"):  # without one: the strict load names the tensor
        FavorModel.from_pretrained(tmp_path / "delta")


def test_lora_adapter_mismatch_and_foreign_directories(fresh_tiny, tmp_path):
    model, _ = fresh_tiny
    model.save_frozen_components(tmp_path / "base")
    model.save_pretrained(tmp_path / "delta")
    adapter = tmp_path / "delta" / "adapter" / "adapter_model.safetensors"
    weights = load_file(str(adapter))
    weights.pop(next(iter(weights)))
    save_file(weights, str(adapter))
    with pytest.raises(ValueError, match="LoRA"):
        FavorModel.from_pretrained(tmp_path / "delta")
    with pytest.raises(ValueError, match="not a FAVOR checkpoint"):
        FavorModel.from_pretrained(tmp_path / "base" / "text")
    info = tmp_path / "delta" / "favor_checkpoint.json"
    info.write_text(json.dumps({"format": "zip"}))
    with pytest.raises(ValueError, match="unknown format"):
        FavorModel.from_pretrained(tmp_path / "delta")


def test_trainable_state_dict(tiny):
    model, _ = tiny
    state = model.trainable_state_dict()
    assert state and all(
        k.startswith(
            ("media_encoder.audio_projections.", "media_encoder.causal_qformer.", "language_projection.")
        )
        or "lora_" in k
        for k in state
    )


def test_generation_config_survives_save_and_load(fresh_tiny, tmp_path):
    """A user's generation settings (and the LLM's own, e.g. a chat model's extra end-of-turn id) are kept."""
    model, _ = fresh_tiny
    model.generation_config.max_new_tokens = 7
    model.generation_config.repetition_penalty = 1.3
    model.generation_config.eos_token_id = [model.config.text_config.eos_token_id, 5]
    model.save_frozen_components(tmp_path / "base")
    model.save_pretrained(tmp_path / "delta")
    model.save_pretrained(tmp_path / "full", merge_lora=True)
    for kind in ("delta", "full"):
        loaded = FavorModel.from_pretrained(tmp_path / kind)
        assert loaded.generation_config.max_new_tokens == 7, kind
        assert loaded.generation_config.repetition_penalty == 1.3, kind
        assert loaded.generation_config.eos_token_id == [model.config.text_config.eos_token_id, 5], kind


def test_the_language_models_generation_config_is_used(tiny):
    """Chat LLMs (Llama 3 / Qwen2 instruct) stop on ids listed only in their generation_config.json."""
    from transformers import AutoModelForCausalLM

    model, _ = tiny
    llm = AutoModelForCausalLM.from_config(model.config.text_config)
    llm.generation_config.eos_token_id = [model.config.text_config.eos_token_id, 5]
    llm.generation_config.do_sample = True
    llm.generation_config.top_p = 0.5
    composed = FavorModel(model.config, language_model=llm)
    assert composed.generation_config.eos_token_id == [model.config.text_config.eos_token_id, 5]
    assert composed.generation_config.do_sample and composed.generation_config.top_p == 0.5


def test_dtype_given_as_a_string_or_auto(fresh_tiny, inputs, tmp_path):
    """``dtype="auto"`` (transformers' default spelling: the checkpoint's dtype) and names like "bfloat16" work as
    in transformers; an unknown name is a clear error."""
    model, _ = fresh_tiny
    model.save_pretrained(tmp_path / "full", merge_lora=True)
    named = FavorModel.from_pretrained(tmp_path / "full", dtype="bfloat16")
    assert named.causal_lm.dtype == torch.bfloat16 and named.vision.dtype == torch.bfloat16
    assert (
        next(named.causal_qformer.parameters()).dtype == torch.float32
    )  # kept in fp32 as with torch.bfloat16
    auto = FavorModel.from_pretrained(tmp_path / "full", dtype="auto")  # a float32 checkpoint stays float32
    assert auto.causal_lm.dtype == torch.float32
    assert torch.equal(_logits(auto, inputs), _logits(FavorModel.from_pretrained(tmp_path / "full"), inputs))
    named.save_pretrained(tmp_path / "bf16", merge_lora=True)
    # a bfloat16 checkpoint loads as saved
    auto16 = FavorModel.from_pretrained(tmp_path / "bf16", dtype="auto")
    assert auto16.causal_lm.dtype == torch.bfloat16 and auto16.vision.dtype == torch.bfloat16
    assert next(auto16.causal_qformer.parameters()).dtype == torch.float32
    with pytest.raises(ValueError, match="dtype"):
        FavorModel.from_pretrained(tmp_path / "full", dtype="bfloat17")


def test_a_model_loaded_from_a_full_checkpoint_saves_a_loadable_delta(fresh_tiny, inputs, tmp_path):
    """Fine-tuning a full (merged or converted) checkpoint and saving it the default way (a delta) must give a
    checkpoint that loads: its frozen parts are referenced where they are, inside the full checkpoint."""
    model, _ = fresh_tiny
    model.save_pretrained(tmp_path / "full", merge_lora=True)
    loaded = FavorModel.from_pretrained(tmp_path / "full")
    with torch.no_grad():
        loaded.language_projection.bias.add_(0.5)  # "fine-tuned"
    loaded.save_pretrained(tmp_path / "elsewhere" / "delta")
    again = FavorModel.from_pretrained(tmp_path / "elsewhere" / "delta")
    assert torch.equal(_logits(again, inputs), _logits(loaded, inputs))


def test_a_moved_frozen_component_is_a_clear_error(fresh_tiny, tmp_path):
    """A delta whose referenced base directory is gone names the component and the path (not a Hub repo-id
    error from deep in huggingface_hub)."""
    model, _ = fresh_tiny
    model.save_frozen_components(tmp_path / "base")
    model.save_pretrained(tmp_path / "delta")
    (tmp_path / "base").rename(tmp_path / "moved")
    with pytest.raises(ValueError, match=r"component_sources\['text'\].*base"):
        FavorModel.from_pretrained(tmp_path / "delta")


def test_a_run_folder_moved_whole_still_loads(fresh_tiny, tmp_path):
    """A delta referenced its frozen parts only by absolute path, so moving the folder that holds both (a `favor
    train` run: frozen/ beside final/) broke loading. It also records them relative to itself, tried first; the
    absolute path still serves a delta copied alone, also when a folder of the same name holds other weights."""
    import shutil

    from favor_llm.testing import tiny_model_and_processor

    model, processor = fresh_tiny
    model.eval()
    inputs = processor(text="What?", media={"image": torch.zeros(8, 8, 3, dtype=torch.uint8)}, answers="red")
    model.save_frozen_components(tmp_path / "run" / "frozen")
    model.save_pretrained(tmp_path / "run" / "final")
    sources = json.loads((tmp_path / "run" / "final" / "config.json").read_text())["component_sources"]
    assert {k: v["relative_path"] for k, v in sources.items()} == {
        k: f"../frozen/{k}" for k in ("vision", "audio_0", "text")
    }
    expected = _logits(model, inputs)
    shutil.move(tmp_path / "run", tmp_path / "moved")
    loaded = FavorModel.from_pretrained(tmp_path / "moved" / "final")
    assert torch.equal(_logits(loaded, inputs), expected)
    # a delta saved from the loaded model (fine-tuning) references where the parts are now
    loaded.save_pretrained(tmp_path / "moved" / "child" / "final")
    child = json.loads((tmp_path / "moved" / "child" / "final" / "config.json").read_text())[
        "component_sources"
    ]
    assert child["text"]["name_or_path"] == str((tmp_path / "moved" / "frozen" / "text").resolve())
    assert child["text"]["relative_path"] == "../../frozen/text"
    # the child copied alone to where "../../frozen" holds another model's parts (same folder names, other
    # weights): the fingerprint rejects that candidate and the absolute path is used
    other, _ = tiny_model_and_processor(seed=3)
    other.save_frozen_components(tmp_path / "elsewhere" / "frozen")
    copied = tmp_path / "elsewhere" / "child" / "final"
    shutil.copytree(tmp_path / "moved" / "child" / "final", copied)
    assert torch.equal(_logits(FavorModel.from_pretrained(copied), inputs), expected)
    shutil.rmtree(tmp_path / "moved" / "frozen")
    with pytest.raises(
        ValueError, match=r"component_sources\['text'\]: .*changed since this checkpoint was saved"
    ):
        FavorModel.from_pretrained(copied)
    # a plain file where the relative path points is no frozen part (it has no fingerprint to check): skipped, and
    # with the absolute path gone too, a clear error instead of loading whatever the file is
    shutil.rmtree(tmp_path / "elsewhere" / "frozen")
    (tmp_path / "elsewhere" / "frozen").mkdir()
    for part in ("vision", "audio_0", "text"):
        (tmp_path / "elsewhere" / "frozen" / part).write_text("not a model")
    with pytest.raises(ValueError, match=r"component_sources\['\w+'\]: .*does not exist"):
        FavorModel.from_pretrained(copied)


def test_a_run_folder_saved_on_another_os_loads_through_its_relative_paths(fresh_tiny, tmp_path):
    """A run trained on Windows and copied to Linux (or the reverse) has absolute paths of the other system
    (``C:\\runs\\frozen\\vision`` is no absolute path on Linux, ``/home/...`` none on Windows): they must not
    be taken for Hub repo ids, so the relative paths saved beside them are still tried."""
    model, processor = fresh_tiny
    model.eval()
    inputs = processor(text="What?", media={"image": torch.zeros(8, 8, 3, dtype=torch.uint8)}, answers="red")
    model.save_frozen_components(tmp_path / "run" / "frozen")
    model.save_pretrained(tmp_path / "run" / "final")
    config_file = tmp_path / "run" / "final" / "config.json"
    config = json.loads(config_file.read_text())
    for name, entry in config["component_sources"].items():
        entry["name_or_path"] = f"C:\\Users\\me\\run\\frozen\\{name}"
    config_file.write_text(json.dumps(config))
    loaded = FavorModel.from_pretrained(tmp_path / "run" / "final")
    assert torch.equal(_logits(loaded, inputs), _logits(model, inputs))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_device_map_puts_every_part_on_the_llms_device(fresh_tiny, inputs, tmp_path):
    """``from_pretrained(device_map=...)`` places the LLM; the encoders, Q-Former and projections must follow it
    (else the AV tokens are on the CPU while the LLM's embeddings are on the GPU)."""
    model, _ = fresh_tiny
    model.save_pretrained(tmp_path / "full", merge_lora=True)
    loaded = FavorModel.from_pretrained(tmp_path / "full", device_map="cuda")
    assert {p.device.type for p in loaded.parameters()} == {"cuda"}
    with torch.no_grad():
        logits = loaded(**inputs.to("cuda")).logits.cpu()
    torch.testing.assert_close(logits, _logits(model, inputs.to("cpu")), rtol=1e-4, atol=1e-4)


def test_a_delta_refuses_a_frozen_part_rewritten_under_it(fresh_tiny, inputs, tmp_path):
    """Issue 10: a merged save into the folder a delta references for its frozen parts silently changed what the
    delta loaded (LoRA applied twice: logits off by 0.1-0.4). The delta records a fingerprint of each part; writing
    the same weights again (a resumed training run) keeps it, a merged LLM changes it."""
    model, _ = fresh_tiny
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.5)
    model.eval()
    model.save_frozen_components(tmp_path / "frozen")
    model.save_pretrained(tmp_path / "delta")
    assert (
        "fingerprint"
        in json.loads((tmp_path / "delta" / "config.json").read_text())["component_sources"]["text"]
    )
    model.save_frozen_components(
        tmp_path / "frozen"
    )  # same weights again: the delta still loads, identically
    assert torch.equal(
        _logits(FavorModel.from_pretrained(tmp_path / "delta"), inputs), _logits(model, inputs)
    )
    model.save_pretrained(tmp_path / "frozen", merge_lora=True)
    with pytest.raises(
        ValueError, match=r"component_sources\['text'\].*changed since this checkpoint was saved"
    ):
        FavorModel.from_pretrained(tmp_path / "delta")


def test_a_checkpoint_from_before_the_rename_says_so(fresh_tiny, tmp_path):
    """Issue 9 renamed qformer.* -> media_encoder.causal_qformer.* (and the other media parts): a checkpoint saved
    before gave only a long missing/unexpected list; the error now names the rename and the remedy."""
    model, _ = fresh_tiny
    model.save_pretrained(tmp_path / "old")
    path = tmp_path / "old" / "model.safetensors"
    weights = load_file(str(path))
    old = {
        k.replace("media_encoder.causal_qformer.", "qformer.").replace("media_encoder.", ""): v
        for k, v in weights.items()
    }
    save_file(old, str(path), metadata={"format": "pt"})
    with pytest.raises(
        ValueError, match=r"before the media parts moved.*qformer\.\* -> media_encoder\.causal_qformer"
    ):
        FavorModel.from_pretrained(tmp_path / "old")


def test_a_truncated_embedded_language_model_is_a_value_error_naming_it(fresh_tiny, tmp_path):
    """The LLM part is read by transformers, whose SafetensorError named no file."""
    model, _ = fresh_tiny
    model.save_pretrained(tmp_path / "ckpt")  # no sources: the LLM is embedded in text/
    weights = tmp_path / "ckpt" / "text" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(ValueError, match=r"component_sources\['text'\]: .*text.* not readable safetensors"):
        FavorModel.from_pretrained(tmp_path / "ckpt")


def test_a_checkpoint_saved_back_into_its_own_folder_stays_movable(fresh_tiny, inputs, tmp_path):
    """A model loaded from a checkpoint that embeds its frozen parts references them by absolute path; saved back in
    place, the checkpoint pointed at itself by absolute path and broke when the folder was moved."""
    import shutil

    model, _ = fresh_tiny
    model.save_pretrained(tmp_path / "ckpt")
    loaded = FavorModel.from_pretrained(tmp_path / "ckpt")
    loaded.save_pretrained(tmp_path / "ckpt")
    sources = json.loads((tmp_path / "ckpt" / "config.json").read_text())["component_sources"]
    assert all(source.get("embedded") for source in sources.values()), sources
    shutil.move(tmp_path / "ckpt", tmp_path / "moved")
    model.eval()
    assert torch.equal(
        _logits(FavorModel.from_pretrained(tmp_path / "moved"), inputs), _logits(model, inputs)
    )
