"""Outputs of `FavorModel` (transformers `ModelOutput`s: attribute, key and index access; ``None`` fields are left
out of `to_tuple`, so ``outputs[0]`` is the loss with labels and the logits without)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from transformers.utils import ModelOutput

__all__ = ["FavorAVOutput", "FavorOutput"]


@dataclass
class FavorOutput(ModelOutput):
    """Output of `FavorModel.forward` (``return_dict=False``: the same fields as a tuple, ``None`` ones left out).

    Attributes:
        loss: ``lm_loss + diversity_loss_weight * diversity_loss``; only with ``labels`` (or ``shift_labels``).
        logits: ``(B, Lt, V)``.
        cache: the LLM's KV cache (``use_cache=True``).
        hidden_states: the LLM's hidden states (``output_hidden_states=True``): its input embeddings with the AV
            tokens in place, then each layer's output, each ``(B, Lt, E)``.
        attentions: the LLM's attention weights (``output_attentions=True``).
        lm_loss: the LLM's causal-LM loss over the answer tokens (with labels).
        diversity_loss: the Q-Former diversity loss over real windows (with media; 0 with labels but no media).
        av_tokens: ``(B, W, Q, H)`` causal Q-Former tokens (before the LLM projection), ``None`` without media.
        window_mask: ``(B, W)`` real windows.
    """

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    cache: Any = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None
    lm_loss: torch.Tensor | None = None
    diversity_loss: torch.Tensor | None = None
    av_tokens: torch.Tensor | None = None
    window_mask: torch.Tensor | None = None


@dataclass
class FavorAVOutput(ModelOutput):
    """Output of `FavorModel.get_av_features` (like BLIP-2's / LLaVA's ``get_image_features``).

    Attributes:
        av_embeds: ``(B, W, Q, E)`` AV tokens projected into the LLM's embedding space (what replaces the
            placeholders; padding windows included, see ``window_mask``).
        window_mask: ``(B, W)`` real windows.
        av_tokens: ``(B, W, Q, H)`` the causal Q-Former's tokens.
        diversity_loss: the Q-Former diversity loss over real windows (scalar).
    """

    av_embeds: torch.Tensor | None = None
    window_mask: torch.Tensor | None = None
    av_tokens: torch.Tensor | None = None
    diversity_loss: torch.Tensor | None = None
