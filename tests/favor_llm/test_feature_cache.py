"""The frozen-encoder feature cache: a hit gives the loss of no cache; any key part that changes misses."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from favor_llm.aveb import tokenizer
from favor_llm.feature_cache import FeatureCache
from favor_llm.recipes import aveb_tiny_config, build_model, recipe_processor


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> list[dict]:
    from favor_avsync.testing import make_test_clip

    root = tmp_path_factory.mktemp("clips")
    examples = []
    for i, (duration, tone) in enumerate([(2.0, 0.5), (3.0, 1.0), (1.5, None)]):
        path = root / f"c{i}.mp4"
        make_test_clip(path, duration=duration, fps=4.0, size=(32, 32), tone_at=tone, colour_period=0.5)
        examples.append({"text": "Is the beep high or low?", "media": str(path), "answer": "high"})
    return examples


@pytest.fixture(scope="module")
def model_and_processor():
    tok = tokenizer()
    config = aveb_tiny_config(tok)
    return build_model(config, seed=0).eval(), recipe_processor(config, tok)


def test_hit_gives_the_loss_of_no_cache(model_and_processor, clips, tmp_path):
    model, processor = model_and_processor
    cache = FeatureCache(tmp_path / "cache", model, processor)
    plain = processor.collate(clips)
    missed = cache.collate(clips)
    assert (cache.hits, cache.misses) == (0, 3)
    hit = FeatureCache(tmp_path / "cache", model, processor).collate(clips)  # a later run: read from disk
    assert len(list((tmp_path / "cache").rglob("*.safetensors"))) == 3
    assert not list((tmp_path / "cache").rglob("*.tmp"))  # temporary files renamed into place
    for key in ("input_ids", "attention_mask", "labels"):
        assert torch.equal(hit[key], plain[key]), key
    with torch.no_grad():
        reference = model(**plain)
        for batch in (missed, hit):
            out = model(**batch)
            torch.testing.assert_close(out.loss, reference.loss, rtol=1e-6, atol=1e-6)
            torch.testing.assert_close(out.logits, reference.logits, rtol=1e-5, atol=1e-5)


def test_text_inputs_match_the_processor(model_and_processor, clips):
    _, processor = model_and_processor
    batch = processor.collate(clips)
    counts = [int(n) for n in (batch["input_ids"] == processor.av_token_id).sum(1)]
    made = processor.text_inputs([c["text"] for c in clips], counts, [c["answer"] for c in clips])
    for key in ("input_ids", "attention_mask", "labels"):
        assert torch.equal(made[key], batch[key]), key


def test_cached_batches_keep_control_token_text_as_the_processor_does(model_and_processor, clips, tmp_path):
    """The cache used to build its text with its own copy of the processor's, which tokenised "</s>" typed in a
    question or an answer as a real end-of-sequence token (issue 10); it now uses `FavorProcessor.text_inputs`."""
    model, processor = model_and_processor
    examples = [
        {**clips[0], "text": "Does </s> end it?", "answer": "no, </s> is text"},
        {**clips[1], "text": "Is the beep high or low, in a longer question?", "answer": "high"},
    ]
    plain = processor.collate(examples)
    cached = FeatureCache(tmp_path, model, processor).collate(examples)
    eos = processor.tokenizer.eos_token_id
    assert [row.tolist().count(eos) for row in cached["labels"]] == [1, 1]  # only the appended EOS
    for key in ("input_ids", "attention_mask", "labels"):
        assert torch.equal(cached[key], plain[key]), key


def test_changing_a_key_part_misses(model_and_processor, clips, tmp_path):
    model, processor = model_and_processor
    cache = FeatureCache(tmp_path / "c", model, processor)
    media = clips[0]["media"]
    key = cache.key(media)
    copy = tmp_path / "copy.mp4"
    shutil.copy(media, copy)
    assert cache.key(copy) == key  # same content elsewhere: same key
    edited = tmp_path / "edited.mp4"
    edited.write_bytes(Path(media).read_bytes() + b"\0")
    assert cache.key(edited) != key  # content
    other_weights = build_model(model.config, seed=1).eval()
    assert FeatureCache(tmp_path / "c", other_weights, processor).key(media) != key  # encoder weights
    import copy as copying

    slower = copying.deepcopy(processor)
    slower.layout.fps = 1.0
    assert FeatureCache(tmp_path / "c", model, slower).key(media) != key  # decoding settings
    with pytest.raises(ValueError, match="media: no such file"):
        cache.key(tmp_path / "missing.mp4")


def test_settings_after_the_encoders_share_entries(model_and_processor, clips, tmp_path):
    """Windows, queries and the diversity weight act after the frozen encoders: a run that changes them reuses the
    entries (the ablations of docs/results.md share one cache)."""
    model, processor = model_and_processor
    key = FeatureCache(tmp_path, model, processor).key(clips[0]["media"])
    other = aveb_tiny_config(processor.tokenizer, qformer_config={"window_size": 1, "window_stride": 1})
    other_processor = recipe_processor(other, processor.tokenizer)
    assert other_processor.layout.window_size == 1
    assert FeatureCache(tmp_path, build_model(other, seed=0), other_processor).key(clips[0]["media"]) == key


def test_a_corrupt_entry_is_recomputed(model_and_processor, clips, tmp_path):
    # a run killed while another tool copied the cache, a full disk, a truncated sync: the entry must not crash
    # training; it is a miss, recomputed and written again
    model, processor = model_and_processor
    first = FeatureCache(tmp_path / "cache", model, processor).collate(clips[:1])
    (entry,) = (tmp_path / "cache").rglob("*.safetensors")
    entry.write_bytes(entry.read_bytes()[:40])
    cache = FeatureCache(tmp_path / "cache", model, processor)
    again = cache.collate(clips[:1])
    assert (cache.hits, cache.misses) == (0, 1)
    torch.testing.assert_close(again["visual_features"], first["visual_features"])
    assert FeatureCache(tmp_path / "cache", model, processor).collate(clips[:1]) is not None
    assert entry.stat().st_size > 40


def test_a_read_only_cache_is_a_clear_error_before_training(model_and_processor, tmp_path):
    import os

    if os.geteuid() == 0:
        pytest.skip("root writes into read-only folders")
    model, processor = model_and_processor
    (tmp_path / "ro").mkdir()
    (tmp_path / "ro").chmod(0o555)
    try:
        with pytest.raises(ValueError, match=r"feature_cache: .*ro.* is not writable"):
            FeatureCache(tmp_path / "ro", model, processor)
    finally:
        (tmp_path / "ro").chmod(0o755)
