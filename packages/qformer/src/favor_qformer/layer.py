"""One causal Q-Former layer (FAVOR, arXiv 2310.05863, Sec. 3.2; BLIP-2's Q-Former layer plus the causal module).

Order, as released: (1) block-causal attention over the window tokens (post-LN, no FFN); (2) query
self-attention; (3) cross-attention from the queries to (1)'s output (on layers ``i % cross_attention_every == 0``);
(4) query feed-forward. All blocks are post-LN residual, BERT style.

Shape legend: Nw windows, Q queries, H query width, L tokens per window, D token width.
"""

from __future__ import annotations

import torch
from torch import nn

from .attention import BlockCausalAttention, MultiHeadAttention
from .config import CausalQFormerConfig
from .masks import BlockCausalPattern
from .shared_frames import SharedFrameTokens


class FeedForward(nn.Module):
    """BERT feed-forward on the queries: ``LayerNorm(x + dropout(fc2(gelu(fc1(x)))))`` (exact erf GELU)."""

    def __init__(self, dim: int, hidden: int, *, dropout: float = 0.0, layer_norm_eps: float = 1e-12) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.norm = nn.LayerNorm(dim, eps=layer_norm_eps)
        self.dropout = dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(…, dim) -> (…, dim)."""
        h = self.fc2(nn.functional.gelu(self.fc1(x)))
        return self.norm(nn.functional.dropout(h, p=self.dropout, training=self.training) + x)


class CausalQFormerLayer(nn.Module):
    """Layer ``index`` of the causal Q-Former, built from ``config``."""

    def __init__(self, config: CausalQFormerConfig, index: int) -> None:
        super().__init__()
        self.index = index
        self.has_cross_attention = config.has_cross_attention(index)
        self.stack_causal = config.stack_causal
        common = {
            "dropout": config.dropout,
            "layer_norm_eps": config.layer_norm_eps,
            "backend": config.attention_backend,
        }
        self.causal_attention = (
            BlockCausalAttention(
                config.encoder_hidden_size,
                config.causal_num_heads,
                config.causal_direction,
                attends_padding=config.causal_attends_window_padding,
                **common,
            )
            # A layer whose causal output no cross-attention reads (here, or, when stacked, in a later layer) gets
            # no module: unused parameters would only break DDP and waste optimizer state.
            if config.causal and _causal_output_is_read(config, index)
            else None
        )
        self.self_attention = MultiHeadAttention(config.hidden_size, config.num_heads, **common)
        self.cross_attention = (
            MultiHeadAttention(config.hidden_size, config.num_heads, config.encoder_hidden_size, **common)
            if self.has_cross_attention
            else None
        )
        self.ffn = FeedForward(
            config.hidden_size,
            config.intermediate_size,
            dropout=config.dropout,
            layer_norm_eps=config.layer_norm_eps,
        )

    def forward(
        self,
        queries: torch.Tensor,
        tokens: torch.Tensor | SharedFrameTokens,
        causal_mask: torch.Tensor | None,
        cross_mask: torch.Tensor | None,
        key_lengths: list[int] | None,
        causal_pattern: BlockCausalPattern | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Run the layer.

        Args:
            queries: (Nw, Q, H) query stream.
            tokens: (Nw, L, D) window tokens this layer's causal module reads (``SharedFrameTokens`` for
                overlapping windows: each frame's projections computed once).
            causal_mask: Mask from ``BlockCausalAttention.build_mask`` ((1 or Nw), 1, L, L).
            cross_mask: (Nw, 1, 1, L) bool key-padding mask for cross-attention, ``None`` = no padding.
            key_lengths: Host ints, real tokens per window (for packing backends), ``None`` = no padding.
            causal_pattern: ``causal_mask`` as structure (``BlockCausalAttention.build_pattern``), for
                block-sparse backends; ``None`` = only the dense mask.

        Returns:
            The new queries (Nw, Q, H) and the causal module's output (Nw, L, D) (``None`` when not computed:
            no causal module, or nobody reads it).
        """
        causal_out = None
        if self.causal_attention is not None:
            assert causal_mask is not None  # built by the model whenever config.causal
            causal_out = self.causal_attention.forward_tokens(
                tokens, causal_mask, causal_pattern
            )  # (Nw, L, D)
        h = self.self_attention(queries)  # query self-attention is unmasked, as released
        if self.cross_attention is not None:
            context = tokens if causal_out is None else causal_out
            h = self.cross_attention(h, context, mask=cross_mask, key_lengths=key_lengths)
        return self.ffn(h), causal_out


def _causal_output_is_read(config: CausalQFormerConfig, index: int) -> bool:
    """Whether layer ``index``'s causal module feeds a cross-attention: its own, or (stacked) a later layer's."""
    later = range(index, config.num_layers) if config.stack_causal else (index,)
    return any(config.has_cross_attention(i) for i in later)
