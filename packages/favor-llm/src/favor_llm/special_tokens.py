"""The special tokens every FAVOR tokenizer built here carries, and the wrapper that declares them to transformers.

The tiny BPE tokenizer (`favor_llm.testing`), AVEB-mini's word-level tokenizer (`favor_llm.aveb`) and the training
recipes' word tokenizer (`favor_llm.recipes`) all put ``<unk> <s> </s> <pad> <AV>`` first (ids 0..4) and hand the
`tokenizers.Tokenizer` to transformers the same way.
"""

from __future__ import annotations

from typing import Any

from transformers import PreTrainedTokenizerFast

__all__ = ["SPECIAL_TOKENS", "as_favor_tokenizer"]

#: Special tokens, in id order: unknown, begin / end of sequence, padding, the AV placeholder.
SPECIAL_TOKENS = ("<unk>", "<s>", "</s>", "<pad>", "<AV>")


def as_favor_tokenizer(tokenizer: Any) -> PreTrainedTokenizerFast:
    """Wrap a `tokenizers.Tokenizer` that holds `SPECIAL_TOKENS` as a transformers tokenizer with those roles."""
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        additional_special_tokens=["<AV>"],
    )
