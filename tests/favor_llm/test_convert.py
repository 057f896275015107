"""`favor_llm.convert`: a released-layout delta checkpoint -> FavorModel, checked against ../shared/reference.

The released checkpoint is built here the way the released trainer writes it (``torch.save`` of every trainable
parameter under ``OpenLLAMAPEFTModel``'s names): the Q-Former tensors are the reference file's
``official_state_dict.*`` (so the converted Q-Former must reproduce the released outputs), the other modules are
random tensors sized for a tiny model whose Q-Former has the reference sizes (hidden 64, features 48 + 48).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import signal
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoConfig

from favor_llm import FavorModel
from favor_llm.convert import (
    convert_released_checkpoint,
    convert_released_state_dict,
    load_released_state_dict,
)
from favor_llm.testing import tiny_model_and_processor, tiny_tokenizer

ATOL = 1e-5
REFERENCE_FILES = ["favor_official_tiny.safetensors", "favor_official_tiny_unitln.safetensors"]
PREFIX = "official_state_dict."


def _reference_sized_model():
    """The tiny FAVOR with the reference Q-Former sizes: 48-wide visual tokens + 48-wide audio -> 96, H = 64."""
    tokenizer = tiny_tokenizer()
    vision_qformer = AutoConfig.for_model(
        "instructblip_qformer",
        vocab_size=len(tokenizer),
        hidden_size=48,
        num_hidden_layers=1,
        num_attention_heads=4,
        intermediate_size=64,
        encoder_hidden_size=32,
        cross_attention_frequency=1,
        max_position_embeddings=64,
        pad_token_id=tokenizer.pad_token_id,
    )
    qformer = {
        "hidden_size": 64,
        "num_layers": 2,
        "num_heads": 4,
        "intermediate_size": 128,
        "num_queries": 32,
        "causal_num_heads": 4,
        "window_size": 10,
        "window_stride": 10,
        "max_position_embeddings": 4096,
    }
    return tiny_model_and_processor(
        seed=0, vision_qformer_config=vision_qformer, audio_hidden_size=48, causal_qformer_config=qformer
    )


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    """A saved frozen base (vision, Whisper, LLM + tokenizer) and the tiny model whose config we convert into."""
    root = tmp_path_factory.mktemp("convert_base")
    model, processor = _reference_sized_model()
    model.save_frozen_components(root / "frozen")
    processor.tokenizer.save_pretrained(root / "frozen" / "text")
    processor.tokenizer.save_pretrained(root / "qformer_tokenizer")
    return model, processor, root


def _released_delta(model: FavorModel, reference_path: Path, seed: int = 0) -> dict[str, torch.Tensor]:
    """A delta state dict in the released key layout, as the released trainer's torch.save writes it."""
    generator = torch.Generator().manual_seed(seed)
    reference = load_file(str(reference_path))
    delta = {k[len(PREFIX) :]: v for k, v in reference.items() if k.startswith(PREFIX)}

    def rand(*shape):
        return torch.nn.Parameter(
            torch.randn(*shape, generator=generator) * 0.05
        )  # released saves Parameters

    whisper_width = model.config.audio_configs[0].d_model
    llm_width = model.config.text_config.hidden_size
    delta["speech_pre_qformer_proj.weight"] = rand(48, whisper_width)
    delta["speech_pre_qformer_proj.bias"] = rand(48)
    delta["llama_proj.weight"] = rand(llm_width, 64)
    delta["llama_proj.bias"] = rand(llm_width)
    for name, p in model.named_parameters():
        if ".lora_" in name:  # ours: language_model.base_model.model.<path>.lora_A.default.weight
            path = name.removeprefix("language_model.")
            delta[f"llama_model.{path}"] = rand(
                *p.shape
            )  # peft 0.3 (released) also names the adapter "default"
    return delta


def _reference_qformer_outputs(qformer, reference_path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    reference = load_file(str(reference_path))
    synced = reference["synced_features"]  # (2, 23 * 32, 96): the reference's synchronised stream
    features = synced.reshape(2, -1, 32, synced.shape[-1])  # (B, T, N, D)
    with torch.no_grad():
        out = qformer(features, torch.ones(features.shape[:2], dtype=torch.bool))
    return out.tokens.reshape(-1, *out.tokens.shape[2:]), reference["qformer_output_causal"]  # (6, 32, 64)


@pytest.mark.parametrize("reference_file", REFERENCE_FILES)
def test_converted_checkpoint_reproduces_released_qformer(parts, reference_dir, tmp_path, reference_file):
    model, _, root = parts
    released = _released_delta(model, reference_dir / reference_file)
    torch.save(released, tmp_path / "pytorch_model_1_101.pt")

    out = convert_released_checkpoint(
        tmp_path / "pytorch_model_1_101.pt",
        llm=root / "frozen" / "text",
        out=tmp_path / "converted",
        config=model.config,
        qformer_tokenizer=root / "qformer_tokenizer",
    )
    loaded = FavorModel.from_pretrained(out).eval()

    got, want = _reference_qformer_outputs(loaded.qformer, reference_dir / reference_file)
    error = (got - want).abs().max().item()
    assert got.shape == want.shape == (6, 32, 64)
    assert error <= ATOL, f"converted Q-Former differs from the released outputs by {error:.3g}"
    state = loaded.state_dict()
    torch.testing.assert_close(
        state["media_encoder.audio_projections.0.weight"], released["speech_pre_qformer_proj.weight"].data
    )
    torch.testing.assert_close(state["language_projection.bias"], released["llama_proj.bias"].data)
    lora = "base_model.model.model.layers.1.self_attn.v_proj.lora_B"
    torch.testing.assert_close(
        state[f"language_model.{lora}.default.weight"], released[f"llama_model.{lora}.default.weight"].data
    )
    assert loaded.config.causal_qformer_config.causal_attends_window_padding is True
    report = json.loads((out / "favor_conversion.json").read_text())
    assert report["skipped"] == {"video_Qformer.bert.embeddings.position_ids": "unused buffer"}
    assert report["renamed"]["speech_pre_qformer_proj.weight"] == "media_encoder.audio_projections.0.weight"


def test_converted_model_answers_through_its_processor(parts, reference_dir, tmp_path):
    """The converted directory is a complete model: its processor + generate run end to end."""
    from favor_llm import FavorProcessor

    model, _, root = parts
    released = _released_delta(model, reference_dir / REFERENCE_FILES[1])
    out = convert_released_checkpoint(
        released, llm=root / "frozen" / "text", out=tmp_path / "c", config=model.config
    )
    loaded = FavorModel.from_pretrained(out).eval()
    processor = FavorProcessor.from_pretrained(out)
    inputs = processor(text="What sound do you hear?", media=torch.zeros(16000))  # 1 s of silence
    generated = loaded.generate(**inputs, max_new_tokens=3, do_sample=False)
    new_tokens = generated.shape[1] - inputs["input_ids"].shape[1]
    assert 1 <= new_tokens <= 3
    assert (
        loaded.config.av_token_id
        == processor.av_token_id
        == processor.tokenizer.convert_tokens_to_ids("<AV>")
    )


def test_unversioned_lora_names_and_frozen_keys(parts, reference_dir):
    """peft < 0.3 names LoRA without the adapter; ZeRO-3 saves add buffers / frozen weights, which are skipped."""
    model, _, _ = parts
    released = _released_delta(model, reference_dir / REFERENCE_FILES[0])
    released = {k.replace(".default.weight", ".weight"): v for k, v in released.items()}
    released["llama_model.base_model.model.model.layers.0.self_attn.rotary_emb.inv_freq"] = torch.ones(4)
    released["speech_encoder.layers.0.fc1.weight"] = torch.ones(2, 2)
    converted, report = convert_released_state_dict(released, model.config)
    assert set(converted) == {n for n, p in model.named_parameters() if p.requires_grad}
    assert all(v.dtype == torch.float32 for v in converted.values())
    assert report.skipped["speech_encoder.layers.0.fc1.weight"].startswith("frozen part")


def test_strict_errors_list_every_problem(parts, reference_dir):
    model, _, _ = parts
    released = _released_delta(model, reference_dir / REFERENCE_FILES[0])
    released.pop("llama_proj.bias")
    released["speech_Qformer.bert.encoder.layer.0.output_query.dense.weight"] = torch.zeros(2, 2)
    released["speech_pre_qformer_proj.weight"] = torch.zeros(48, 7)
    with pytest.raises(ValueError) as info:
        convert_released_state_dict(released, model.config)
    message = str(info.value)
    assert "language_projection.bias" in message  # missing
    assert "speech_Qformer.bert.encoder.layer.0.output_query.dense.weight" in message  # unknown
    assert "separate speech Q-Former" in message  # with what it is
    assert "audio_projections.0.weight: checkpoint (48, 7) vs model (48, 32)" in message  # shape


def test_qformer_errors_are_reported(parts, reference_dir):
    model, _, _ = parts
    released = _released_delta(model, reference_dir / REFERENCE_FILES[0])
    del released["ln_video.weight"]
    with pytest.raises(ValueError, match=r"Q-Former: .*input_layernorm\.weight"):
        convert_released_state_dict(released, model.config)


def test_lora_rank_mismatch_is_a_shape_error(parts, reference_dir):
    model, _, _ = parts
    released = _released_delta(model, reference_dir / REFERENCE_FILES[0])
    released = {k: (v[:2] if ".lora_A" in k else v) for k, v in released.items()}
    with pytest.raises(ValueError, match=r"lora_A\.default\.weight: checkpoint \(2, 64\) vs model \(4, 64\)"):
        convert_released_state_dict(released, model.config)


@pytest.mark.parametrize(
    ("content", "match"),
    [(b"", "not a readable PyTorch checkpoint"), (b"garbage" * 10, "not a readable PyTorch checkpoint")],
)
def test_unreadable_files(tmp_path, content, match):
    path = tmp_path / "bad.pt"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=match):
        load_released_state_dict(path)


def test_not_a_state_dict_and_missing_file(tmp_path):
    torch.save([torch.zeros(1)], tmp_path / "list.pt")
    with pytest.raises(ValueError, match="expected a non-empty dict of tensors"):
        load_released_state_dict(tmp_path / "list.pt")
    with pytest.raises(ValueError, match="no such file"):
        load_released_state_dict(tmp_path / "nope.pt")


def test_llm_without_config_is_refused(parts, reference_dir, tmp_path):
    model, _, _ = parts
    released = _released_delta(model, reference_dir / REFERENCE_FILES[0])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"has no config\.json"):
        convert_released_checkpoint(released, llm=tmp_path / "empty", out=tmp_path / "o", config=model.config)


def test_default_config_is_the_released_one_with_the_llms_text_config(parts, reference_dir, tmp_path):
    """Without ``config`` the target is the released FAVOR (768-wide Q-Former, Whisper large-v2 projection) around
    the given LLM, with the LoRA rank read from the checkpoint: the tiny tensors must then fail on shapes only."""
    model, _, root = parts
    released = _released_delta(model, reference_dir / REFERENCE_FILES[0])
    with pytest.raises(ValueError) as info:
        convert_released_checkpoint(released, llm=root / "frozen" / "text", out=tmp_path / "o")
    message = str(info.value)
    assert "audio_projections.0.weight: checkpoint (48, 32) vs model (768, 1280)" in message
    assert (
        "language_projection.weight: checkpoint (64, 64) vs model (64, 768)" in message
    )  # LLM width from llm
    assert "Q-Former has hidden_size=64 (config: 768), encoder_hidden_size=96 (config: 1536)" in message
    assert "lora_" not in message  # rank 4 read from the checkpoint
    assert "unknown released keys" not in message
    assert "missing" not in message  # the Q-Former's keys are accounted for by its size mismatch


def test_the_llms_generation_config_is_kept(parts, reference_dir, tmp_path):
    """The base LLM's generation_config.json (a chat model's end-of-turn ids, its sampling defaults) is the
    converted model's generation config."""
    import shutil

    from transformers import GenerationConfig

    model, _, root = parts
    llm = tmp_path / "llm"
    shutil.copytree(root / "frozen" / "text", llm)
    eos = [model.config.text_config.eos_token_id, 7]
    GenerationConfig(eos_token_id=eos, do_sample=True, top_p=0.6, temperature=0.9).save_pretrained(llm)
    released = _released_delta(model, reference_dir / REFERENCE_FILES[1])
    out = convert_released_checkpoint(released, llm=llm, out=tmp_path / "c", config=model.config)
    loaded = FavorModel.from_pretrained(out)
    assert loaded.generation_config.eos_token_id == eos
    assert loaded.generation_config.top_p == 0.6 and loaded.generation_config.do_sample


def _conversion(out: Path) -> tuple[str, dict, str]:
    """What a conversion folder holds: the model's trainable weights (SHA-256), its processor's config and
    ``favor_conversion.json``; loading either raises when the folder is broken."""
    from favor_llm import FavorProcessor

    hashed = hashlib.sha256()
    for key, value in sorted(FavorModel.from_pretrained(out).named_parameters()):
        if value.requires_grad:  # what the conversion wrote (the frozen parts are referenced)
            hashed.update(key.encode() + value.detach().reshape(-1).view(torch.uint8).numpy().tobytes())
    processor = FavorProcessor.from_pretrained(out).to_dict()
    return hashed.hexdigest(), processor, (out / "favor_conversion.json").read_text()


def test_a_conversion_killed_at_many_points_leaves_the_old_or_the_new_output(parts, reference_dir, tmp_path):
    """``convert_released_checkpoint`` into a folder holding an earlier conversion, SIGKILLed in a child before
    about 10 of its ~600 file-system calls: the folder is always one whole conversion, the old or the new (model,
    processor and ``favor_conversion.json`` together), and the next conversion removes what the killed ones
    left."""
    from crash_helpers import count_calls, in_child, kill_points, killed_at, leftovers

    model, _, root = parts
    llm = root / "frozen" / "text"
    old_delta = _released_delta(model, reference_dir / REFERENCE_FILES[0], seed=0)
    torch.save(_released_delta(model, reference_dir / REFERENCE_FILES[0], seed=1), tmp_path / "new.pt")
    target, probe = tmp_path / "out", tmp_path / "probe"

    def convert_old(out: Path = target) -> None:
        convert_released_checkpoint(old_delta, llm=llm, out=out, config=model.config)

    def convert_new(out: Path = target) -> None:  # other weights, a Q-Former tokenizer, another source
        qformer_tokenizer = root / "qformer_tokenizer"
        convert_released_checkpoint(
            tmp_path / "new.pt", llm=llm, out=out, config=model.config, qformer_tokenizer=qformer_tokenizer
        )

    convert_old()
    (target / "NOTES.txt").write_text("mine")
    shutil.copytree(target, probe)
    pristine = shutil.copytree(target, tmp_path / "pristine")
    total = count_calls(lambda: convert_new(probe), tmp_path / "calls")
    want = {"old": _conversion(target), "new": _conversion(probe)}
    assert all(a != b for a, b in zip(want["old"], want["new"], strict=True)) and total > 100

    outcomes = []
    for kill_at in kill_points(total, spread=8, tail=3):
        assert in_child(lambda k=kill_at: killed_at(convert_new, k)) == -signal.SIGKILL
        try:
            found = _conversion(target)
        except (OSError, ValueError) as error:
            found = f"broken: {error}"
        outcomes.append(next((name for name, value in want.items() if value == found), f"{kill_at}: {found}"))
        assert (target / "NOTES.txt").read_text() == "mine"
        if outcomes[-1] == "new":  # back to the old conversion for the next kill point
            shutil.rmtree(target)
            shutil.copytree(pristine, target)
    assert set(outcomes) == {"old", "new"}, outcomes
    assert in_child(lambda: killed_at(convert_new, total // 2)) == -signal.SIGKILL
    assert leftovers(target)
    convert_new()
    assert leftovers(target) == [] and _conversion(target) == want["new"]


def test_a_failed_conversion_keeps_the_earlier_one_whole(parts, reference_dir, tmp_path, monkeypatch):
    """The processor's save fails (a full disk) after the model's was written: the folder still holds the earlier
    conversion, model, processor and report alike (they were three separate saves, the model's landing alone)."""
    from crash_helpers import leftovers
    from favor_llm import FavorProcessor

    model, _, root = parts
    released = [_released_delta(model, reference_dir / REFERENCE_FILES[0], seed=seed) for seed in (0, 1)]
    out = tmp_path / "out"
    convert_released_checkpoint(released[0], llm=root / "frozen" / "text", out=out, config=model.config)
    before = _conversion(out)

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(FavorProcessor, "save_pretrained", disk_full)
    with pytest.raises(OSError, match="No space left"):
        convert_released_checkpoint(released[1], llm=root / "frozen" / "text", out=out, config=model.config)
    monkeypatch.undo()
    assert _conversion(out) == before and leftovers(out) == []
