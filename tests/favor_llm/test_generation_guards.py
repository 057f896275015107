"""Guards around generation: the AV placeholder is never generated, prompts past the LLM's context warn, and a
synchroniser mode the model cannot batch is refused at config time."""

from __future__ import annotations

import logging

import pytest
import torch

from favor_llm import FavorConfig
from favor_llm.testing import tiny_config


def _steer_to_placeholder(model, inputs) -> int:
    """Make the placeholder the LM head's clear favourite at the first generated position; returns its id."""
    av = model.config.av_token_id
    with torch.no_grad():
        out = model(**inputs, output_hidden_states=True)
        h = out.hidden_states[-1][0, -1]  # the final (normed) hidden state that the LM head reads
        model.get_output_embeddings().weight[av] = 1000 * h / h.pow(2).sum()
        assert int(model(**inputs).logits[0, -1].argmax()) == av  # the steering works
    return av


@pytest.mark.parametrize("use_cache", [True, False])
def test_the_placeholder_is_never_generated(fresh_tiny, media, use_cache):
    model, processor = fresh_tiny
    model.eval()
    inputs = processor(text=["What happens?"], media=[media["video"]])
    av = _steer_to_placeholder(model, inputs)
    with torch.no_grad():
        generated = model.generate(**inputs, max_new_tokens=4, do_sample=False, use_cache=use_cache)
    new = generated[0, inputs["input_ids"].shape[1] :]
    assert av not in new.tolist()
    # What the user asked to suppress stays suppressed too.
    with torch.no_grad():
        first = int(new[0])
        again = model.generate(**inputs, max_new_tokens=1, do_sample=False, suppress_tokens=[first])
    assert int(again[0, -1]) not in (first, av)


def test_a_prompt_past_the_llm_context_warns_once(fresh_tiny, media, caplog):
    model, processor = fresh_tiny
    inputs = processor(text=["What happens?"], media=[media["long_video"]])
    length = inputs["input_ids"].shape[1]
    model.config.text_config.max_position_embeddings = length - 1
    with caplog.at_level(logging.WARNING, logger="favor_llm"), torch.no_grad():
        model(**inputs)
        model(**inputs)
    lines = [r.getMessage() for r in caplog.records if r.name == "favor_llm"]
    assert len(lines) == 1, lines
    assert f"{length} tokens" in lines[0] and f"max_position_embeddings={length - 1}" in lines[0]


def test_a_prompt_within_the_context_does_not_warn(tiny, media, caplog):
    model, processor = tiny
    inputs = processor(text=["What happens?"], media=[media["video"]])
    with caplog.at_level(logging.WARNING, logger="favor_llm"), torch.no_grad():
        model(**inputs)
    assert not [r for r in caplog.records if r.name == "favor_llm"]


def test_released_sync_mode_is_refused_with_the_reason():
    with pytest.raises(ValueError, match=r"sync_mode: expected 'time', got 'released'"):
        tiny_config(sync_mode="released")
    assert FavorConfig().sync_mode == "time"
