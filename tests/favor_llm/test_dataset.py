"""The JSON Lines dataset format: real media files, items that feed FavorProcessor.collate, every bad line reported."""

from __future__ import annotations

import json
import re

import pytest
import torch
from torch.utils.data import DataLoader

from favor_llm.dataset import DEFAULT_TASK, FavorDataset, read_examples


@pytest.fixture
def files(tmp_path):
    from favor_avsync.testing import make_test_clip

    (tmp_path / "clips").mkdir()
    make_test_clip(tmp_path / "clips" / "a.mp4", duration=2.0, fps=10.0, size=(32, 32))
    make_test_clip(tmp_path / "clips" / "b.wav", container="wav", duration=1.0)
    make_test_clip(tmp_path / "clips" / "c.png", container="png", size=(32, 32))
    return tmp_path


def _write(path, lines):
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    return path


def test_items_resolve_media_and_feed_collate(files, tiny):
    absolute = str(files / "clips" / "b.wav")
    data = _write(
        files / "data.jsonl",
        [
            {"media": "clips/a.mp4", "question": "What colour?", "answer": "red", "task": "colour"},
            "",
            {"media": absolute, "question": "What sound?", "answer": "a tone"},
            {"media": "clips/c.png", "question": "What colour?", "answer": "red", "task": "colour"},
        ],
    )
    dataset = FavorDataset(data)
    assert len(dataset) == 3
    assert dataset[0] == {
        "text": "What colour?",
        "media": str(files / "clips" / "a.mp4"),
        "answer": "red",
        "task": "colour",
    }
    assert dataset[1]["media"] == absolute and dataset[1]["task"] == DEFAULT_TASK
    assert [e.line for e in dataset.examples] == [1, 3, 4]
    assert dataset.tasks == ["colour", DEFAULT_TASK]

    model, processor = tiny
    batch = next(iter(DataLoader(dataset, batch_size=3, collate_fn=processor.collate)))
    # The answers are the labels: the last supervised tokens of each row decode to answer + EOS.
    for row, example in zip(batch["labels"], dataset.examples):
        target = row[row != -100]
        assert processor.tokenizer.decode(target, skip_special_tokens=True).strip() == example.answer
    assert batch["pixel_values"].shape[0] == 3 and batch["input_features"].shape[0] == 3
    with torch.no_grad():
        loss = model(**batch).loss
    assert torch.isfinite(loss)


def test_relative_media_follow_the_file_not_the_working_directory(files, monkeypatch, tmp_path_factory):
    data = _write(files / "data.jsonl", [{"media": "clips/a.mp4", "question": "q", "answer": "a"}])
    monkeypatch.chdir(tmp_path_factory.mktemp("elsewhere"))
    assert read_examples(data)[0].media == files / "clips" / "a.mp4"


def test_every_bad_line_is_reported_with_file_and_line(files):
    data = _write(
        files / "bad.jsonl",
        [
            {"media": "clips/a.mp4", "question": "ok", "answer": "fine"},  # 1: good
            '{"media": "clips/a.mp4", "question": ',  # 2: invalid JSON
            '["not", "an", "object"]',  # 3
            {"media": "clips/a.mp4", "answer": "x"},  # 4: missing question
            {"media": "clips/a.mp4", "question": "  ", "answer": "x"},  # 5: empty question
            {"media": "clips/a.mp4", "question": "q", "answer": 3},  # 6: answer not a string
            {"media": "clips/a.mp4", "question": "q", "answer": "a", "label": "x"},  # 7: unknown key
            {"media": "clips/missing.mp4", "question": "q", "answer": "a"},  # 8: no such file
            {"media": "clips", "question": "q", "answer": "a"},  # 9: a directory
            {"media": ["clips/a.mp4"], "question": "q", "answer": "a"},  # 10: a list
            {"media": "clips/a.mp4", "question": "q", "answer": "a", "task": 7},  # 11: task not a string
        ],
    )
    with pytest.raises(ValueError) as info:
        FavorDataset(data)
    message = str(info.value)
    assert "10 bad line(s)" in message
    reported = [int(m) for m in re.findall(rf"{re.escape(str(data))}:(\d+):", message)]
    assert reported == list(range(2, 12))
    for expected in (
        "invalid JSON",
        "expected a JSON object, got list",
        "missing 'question'",
        "'question' is empty",
        "'answer' must be a string, got int",
        "unknown key(s) ['label']",
        "media file not found",
        "media is not a file",
        "'media' is a list",
        "'task' must be a string",
    ):
        assert expected in message, expected


def test_missing_or_empty_file(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        FavorDataset(tmp_path / "nope.jsonl")
    with pytest.raises(ValueError, match="is a directory"):
        FavorDataset(tmp_path)
    with pytest.raises(ValueError, match="holds no examples"):
        FavorDataset(_write(tmp_path / "empty.jsonl", ["", "  "]))


def test_trainer_takes_the_dataset(files, fresh_tiny, tmp_path):
    """transformers' Trainer with remove_unused_columns=False hands FavorDataset items to processor.collate
    unchanged (the extra 'task' key included) and trains."""
    pytest.importorskip("accelerate")
    from transformers import Trainer, TrainingArguments

    model, processor = fresh_tiny
    data = _write(
        files / "train.jsonl",
        [
            {"media": "clips/a.mp4", "question": "What colour?", "answer": "red", "task": "colour"},
            {"media": "clips/b.wav", "question": "What sound?", "answer": "a tone", "task": "sound"},
        ],
    )
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    args = TrainingArguments(
        output_dir=str(tmp_path / "run"),
        per_device_train_batch_size=2,
        max_steps=1,
        learning_rate=1e-3,
        report_to=[],
        remove_unused_columns=False,
        save_strategy="no",
        use_cpu=True,
    )
    trainer = Trainer(
        model=model, args=args, train_dataset=FavorDataset(data), data_collator=processor.collate
    )
    assert torch.isfinite(torch.tensor(trainer.train().training_loss))
    params = dict(model.named_parameters())
    assert any(not torch.equal(params[n], v) for n, v in before.items())


def test_encodings_a_bom_is_read_and_bad_bytes_name_the_line(files):
    row = json.dumps({"media": "clips/a.mp4", "question": "q", "answer": "a"})
    (files / "bom.jsonl").write_bytes(b"\xef\xbb\xbf" + row.encode() + b"\n")  # Windows editors write a BOM
    assert len(read_examples(files / "bom.jsonl")) == 1
    (files / "latin.jsonl").write_bytes(
        row.encode() + b"\n" + row.replace('"q"', '"caf\xe9"').encode("latin-1")
    )
    with pytest.raises(ValueError, match=r"latin.jsonl:2: not UTF-8 text"):
        read_examples(files / "latin.jsonl")
