"""Generation for `FavorModel`: media go to the first (prefill) step only; the AV placeholder is never generated.

Every `transformers.GenerationMixin` mode works (greedy, sampling, beam search, beam sampling, assisted decoding,
prompt lookup, continuing from a cache, ``inputs_embeds`` for text-only prompts): the media inputs are model kwargs
that `prepare_inputs_for_generation` passes to the forward that fills an empty KV cache and drops afterwards, when
the cache holds the AV tokens.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import GenerationConfig, GenerationMixin, PreTrainedModel

from .media_encoder import MEDIA_ARGUMENTS

__all__ = ["AV_INPUT_NAMES", "FavorGenerationMixin", "cache_length", "default_generation_config"]

#: Inputs that only the first (prefill) forward of `generate` needs; later steps reuse the KV cache.
AV_INPUT_NAMES = MEDIA_ARGUMENTS


def cache_length(cache: Any) -> int:
    """Tokens held by a KV cache (0 for none)."""
    if hasattr(cache, "get_seq_length"):
        return int(cache.get_seq_length())
    return 0


class FavorGenerationMixin(GenerationMixin):
    """`GenerationMixin` with the AV placeholder suppressed and the media inputs given to the prefill step only."""

    def generate(self, *args: Any, **kwargs: Any) -> Any:
        """`GenerationMixin.generate`, with the AV placeholder id suppressed: a generated placeholder would be read
        as a media slot on the next uncached step. See `transformers.GenerationMixin.generate` for arguments."""
        av = self.config.av_token_id
        output = self.get_output_embeddings()
        vocab = output.weight.shape[0] if output is not None else 0
        if av is not None and av < vocab:  # a placeholder past the vocabulary can't be generated anyway
            given = kwargs.get("suppress_tokens")
            if given is None:
                generation_config = kwargs.get("generation_config") or self.generation_config
                given = generation_config.suppress_tokens
            suppress = list(given or [])
            if av not in suppress:
                kwargs["suppress_tokens"] = [*suppress, av]
        return super().generate(*args, **kwargs)

    def prepare_inputs_for_generation(
        self,
        input_ids: torch.LongTensor,
        *args: Any,
        inputs_embeds: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> dict:
        """Media inputs go to every forward whose KV cache does not hold the prompt yet (the prefill, also an
        assistant model's first call, which transformers does not count as a first iteration), never after."""
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        model_inputs = super().prepare_inputs_for_generation(
            input_ids, *args, inputs_embeds=inputs_embeds, **kwargs
        )
        prefill = cache is None or cache_length(cache) == 0
        for name in AV_INPUT_NAMES:
            if prefill and kwargs.get(name) is not None:
                model_inputs[name] = kwargs[name]
            elif not prefill:
                model_inputs.pop(name, None)
        return model_inputs


def default_generation_config(
    text_config: Any, language_model: PreTrainedModel | None = None
) -> GenerationConfig:
    """The LLM's own generation config when one was given (a chat model's ``generation_config.json`` may list
    end-of-turn ids or sampling defaults that its config lacks), else one from ``text_config``'s ids."""
    import copy

    given = getattr(language_model, "generation_config", None)
    if isinstance(given, GenerationConfig):
        return copy.deepcopy(given)
    return GenerationConfig(
        bos_token_id=getattr(text_config, "bos_token_id", None),
        eos_token_id=getattr(text_config, "eos_token_id", None),
        pad_token_id=getattr(text_config, "pad_token_id", None),
    )
