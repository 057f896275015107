"""The text side of `FavorProcessor`: questions (+ answers) and per-question AV token counts -> token tensors.

One path for every caller that needs FAVOR's text inputs: `FavorProcessor.__call__` (counts from the decoded
media) and `favor_llm.feature_cache` (counts from cached frozen features, no media decoded) both go through
`text_batch`, so the two cannot drift apart.

Each row is ``BOS + template(question)`` with the template's ``{media}`` slot holding the AV placeholder, which is
expanded into ``av_tokens[b]`` copies (like LLaVA's image token; `FavorModel` puts the AV tokens there); with
answers, ``answer + EOS`` follows and ``labels`` are -100 everywhere else (released: loss on the answer only).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

__all__ = ["build_prompt", "checked_answers", "checked_questions", "encode_prompt", "pad_text", "text_batch"]


def text_batch(
    tokenizer: Any,
    questions: Sequence[str],
    av_tokens: Sequence[int],
    answers: Any = None,
    *,
    av_token: str,
    av_token_id: int,
    templates: tuple[str, str] | None,
    padding_side: str = "left",
) -> dict[str, torch.Tensor]:
    """Token tensors for a batch of questions whose media expand into ``av_tokens`` placeholder tokens each.

    Args:
        tokenizer: the LLM tokenizer.
        questions: ``B`` questions (a single string: ``B == 1``).
        av_tokens: ``B`` placeholder counts (an int for ``B == 1``); 0 for a question without media (the
            text-only template).
        answers: ``B`` answers (a single string for ``B == 1``) for training, or ``None``.
        av_token, av_token_id: the placeholder and its id.
        templates: ``(prompt_template, text_only_template)``, or ``None`` when each question holds its own
            placeholder (one with media, none without).
        padding_side: ``"left"`` (what generation needs) or ``"right"``.

    Returns:
        ``input_ids``, ``attention_mask`` ``(B, Lt)``, and ``labels`` ``(B, Lt)`` with answers.
    """
    # one question (and its count) as `FavorProcessor.__call__` takes it: a string is not a batch of characters
    questions = [questions] if isinstance(questions, str) else list(questions)
    if not questions:
        raise ValueError("text: the batch is empty")
    if isinstance(av_tokens, int) and not isinstance(av_tokens, bool):
        av_tokens = [av_tokens]
    if not isinstance(av_tokens, Sequence):
        raise ValueError(f"av_tokens: expected an int or a list of ints, got {type(av_tokens).__name__}")
    counts = list(av_tokens)
    if len(counts) != len(questions):
        raise ValueError(f"av_tokens: expected one count per question ({len(questions)}), got {len(counts)}")
    for i, count in enumerate(counts):
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ValueError(f"av_tokens[{i}]: expected an int >= 0 (0: no media), got {count!r}")
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side: expected 'left' or 'right', got {padding_side!r}")
    answer_list = checked_answers(answers, len(questions))
    escape = checked_questions(questions, tokenizer, av_token, templates)
    rows, label_rows = [], []
    for i, (question, count) in enumerate(zip(questions, counts)):
        prompt = build_prompt(question, count > 0, av_token, templates, i)
        ids = encode_prompt(tokenizer, prompt, av_token, av_token_id, count, escape)
        labels = [-100] * len(ids)
        if answer_list is not None:
            # control-token text in answers stays text (issue 10); EOS ends every answer, as released
            answer_ids = tokenizer(answer_list[i], add_special_tokens=False, split_special_tokens=True)[
                "input_ids"
            ]
            answer_ids = [*answer_ids, tokenizer.eos_token_id]
            ids, labels = ids + answer_ids, labels + answer_ids
        rows.append(ids)
        label_rows.append(labels)
    return pad_text(
        rows, label_rows if answer_list is not None else None, tokenizer.pad_token_id, padding_side
    )


def pad_text(
    rows: list[list[int]], label_rows: list[list[int]] | None, pad_id: int, side: str
) -> dict[str, torch.Tensor]:
    """Token rows -> ``input_ids``, ``attention_mask`` (and ``labels``, -100 on padding) ``(B, max length)``."""
    length = max(len(r) for r in rows)
    ids = torch.full((len(rows), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), length), dtype=torch.long)
    labels = torch.full((len(rows), length), -100, dtype=torch.long)
    for b, r in enumerate(rows):
        sl = slice(length - len(r), length) if side == "left" else slice(0, len(r))
        ids[b, sl] = torch.tensor(r, dtype=torch.long)
        mask[b, sl] = 1
        if label_rows is not None:
            labels[b, sl] = torch.tensor(label_rows[b], dtype=torch.long)
    out = {"input_ids": ids, "attention_mask": mask}
    if label_rows is not None:
        out["labels"] = labels
    return out


def build_prompt(
    question: str, has_media: bool, av_token: str, templates: tuple[str, str] | None, index: int = 0
) -> str:
    """A question as prompt text with at most one AV placeholder (before expansion).

    Args:
        question: the user's text.
        has_media: whether a media item comes with it.
        av_token: the placeholder.
        templates: ``(prompt_template, text_only_template)`` to wrap the question in, or ``None`` when the question
            already holds its placeholder (exactly one with media, none without).
        index: the question's position in the batch (for errors).
    """
    if not isinstance(question, str):
        raise ValueError(f"text[{index}]: expected a string, got {type(question).__name__}")
    count = question.count(av_token)
    if templates is not None:
        if count:
            raise ValueError(
                f"text[{index}]: contains the AV placeholder {av_token!r} {count} time(s), but the prompt "
                "template already places it; remove it from the question or pass apply_template=False"
            )
        with_media, text_only = templates
        if has_media:
            return with_media.format(media=av_token, question=question)
        return text_only.format(question=question)
    expected = 1 if has_media else 0
    if count != expected:
        raise ValueError(
            f"text[{index}]: expected exactly {expected} AV placeholder {av_token!r} "
            f"({'one media item' if has_media else 'no media'}), got {count} in {question!r}"
        )
    return question


def checked_answers(answers: Any, count: int) -> list[str] | None:
    """``answers`` as a list of ``count`` non-empty strings (as `favor_llm.dataset` checks its files), or ``None``."""
    if answers is None:
        return None
    if not isinstance(answers, (str, list, tuple)):
        raise ValueError(f"answers: expected a string or a list of strings, got {type(answers).__name__}")
    answer_list = [answers] if isinstance(answers, str) else list(answers)
    if len(answer_list) != count:
        raise ValueError(f"answers: expected one per question ({count}), got {len(answer_list)}")
    for i, answer in enumerate(answer_list):
        if not isinstance(answer, str) or not answer.strip():
            raise ValueError(f"answers[{i}]: expected a non-empty string, got {answer!r}")
    return answer_list


def checked_questions(
    texts: list[Any], tokenizer: Any, av_token: str, templates: tuple[str, ...] | None
) -> bool:
    """Refuse empty templated questions; return whether control-token text typed in them is kept as text (issue
    10: "</s>" became a real end-of-sequence token). A question is tokenised with its template
    (``split_special_tokens``), so where the template itself holds control tokens, questions holding such text are
    refused. ``templates=None`` (raw prompts, ``apply_template=False``): nothing checked or escaped."""
    if templates is None:
        return False
    specials = [t for t in tokenizer.all_special_tokens if t and t != av_token]
    held = [t for t in specials if any(t in template for template in templates)]
    for i, question in enumerate(texts):
        if not isinstance(question, str):
            continue  # build_prompt names the type
        if not question.strip():
            raise ValueError(f"text[{i}]: the question is empty")
        typed = [t for t in specials if t in question]
        if typed and held:
            raise ValueError(
                f"text[{i}]: contains control-token text {typed} and the prompt template holds control tokens "
                f"{held}, so it cannot be kept as text; remove it from the question"
            )
    return not held


def encode_prompt(
    tokenizer: Any, prompt: str, av_token: str, av_token_id: int, num_av: int, escape: bool = False
) -> list[int]:
    """BOS + prompt tokens, the placeholder expanded to ``num_av`` copies (tokenised piecewise); ``escape``:
    control-token text in the pieces stays text (``split_special_tokens``)."""
    before, sep, after = prompt.partition(av_token)
    ids = [] if tokenizer.bos_token_id is None else [tokenizer.bos_token_id]
    kwargs = {"add_special_tokens": False, "split_special_tokens": escape}
    ids += tokenizer(before, **kwargs)["input_ids"] if before else []
    if sep:
        ids += [av_token_id] * num_av
        ids += tokenizer(after, **kwargs)["input_ids"] if after else []
    return ids
