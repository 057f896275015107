"""FavorModel under transformers' Trainer, with `FavorProcessor.collate` as the data collator."""

from __future__ import annotations

import math

import pytest
import torch

pytest.importorskip("accelerate")


def test_trainer_steps(fresh_tiny, media, tmp_path):
    from transformers import Trainer, TrainingArguments

    model, processor = fresh_tiny
    data = [
        {"text": "What?", "media": {"video": media["video"], "audio": media["short_audio"]}, "answer": "red"},
        {"text": "What do you hear?", "media": media["short_audio"], "answer": "a tone"},
    ] * 2
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    trained = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    args = TrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=2,
        max_steps=2,
        learning_rate=1e-3,
        report_to=[],
        remove_unused_columns=False,
        save_strategy="no",
        use_cpu=True,
        logging_steps=1,
    )
    result = Trainer(model=model, args=args, train_dataset=data, data_collator=processor.collate).train()
    assert math.isfinite(result.training_loss)
    params = dict(model.named_parameters())
    assert all(torch.equal(params[n], v) for n, v in frozen.items())
    assert any(not torch.equal(params[n], v) for n, v in trained.items())


def test_gradient_accumulation_averages_the_micro_batches(fresh_tiny, media, tmp_path):
    """FavorModel's loss is a mean over its batch (answer tokens + diversity term), so under gradient accumulation
    the Trainer must divide each micro-batch's loss by the accumulation steps: two micro-batches of one example
    report (and step on) the mean of their losses, not their sum."""
    from transformers import Trainer, TrainingArguments

    model, processor = fresh_tiny
    data = [
        {"text": "What?", "media": {"video": media["video"], "audio": media["short_audio"]}, "answer": "red"},
        {"text": "What do you hear?", "media": media["short_audio"], "answer": "a tone"},
    ]
    model.eval()  # the reference losses without dropout; the Trainer below trains with lr 0 and no dropout
    with torch.no_grad():
        losses = [float(model(**processor.collate([ex])).loss) for ex in data]
    model.causal_qformer.config.dropout = 0.0
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
        if isinstance(getattr(m, "dropout", None), float):  # the causal Q-Former's functional dropout
            m.dropout = 0.0
    args = TrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=1,
        gradient_accumulation_steps=2,
        max_steps=1,
        learning_rate=0.0,
        report_to=[],
        remove_unused_columns=False,
        save_strategy="no",
        use_cpu=True,
        dataloader_drop_last=False,
    )
    trainer = Trainer(model=model, args=args, train_dataset=data, data_collator=processor.collate)
    result = trainer.train()
    assert result.training_loss == pytest.approx(sum(losses) / 2, rel=1e-4)


def test_trainer_dropping_the_example_keys_is_a_clear_error(fresh_tiny, media, tmp_path):
    """Trainer's default remove_unused_columns=True strips 'text' / 'media' / 'answer' (not forward arguments)
    before the collator runs: the error says which setting to change."""
    from transformers import Trainer, TrainingArguments

    model, processor = fresh_tiny
    data = [{"text": "What?", "media": media["short_audio"], "answer": "red"}] * 2
    args = TrainingArguments(
        output_dir=str(tmp_path), per_device_train_batch_size=2, max_steps=1, report_to=[], use_cpu=True
    )
    with pytest.raises(ValueError, match="remove_unused_columns=False"):
        Trainer(model=model, args=args, train_dataset=data, data_collator=processor.collate).train()
