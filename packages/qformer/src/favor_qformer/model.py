"""The causal window Q-Former of FAVOR (Sun et al., 2023, arXiv 2310.05863, Sec. 3.2).

A video's synchronised audio-visual token stream is cut into windows of frames (``windows.py``); each window is
LayerNorm-ed, given a learned position embedding that restarts in every window, and summarised by a BLIP-2 style
Q-Former into ``num_queries`` tokens. Every layer first runs a block-causal attention over the window's tokens
(``attention.BlockCausalAttention``) and cross-attends to its output.

Shape legend: B videos, T frames, N tokens per frame, D feature width, W windows per video (padded), Nw real
windows in the batch, F frames per window, L = F * N tokens per window, Q queries, H query width.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from einops import rearrange, repeat
from torch import nn
from torch.utils.checkpoint import checkpoint

from ._validation import validate_inputs
from .checkpoints import CausalQFormerCheckpointMixin
from .config import CausalQFormerConfig
from .layer import CausalQFormerLayer
from .masks import BlockCausalPattern
from .shared_frames import SharedFrameTokens, materialise, share_frames
from .windows import (
    WindowPlan,
    gather_windows,
    plan_windows,
    scatter_windows,
    window_frame_ranges,
    window_mask,
)


@dataclass
class CausalQFormerOutput:
    """What [`CausalQFormer`][favor_qformer.CausalQFormer] returns.

    Attributes:
        tokens: (B, W, Q, H) query tokens per window; zero on padding windows.
        window_mask: (B, W) bool, True on real windows.
        window_frames: (B, W, 2) long, ``[start, end)`` real frames of each window; ``[0, 0)`` on padding windows.
        hidden_states: With ``output_hidden_states``: ``num_layers + 1`` tensors (B, W, Q, H), the query stream
            entering layer 0 (query embeddings) and after each layer.
        encoder_hidden_states: With ``output_hidden_states``: (B, W, L, D), the window tokens after the input
            LayerNorm and position embedding.
        causal_hidden_states: With ``output_hidden_states``: per layer (B, W, L, D), the causal module's output
            (``None`` for a layer that did not compute it).
    """

    tokens: torch.Tensor
    window_mask: torch.Tensor
    window_frames: torch.Tensor
    hidden_states: tuple[torch.Tensor, ...] | None = None
    encoder_hidden_states: torch.Tensor | None = None
    causal_hidden_states: tuple[torch.Tensor | None, ...] | None = None


class CausalQFormer(nn.Module, CausalQFormerCheckpointMixin):
    """Block-causal window Q-Former.

    Args:
        config: Sizes and switches; the defaults are the released FAVOR model.

    Example:
        >>> model = CausalQFormer(CausalQFormerConfig(hidden_size=64, num_heads=4, intermediate_size=128,
        ...     encoder_hidden_size=96, causal_num_heads=4, tokens_per_frame=8)).eval()
        >>> out = model(torch.randn(2, 23, 8, 96))  # 23 frames -> 3 windows of 10
        >>> out.tokens.shape
        torch.Size([2, 3, 32, 64])
    """

    def __init__(self, config: CausalQFormerConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or CausalQFormerConfig()
        self.query_tokens = nn.Parameter(torch.randn(1, config.num_queries, config.hidden_size) * 0.02)
        self.query_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.input_layernorm = (
            nn.LayerNorm(config.encoder_hidden_size, eps=config.input_layer_norm_eps)
            if config.input_layernorm
            else None
        )
        self.position_embedding = (
            nn.Embedding(config.max_position_embeddings, config.encoder_hidden_size)
            if config.position_embedding == "window"
            else None
        )
        self.layers = nn.ModuleList(CausalQFormerLayer(config, i) for i in range(config.num_layers))
        self._init_weights()

    def _init_weights(self) -> None:
        """BERT initialisation: normal(0, 0.02) weights, zero biases, unit LayerNorms."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, std=0.02)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    @property
    def dtype(self) -> torch.dtype:
        """The parameters' dtype (inputs are cast to it)."""
        return self.query_tokens.dtype

    @property
    def device(self) -> torch.device:
        """The parameters' device."""
        return self.query_tokens.device

    def gradient_checkpointing_enable(self) -> None:
        """Recompute each layer during backward (saves activation memory when training)."""
        self.config.gradient_checkpointing = True

    def gradient_checkpointing_disable(self) -> None:
        """Undo ``gradient_checkpointing_enable``."""
        self.config.gradient_checkpointing = False

    def set_attention_backend(self, backend: str) -> None:
        """Switch every attention block to ``backend`` (``"auto"``, ``"eager"``, ``"sdpa"``, ``"xformers"``,
        ``"flex"``)."""
        CausalQFormerConfig(**{**self.config.to_dict(), "attention_backend": backend})  # validates the name
        self.config.attention_backend = backend
        for module in self.modules():
            if hasattr(module, "backend"):
                module.backend = backend

    def embed_windows(self, windows: torch.Tensor) -> torch.Tensor:
        """Input stage: ``windows`` (Nw, F, N, D) -> (Nw, L, D) after the input LayerNorm and position embedding.

        Padding frames enter as zeros, so (as released) they leave as the LayerNorm bias plus the position embedding.
        """
        x = rearrange(windows, "w f n d -> w (f n) d")
        if self.input_layernorm is not None:
            x = self.input_layernorm(x)
        if self.position_embedding is not None:
            x = x + self.position_embedding.weight[: x.shape[1]]  # positions 0..L-1, restarting per window
        return x

    def query_embeddings(self, num_windows: int) -> torch.Tensor:
        """The query stream entering layer 0: LayerNorm(query tokens), (Nw, Q, H), as BLIP-2's embeddings."""
        q = self.query_layernorm(self.query_tokens)
        q = nn.functional.dropout(q, p=self.config.dropout, training=self.training)
        return q.expand(
            num_windows, -1, -1
        ).contiguous()  # a real batch: Linear then takes the fused addmm path

    def _window_tokens(
        self, features: torch.Tensor, lengths: list[int], plan: WindowPlan
    ) -> tuple[torch.Tensor | SharedFrameTokens, torch.Tensor]:
        """What the layers attend to, for every real window: ``features`` (B, T, N, D) -> (Nw, L, D) tokens after
        the input LayerNorm and position embedding, and ``frame_valid`` (Nw, F) bool, True on real frames."""
        config = self.config
        x: torch.Tensor | SharedFrameTokens
        if config.window_stride < config.window_size:
            # Overlapping windows: frames are normalised and projected once, not once per window holding them.
            frame_valid = (
                torch.arange(config.window_size, device=features.device)[None, :] < plan.length[:, None]
            )
            position = (
                None
                if self.position_embedding is None
                else self.position_embedding.weight[: config.tokens_per_window]
            )
            x = share_frames(
                features, lengths, plan.start, plan.batch_index, frame_valid, self.input_layernorm, position
            )
            if any(layer.causal_attention is not None for layer in self.layers):
                x = x.with_tokens()  # the causal modules' residual, built once for all layers
        else:
            windows, frame_valid = gather_windows(
                features, plan, config.window_size, config.window_stride
            )  # (Nw, F, N, D), (Nw, F)
            x = self.embed_windows(windows)  # (Nw, L, D)
        return x, frame_valid

    def _attention_masks(
        self, plan: WindowPlan, frame_valid: torch.Tensor
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, list[int] | None, BlockCausalPattern | None]:
        """What every layer is called with besides its inputs: the causal module's mask (1 or Nw, 1, L, L) and
        block pattern, the cross-attention mask (Nw, 1, 1, L) and key lengths (host ints). The padding ones are
        ``None`` when every window is full, the causal ones when the model has no causal module."""
        config = self.config
        n = config.tokens_per_frame
        partial = any(length < config.window_size for length in plan.real_frames)
        cross_mask = repeat(frame_valid, "w f -> w 1 1 (f n)", n=n) if partial else None  # (Nw, 1, 1, L)
        key_lengths = [length * n for length in plan.real_frames] if partial else None
        causal_mask = causal_pattern = None
        first = self.layers[0] if len(self.layers) else None
        if first is not None and first.causal_attention is not None:
            causal_mask = first.causal_attention.build_mask(
                config.window_size, n, frame_valid if partial else None, frame_valid.device
            )
            causal_pattern = first.causal_attention.build_pattern(config.window_size, n, plan.real_frames)
        return causal_mask, cross_mask, key_lengths, causal_pattern

    def forward(
        self,
        features: torch.Tensor,
        frame_mask: torch.Tensor | None = None,
        *,
        output_hidden_states: bool = False,
    ) -> CausalQFormerOutput:
        """Summarise every window of every video into ``num_queries`` tokens.

        Args:
            features: (B, T, N, D) per-frame tokens (N = ``tokens_per_frame``, D = ``encoder_hidden_size``); cast
                to the model's dtype.
            frame_mask: (B, T) bool, True = real frame, real frames first; ``None`` = all real. Only real windows
                are computed (packed together), so padding costs nothing.
            output_hidden_states: Also return the intermediates (see ``CausalQFormerOutput``).

        Returns:
            ``CausalQFormerOutput`` with ``tokens`` (B, W, Q, H), ``window_mask`` (B, W) and ``window_frames`` (B, W, 2),
            W = the most windows of any video (at least 1). An all-padding batch gives zero tokens and an all-False
            ``window_mask``.

        Raises:
            ValueError: wrong rank, width, tokens per frame or device, zero frames, a bad ``frame_mask``, or (with
                ``config.check_finite``) NaN/inf features.
        """
        config = self.config
        features, frame_mask, lengths = validate_inputs(
            features, frame_mask, config, self.device, self.dtype
        )  # cast to the model's dtype
        batch = features.shape[0]
        plan = plan_windows(lengths, config.window_size, config.window_stride, device=features.device)
        mask = window_mask(plan, batch)
        frames = window_frame_ranges(plan, batch)
        if plan.num_real == 0:
            tokens = features.new_zeros(batch, plan.max_windows, config.num_queries, config.hidden_size)
            return CausalQFormerOutput(tokens, mask, frames)

        x, frame_valid = self._window_tokens(features, lengths, plan)  # (Nw, L, D), (Nw, F)
        causal_mask, cross_mask, key_lengths, causal_pattern = self._attention_masks(plan, frame_valid)

        h = self.query_embeddings(plan.num_real)  # (Nw, Q, H)
        hidden, causal_states = [h], []
        source = x
        for layer in self.layers:
            if config.gradient_checkpointing and self.training and torch.is_grad_enabled():
                h, causal_out = checkpoint(
                    layer,
                    h,
                    source,
                    causal_mask,
                    cross_mask,
                    key_lengths,
                    causal_pattern,
                    use_reentrant=False,
                )
            else:
                h, causal_out = layer(h, source, causal_mask, cross_mask, key_lengths, causal_pattern)
            if config.stack_causal and causal_out is not None:
                source = causal_out
            hidden.append(h)
            causal_states.append(causal_out)

        tokens = scatter_windows(h, plan, batch)  # (B, W, Q, H)
        if not output_hidden_states:
            return CausalQFormerOutput(tokens, mask, frames)
        return CausalQFormerOutput(
            tokens,
            mask,
            frames,
            hidden_states=tuple(scatter_windows(t, plan, batch) for t in hidden),
            encoder_hidden_states=scatter_windows(materialise(x), plan, batch),
            causal_hidden_states=tuple(
                None if t is None else scatter_windows(t, plan, batch) for t in causal_states
            ),
        )
