"""Atomic saves of FavorModel and FavorProcessor (issue 10): a failed save leaves the previous checkpoint whole."""

from __future__ import annotations

import pytest
import torch

from favor_llm import FavorModel, FavorProcessor
from favor_llm import checkpoint as checkpoint_module


@pytest.fixture
def inputs(fresh_tiny, media):
    _, processor = fresh_tiny
    return processor(text=["What?"], media=[{"video": media["video"], "audio": media["audio"]}])


def _logits(model, inputs):
    with torch.no_grad():
        return model(**inputs).logits


def _leftovers(folder):
    return sorted(p.name for p in folder.parent.iterdir() if p.name.startswith(f".{folder.name}."))


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

    assert _leftovers(folder) == []
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
    assert _leftovers(folder) == []
    assert (folder / "processor_config.json").read_text() == before
    FavorProcessor.from_pretrained(folder)
