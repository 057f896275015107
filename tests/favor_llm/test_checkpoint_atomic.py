"""Atomic saves of FavorModel and FavorProcessor (issue 10): a failed, size-limited or killed save leaves the previous
checkpoint whole."""

from __future__ import annotations

import copy
import errno
import hashlib
import json
import os
import resource
import shutil
import signal
from pathlib import Path

import pytest
import torch

from crash_helpers import count_calls, in_child, kill_points, killed_at, leftovers
from favor_llm import FavorModel, FavorProcessor
from favor_llm import checkpoint as checkpoint_module
from favor_llm.testing import tiny_model_and_processor
from favor_qformer.saving import atomic_save_directory


@pytest.fixture
def inputs(fresh_tiny, media):
    _, processor = fresh_tiny
    return processor(text=["What?"], media=[{"video": media["video"], "audio": media["audio"]}])


def _logits(model, inputs):
    with torch.no_grad():
        return model(**inputs).logits


@pytest.mark.parametrize("merge_lora", [False, True])
def test_a_failed_model_save_leaves_the_old_checkpoint(fresh_tiny, inputs, tmp_path, monkeypatch, merge_lora):
    model, processor = fresh_tiny
    folder = tmp_path / "ckpt"
    model.save_pretrained(folder, merge_lora=merge_lora)
    processor.save_pretrained(folder)  # the processor shares the folder: a model save must keep its files
    (folder / "NOTES.txt").write_text("mine")
    before = _logits(FavorModel.from_pretrained(folder), inputs)

    with torch.no_grad():  # a different model, whose save then fails half-way (after its weights are written)
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.5)

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint_module.FavorConfig, "save_pretrained", disk_full)
    with pytest.raises(OSError, match="No space left"):
        model.save_pretrained(folder, merge_lora=merge_lora)
    monkeypatch.undo()

    assert leftovers(folder) == []
    assert (folder / "NOTES.txt").read_text() == "mine"
    torch.testing.assert_close(_logits(FavorModel.from_pretrained(folder), inputs), before, rtol=0, atol=0)
    FavorProcessor.from_pretrained(folder)

    model.save_pretrained(folder, merge_lora=merge_lora)  # a good save replaces it whole
    after = _logits(FavorModel.from_pretrained(folder), inputs)
    assert not torch.allclose(after, before)
    torch.testing.assert_close(after, _logits(model, inputs), rtol=1e-5, atol=1e-5)
    assert (folder / "NOTES.txt").read_text() == "mine"
    FavorProcessor.from_pretrained(folder)


def test_a_delta_save_over_a_merged_one_drops_the_embedded_parts_it_does_not_write(fresh_tiny, tmp_path):
    model, _ = fresh_tiny
    folder = tmp_path / "ckpt"
    model.save_pretrained(folder, merge_lora=True)
    assert (folder / "text").is_dir()
    sources = model.save_frozen_components(tmp_path / "frozen")  # now every frozen part has a source
    model.save_pretrained(folder)
    assert not (folder / "text").exists() and not (folder / "vision").exists()
    assert (folder / "adapter").is_dir() and set(sources) == {"vision", "audio_0", "text"}


def test_a_failed_processor_save_leaves_the_old_processor(fresh_tiny, tmp_path, monkeypatch):
    _, processor = fresh_tiny
    folder = tmp_path / "proc"
    processor.save_pretrained(folder)
    before = (folder / "processor_config.json").read_text()
    tokenizer_class = type(processor.tokenizer)

    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(tokenizer_class, "save_pretrained", broken)
    with pytest.raises(OSError, match="No space left"):
        processor.save_pretrained(folder)
    monkeypatch.undo()
    assert leftovers(folder) == []
    assert (folder / "processor_config.json").read_text() == before
    FavorProcessor.from_pretrained(folder)


def test_a_model_and_processor_saved_inside_one_atomic_save_land_together(fresh_tiny, tmp_path):
    """Saves nest (``favor convert`` writes its output so): nothing shows before the block ends, then all at once.
    A model loaded from a full checkpoint references its frozen parts inside that folder; saved back as a delta
    through the enclosing save, it must embed them again (the swap drops the old folder's copies), not point at
    the folder's old contents."""
    model, processor = fresh_tiny
    folder = tmp_path / "ckpt"
    model.save_pretrained(folder, merge_lora=True)
    loaded = FavorModel.from_pretrained(folder)
    assert loaded.config.component_sources["text"]["name_or_path"] == str((folder / "text").resolve())
    with atomic_save_directory(folder, owned=["report.txt"]) as staging:
        loaded.save_pretrained(staging)
        processor.save_pretrained(staging)
        (staging / "report.txt").write_text("done")
        assert not (folder / "processor_config.json").exists() and not (folder / "report.txt").exists()
        assert json.loads((folder / "favor_checkpoint.json").read_text())["format"] == "full"
    assert leftovers(folder) == [] and leftovers(staging) == []
    assert json.loads((folder / "favor_checkpoint.json").read_text())["format"] == "delta"
    assert _digest(FavorModel.from_pretrained(folder)) == _digest(loaded)
    FavorProcessor.from_pretrained(folder)


# ----- killed and size-limited saves (in a forked child) -----------------------------------------------------------


def _digest(model: FavorModel) -> str:
    """SHA-256 of every tensor of ``model`` (keys, dtypes, shapes and bytes): equal digests, bit-identical models."""
    hashed = hashlib.sha256()
    for key, value in sorted(model.state_dict().items()):
        value = value.detach().cpu().contiguous()
        hashed.update(f"{key} {value.dtype} {tuple(value.shape)}".encode())
        hashed.update(value.reshape(-1).view(torch.uint8).numpy().tobytes())
    return hashed.hexdigest()


def _loaded_digest(folder: Path) -> str:
    return _digest(FavorModel.from_pretrained(folder))


#: The top-level files of a model checkpoint (its folders are ``adapter/`` or the embedded parts).
MODEL_FILES = {"config.json", "generation_config.json", "favor_checkpoint.json", "model.safetensors"}


def _other_files(folder: Path) -> dict[str, bytes]:
    """The bytes of every top-level file that is not the model's (the processor's, the user's notes)."""
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file() and p.name not in MODEL_FILES}


@pytest.fixture(params=[False, True], ids=["delta", "merged"])
def two_models(request, fresh_tiny, tmp_path):
    """(folder holding the old model's checkpoint, its processor and a user file; old model; new model; merge_lora).

    The two models share their frozen parts (saved once under ``frozen/``, so the delta save is a real delta) and
    differ in every trainable weight, LoRA included."""
    old, processor = fresh_tiny
    old.save_frozen_components(tmp_path / "frozen")
    new, _ = tiny_model_and_processor(seed=0)
    new.config.component_sources = old.config.component_sources
    with torch.no_grad():
        for p in new.parameters():
            if p.requires_grad:
                p.add_(0.25)
    target = tmp_path / "ckpt"
    old.save_pretrained(target, merge_lora=request.param)
    processor.save_pretrained(target)
    (target / "NOTES.txt").write_text("mine")
    return target, old, new, request.param


def test_a_model_save_killed_at_many_points_leaves_old_or_new(two_models, tmp_path):
    """SIGKILL a child before about 16 of the ~300-400 file-system calls of ``FavorModel.save_pretrained`` (delta
    and merged), spread over the whole save plus its last calls (the swap and the removal of the old folder).
    After each kill the folder loads, bit for bit, as the old or the new model, and keeps the processor and the
    user's file; the next save removes what the killed ones left."""
    target, old, new, merge_lora = two_models
    others = _other_files(target)
    assert "processor_config.json" in others and "NOTES.txt" in others
    probe = tmp_path / "probe"
    shutil.copytree(target, probe)

    def save(folder: Path = target) -> None:
        new.save_pretrained(folder, merge_lora=merge_lora)

    total = count_calls(lambda: save(probe), tmp_path / "calls")
    want = {"old": _loaded_digest(target), "new": _loaded_digest(probe)}
    assert want["old"] != want["new"] and total > 100

    outcomes = []
    for kill_at in kill_points(total, spread=12, tail=4):
        assert in_child(lambda k=kill_at: killed_at(save, k)) == -signal.SIGKILL
        found = _loaded_digest(target)  # never missing, never half-written
        outcomes.append(next((name for name, digest in want.items() if digest == found), "mixed"))
        assert _other_files(target) == others
        if outcomes[-1] == "new":
            old.save_pretrained(target, merge_lora=merge_lora)  # back to the old one for the next kill point
    assert "mixed" not in outcomes and "old" in outcomes and "new" in outcomes, outcomes
    assert in_child(lambda: killed_at(save, total // 2)) == -signal.SIGKILL  # leaves its staging folder ...
    assert leftovers(target)
    save()  # ... which the next save removes
    assert leftovers(target) == [] and _loaded_digest(target) == want["new"]
    assert (target / "NOTES.txt").read_text() == "mine"
    FavorProcessor.from_pretrained(target)


def test_a_model_save_under_a_file_size_limit_keeps_the_old_checkpoint(two_models):
    """A full disk, simulated by RLIMIT_FSIZE in a child: writing the weights fails with EFBIG half-way."""
    target, _, new, merge_lora = two_models
    want, others = _loaded_digest(target), _other_files(target)
    largest = max(p.stat().st_size for p in target.rglob("*.safetensors"))

    def save_under_limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (largest // 2, resource.RLIM_INFINITY))
        try:
            new.save_pretrained(target, merge_lora=merge_lora)
        except Exception as error:
            if os.strerror(errno.EFBIG) in str(error):  # "File too large" (safetensors words it its own way)
                os._exit(4)
            raise

    assert in_child(save_under_limit) == 4  # the child's save failed on the size limit
    assert leftovers(target) == [] and _other_files(target) == others
    assert _loaded_digest(target) == want


def _processor_signature(folder: Path) -> str:
    """What a processor loaded from ``folder`` is: its config and both tokenizers' vocabularies."""
    processor = FavorProcessor.from_pretrained(folder)
    return json.dumps(
        [processor.to_dict(), processor.tokenizer.get_vocab(), processor.qformer_tokenizer.get_vocab()],
        sort_keys=True,
    )


def test_a_processor_save_killed_at_many_points_leaves_old_or_new(fresh_tiny, tmp_path):
    """The same for ``FavorProcessor.save_pretrained`` (about 20 of its ~200 file-system calls), into a folder that
    also holds a model checkpoint: the processor loads as the old or the new one (config and vocabularies), the
    model's files are untouched."""
    model, old = fresh_tiny
    new = copy.deepcopy(old)  # other settings and a larger vocabulary: a change in several files
    new.qformer_max_length = 7
    new.tokenizer.add_tokens(["<extra>"])
    target, probe = tmp_path / "ckpt", tmp_path / "probe"
    model.save_pretrained(target)
    old.save_pretrained(target)
    model_files = {p.name: p.read_bytes() for p in target.iterdir() if p.name in MODEL_FILES}
    shutil.copytree(target, probe)
    total = count_calls(lambda: new.save_pretrained(probe), tmp_path / "calls")
    want = {"old": _processor_signature(target), "new": _processor_signature(probe)}
    assert want["old"] != want["new"] and total > 50

    outcomes = []
    for kill_at in kill_points(total, spread=16, tail=4):
        assert (
            in_child(lambda k=kill_at: killed_at(lambda: new.save_pretrained(target), k)) == -signal.SIGKILL
        )
        found = _processor_signature(target)
        outcomes.append(next((name for name, value in want.items() if value == found), "mixed"))
        assert {p.name: p.read_bytes() for p in target.iterdir() if p.name in MODEL_FILES} == model_files
        if outcomes[-1] == "new":
            old.save_pretrained(target)
    assert "mixed" not in outcomes and "old" in outcomes and "new" in outcomes, outcomes
    new.save_pretrained(target)
    assert leftovers(target) == [] and _processor_signature(target) == want["new"]
    FavorModel.from_pretrained(target)
