"""The word-level tokenizer of AVEB-mini, built with the ``tokenizers`` library from the benchmark's own texts.

The vocabulary is every piece of the prompt templates (`favor_llm.configuration`'s released prompt), every
question of `TASKS`, every answer, the digits, and the specials ``<unk> <s> </s> <pad> <AV>``: a few dozen words, so
the tiny LLM's embedding and output layers stay small and every answer is a single token. Text is lowercased and
split on whitespace and punctuation (``tokenizers``' ``Whitespace`` pre-tokenizer: ``\\w+|[^\\w\\s]+``); decoding
joins words with spaces.
"""

from __future__ import annotations

from transformers import PreTrainedTokenizerFast

from ..configuration import RELEASED_PROMPT_TEMPLATE, RELEASED_TEXT_ONLY_TEMPLATE
from ..special_tokens import SPECIAL_TOKENS, as_favor_tokenizer
from .tasks import TASKS

__all__ = ["SPECIAL_TOKENS", "corpus", "tokenizer"]


def corpus() -> list[str]:
    """Every text the benchmark feeds the tokenizer: the templates' pieces, questions, answers, digits.

    `FavorProcessor` tokenises the prompt on each side of the AV placeholder separately, so the template is split at
    its ``{media}`` slot here too (``"<Img>"`` and ``"</Img> ..."``, never ``"<Img></Img>"``).
    """
    before, after = RELEASED_PROMPT_TEMPLATE.split("{media}")
    texts = [
        before.format(question=""),
        after.format(question=""),
        RELEASED_TEXT_ONLY_TEMPLATE.format(question=""),
        " ".join(str(d) for d in range(10)),
    ]
    for task in TASKS:
        texts += [*task.questions, *task.answers]
    return texts


def tokenizer() -> PreTrainedTokenizerFast:
    """The AVEB-mini word-level tokenizer (deterministic: specials first, then the words sorted).

    Returns:
        a `PreTrainedTokenizerFast` with ``bos_token="<s>"``, ``eos_token="</s>"``, ``pad_token="<pad>"``,
        ``unk_token="<unk>"`` and ``<AV>`` as an additional special token, as `favor_llm.testing.tiny_tokenizer`
        (so ``tiny_config(tokenizer)`` / ``tiny_processor(config, tokenizer)`` take it).
    """
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

    normalizer = normalizers.Lowercase()
    pre_tokenizer = pre_tokenizers.Whitespace()
    words = sorted(
        {
            piece
            for text in corpus()
            for piece, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text))
        }
    )
    vocab = {token: i for i, token in enumerate((*SPECIAL_TOKENS, *words))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.normalizer = normalizer
    tok.pre_tokenizer = pre_tokenizer
    tok.add_special_tokens(list(SPECIAL_TOKENS))
    return as_favor_tokenizer(tok)
