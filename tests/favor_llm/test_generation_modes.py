"""Every `GenerationMixin` mode with media: greedy, sampling, beam search, beam sampling, assisted decoding (the
model as its own assistant), prompt lookup, continuing from a cache, and ``inputs_embeds`` for text-only prompts.
Modes that must agree with greedy decoding are checked against it token for token."""

from __future__ import annotations

import copy

import pytest
import torch


@pytest.fixture(scope="module")
def prompt(tiny, media):
    _, processor = tiny
    return processor(text=["What is happening?"], media=[{"video": media["video"], "audio": media["audio"]}])


def _generate(model, prompt, **kwargs):
    with torch.no_grad():
        return model.generate(**prompt, max_new_tokens=6, min_new_tokens=6, **kwargs)


@pytest.fixture(scope="module")
def greedy(tiny, prompt):
    model, _ = tiny
    return _generate(model, prompt, do_sample=False)


def _check_continuation(model, prompt, out):
    assert out.shape[1] == prompt["input_ids"].shape[1] + 6
    assert torch.equal(out[:, : prompt["input_ids"].shape[1]], prompt["input_ids"])
    assert not (out[:, prompt["input_ids"].shape[1] :] == model.config.av_token_id).any()


def test_greedy_reads_the_media(tiny, prompt, greedy, media):
    model, processor = tiny
    _check_continuation(model, prompt, greedy)
    # other media, same question: the LLM's input differs exactly at the AV placeholders
    other = processor(
        text=["What is happening?"], media=[{"video": media["long_video"][:6], "audio": media["audio"] * 3}]
    )
    with torch.no_grad():
        a = model(**prompt, output_hidden_states=True).hidden_states[0]
        b = model(**other, output_hidden_states=True).hidden_states[0]
    is_av = prompt["input_ids"] == model.config.av_token_id
    assert torch.equal(a[~is_av], b[~is_av]) and (a[is_av] - b[is_av]).abs().max() > 1e-5


def test_sampling_is_reproducible_with_a_seed(tiny, prompt):
    model, _ = tiny
    runs = []
    for _ in range(2):
        torch.manual_seed(7)
        runs.append(_generate(model, prompt, do_sample=True, temperature=1.5, top_k=0))
    assert torch.equal(runs[0], runs[1])
    _check_continuation(model, prompt, runs[0])


@pytest.mark.parametrize("do_sample", [False, True], ids=["beam_search", "beam_sampling"])
def test_beam_search_and_beam_sampling(tiny, prompt, do_sample):
    model, _ = tiny
    torch.manual_seed(0)
    out = _generate(model, prompt, num_beams=3, do_sample=do_sample, num_return_sequences=2)
    assert out.shape[0] == 2
    for row in out:
        _check_continuation(model, prompt, row[None])


def test_beam_search_with_one_beam_is_greedy(tiny, prompt, greedy):
    model, _ = tiny
    assert torch.equal(_generate(model, prompt, num_beams=1, do_sample=False), greedy)


def test_assisted_decoding_with_itself_as_assistant_is_greedy(tiny, prompt, greedy):
    model, _ = tiny
    assert torch.equal(_generate(model, prompt, assistant_model=model, do_sample=False), greedy)


def test_prompt_lookup_decoding_is_greedy(tiny, prompt, greedy):
    model, _ = tiny
    assert torch.equal(_generate(model, prompt, prompt_lookup_num_tokens=2, do_sample=False), greedy)


def test_continuing_from_a_cache(tiny, prompt, greedy):
    model, _ = tiny
    with torch.no_grad():
        first = model.generate(
            **prompt, max_new_tokens=3, min_new_tokens=3, do_sample=False, return_dict_in_generate=True
        )
    cache = copy.deepcopy(first.cache)
    mask = torch.ones_like(first.sequences)
    with torch.no_grad():
        # the media are in the cache: the continuation needs only the tokens
        rest = model.generate(
            input_ids=first.sequences,
            attention_mask=mask,
            cache=cache,
            max_new_tokens=3,
            min_new_tokens=3,
            do_sample=False,
        )
    assert torch.equal(rest, greedy)


def test_inputs_embeds_for_a_text_only_prompt(tiny):
    model, processor = tiny
    text = processor(text=["What sound do you hear?"])
    embeds = model.get_input_embeddings()(text["input_ids"])
    with torch.no_grad():
        by_ids = model.generate(**text, max_new_tokens=4, min_new_tokens=4, do_sample=False)
        by_embeds = model.generate(
            inputs_embeds=embeds,
            attention_mask=text["attention_mask"],
            max_new_tokens=4,
            min_new_tokens=4,
            do_sample=False,
        )
    # generate(inputs_embeds=...) returns the new tokens only, as for every decoder-only model
    assert torch.equal(by_embeds, by_ids[:, text["input_ids"].shape[1] :])


def test_static_cache_gives_the_greedy_tokens(tiny, prompt, greedy):
    model, _ = tiny
    assert torch.equal(_generate(model, prompt, do_sample=False, cache_implementation="static"), greedy)


def test_generate_dict_outputs(fresh_tiny, prompt, greedy):
    """transformers' generation tests check these shapes: one entry per new token; the prefill step attends over
    the whole prompt, every later step over one new query."""
    model, _ = fresh_tiny
    model.set_attn_implementation("eager")
    with torch.no_grad():
        out = model.generate(
            **prompt,
            max_new_tokens=6,
            min_new_tokens=6,
            do_sample=False,
            return_dict_in_generate=True,
            output_scores=True,
            output_logits=True,
            output_attentions=True,
            output_hidden_states=True,
        )
    length, layers = prompt["input_ids"].shape[1], model.config.text_config.num_hidden_layers
    heads = model.config.text_config.num_attention_heads
    assert torch.equal(out.sequences, greedy)
    assert len(out.scores) == len(out.logits) == len(out.attentions) == len(out.hidden_states) == 6
    assert len(out.attentions[0]) == layers and len(out.hidden_states[0]) == layers + 1
    assert out.attentions[0][0].shape == (1, heads, length, length)
    assert out.attentions[1][0].shape == (1, heads, 1, length + 1)
    assert out.hidden_states[1][0].shape == (1, 1, model.config.text_config.hidden_size)
    assert not (out.scores[0].argmax(-1) == model.config.av_token_id).any()
