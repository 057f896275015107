"""``favor demo`` with a reduced step count: real clip, real decoding, real training steps, a saved model."""

from __future__ import annotations

import pytest
import torch

from favor_llm import FavorModel, FavorProcessor
from favor_llm.cli import main
from favor_llm.demo import DEMO_ANSWER, DEMO_QUESTION, run_demo
from favor_llm.testing import tiny_model_and_processor


def test_demo_trains_and_answers(tmp_path):
    lines: list[str] = []
    result = run_demo(steps=12, seed=0, echo=lines.append, progress=False, out=tmp_path / "demo")
    text = "\n".join(lines)

    # 4 s clip at 2 fps = 8 frames; tiny windows of 4 frames -> 2 windows x 4 queries = 8 AV tokens
    assert (result.frames, result.windows, result.av_tokens) == (8, 2, 8)
    model, _ = tiny_model_and_processor(seed=0)
    assert result.trainable == sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert result.frozen == sum(p.numel() for p in model.parameters() if not p.requires_grad)
    assert len(result.losses) == len(result.diversity_losses) == 12
    assert result.losses[-1] < result.losses[0] - 0.2, result.losses  # the answer's cross-entropy falls
    assert "TINY model with RANDOM weights" in text
    assert f"Q: {DEMO_QUESTION}" in text and f"A: {result.answer}" in text
    assert f"{result.frames} frames, {result.windows} windows, {result.av_tokens} AV tokens" in text

    # what it saved is a loadable checkpoint that still gives the demo's answer
    reloaded = FavorModel.from_pretrained(result.saved).eval()
    processor = FavorProcessor.from_pretrained(result.saved)
    inputs = processor(text=DEMO_QUESTION, media=str(result.clip))
    budget = len(processor.tokenizer(DEMO_ANSWER, add_special_tokens=False)["input_ids"]) + 5  # as the demo
    with torch.no_grad():
        generated = reloaded.generate(**inputs, max_new_tokens=budget, do_sample=False)
    assert processor.decode_answers(generated, inputs)[0] == result.answer


def test_demo_command_and_bad_steps(tmp_path, capsys):
    assert main(["demo", "--steps", "2", "--out", str(tmp_path / "d")]) == 0
    out = capsys.readouterr().out
    assert "[5/5]" in out and "summary" in out
    assert main(["demo", "--steps", "0"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.strip().startswith("favor demo: error: argument --steps")
    with pytest.raises(ValueError, match="steps: expected an int >= 1"):
        run_demo(steps=0)


def test_demo_without_out_leaves_nothing_behind():
    result = run_demo(steps=1, echo=lambda line: None, progress=False)
    assert result.saved is None and result.clip is not None
    assert not result.clip.parent.exists()  # the scratch directory with the clip is gone
