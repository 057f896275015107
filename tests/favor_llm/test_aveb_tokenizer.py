"""The AVEB-mini word-level tokenizer: the whole benchmark (prompts as FavorProcessor builds them, questions, answers)
encodes without <unk>, answers are one token, and it drops into the tiny FAVOR like testing.tiny_tokenizer."""

from __future__ import annotations

import numpy as np
import torch
from transformers import AutoTokenizer

from favor_llm.aveb import TASKS, tokenizer
from favor_llm.aveb.scene import SLOT
from favor_llm.aveb.tasks import DURATION
from favor_llm.aveb.vocabulary import SPECIAL_TOKENS
from favor_llm.modeling import FavorModel
from favor_llm.testing import tiny_config, tiny_processor


def test_specials_and_determinism():
    tok = tokenizer()
    assert tok.convert_ids_to_tokens(list(range(len(SPECIAL_TOKENS)))) == list(SPECIAL_TOKENS)
    assert (tok.unk_token, tok.bos_token, tok.eos_token, tok.pad_token) == ("<unk>", "<s>", "</s>", "<pad>")
    assert tok.get_vocab() == tokenizer().get_vocab()
    assert len(tok) < 100


def test_every_question_and_answer_is_known():
    tok = tokenizer()
    rng = np.random.default_rng(0)
    for task in TASKS:
        for answer in task.answers:
            ids = tok(answer, add_special_tokens=False)["input_ids"]
            assert len(ids) == 1 and ids[0] != tok.unk_token_id, answer
            assert tok.decode(ids) == answer
            # the questions the sampler actually asks are the declared ones
            _, question, _ = task.sample(rng, answer, round(DURATION / SLOT))
            assert question in task.questions
        for question in task.questions:
            assert tok.unk_token_id not in tok(question, add_special_tokens=False)["input_ids"], question
    # An unknown word does map to <unk> (the check above can fail).
    assert tok("zebra", add_special_tokens=False)["input_ids"] == [tok.unk_token_id]


def test_tiny_favor_prompts_have_no_unk_and_answers_round_trip(tmp_path):
    """FavorProcessor with this tokenizer: the full prompt (template pieces around the AV tokens) has no <unk>, the
    labels are the answer + EOS, and a saved tokenizer reloads with the same ids."""
    tok = tokenizer()
    config = tiny_config(tok)
    processor = tiny_processor(config, tok)
    model = FavorModel(config).eval()
    questions = [q for t in TASKS for q in t.questions]
    answers = [t.answers[0] for t in TASKS for _ in t.questions]
    video = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    batch = processor(text=questions, media=[video] * len(questions), answers=answers)
    assert tok.unk_token_id not in batch["input_ids"][batch["attention_mask"].bool()].tolist()
    for row, answer in zip(batch["labels"], answers):
        assert row[row != -100].tolist() == [tok.convert_tokens_to_ids(answer), tok.eos_token_id]
    text_only = processor(text=questions[0])
    assert tok.unk_token_id not in text_only["input_ids"].tolist()[0]
    with torch.no_grad():
        assert torch.isfinite(model(**batch).loss)
    tok.save_pretrained(tmp_path)
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    assert reloaded(questions)["input_ids"] == tok(questions)["input_ids"]
