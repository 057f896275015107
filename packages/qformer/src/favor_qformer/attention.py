"""BERT-style attention blocks: the Q-Former's self/cross-attention and FAVOR's block-causal module.

FAVOR (arXiv 2310.05863, Sec. 3.2) adds to every Q-Former layer a causal self-attention over the window's
input tokens ("encoder_causal_attention" in the released code): a BERT attention block (q/k/v projections,
scaled dot-product attention, output dense + dropout + post-LN residual, no feed-forward) whose mask is
block-triangular over frames (see ``masks.py``).

Shape legend: B batch (windows), F frames, N tokens per frame, L = F * N tokens, Lq/Lk query/key tokens,
C the block's width, h heads, d = C / h.
"""

from __future__ import annotations

import torch
from einops import rearrange, repeat
from torch import nn

from .backends import AttentionInputs, attention
from .masks import BlockCausalPattern, block_causal_mask
from .shared_frames import SharedFrameTokens, materialise, project


class MultiHeadAttention(nn.Module):
    """BERT attention block: ``LayerNorm(x + dropout(out(attention(q(x), k(c), v(c)))))``.

    Args:
        dim: Width C of the input ``x`` and of the output.
        num_heads: Heads h (``dim % num_heads == 0``).
        kv_dim: Width of the key/value source (cross-attention); ``None`` = ``dim`` (self-attention).
        dropout: Dropout on the attention weights and on the block output (training only).
        layer_norm_eps: Eps of the post-residual LayerNorm.
        backend: Attention backend (``"auto"``, ``"eager"``, ``"sdpa"``, ``"xformers"``, ``"flex"``).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        kv_dim: int | None = None,
        *,
        dropout: float = 0.0,
        layer_norm_eps: float = 1e-12,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"num_heads: expected a divisor of dim={dim}, got {num_heads}")
        self.num_heads = num_heads
        self.dropout = dropout
        self.backend = backend
        kv_dim = dim if kv_dim is None else kv_dim
        self.query = nn.Linear(dim, dim)
        self.key = nn.Linear(kv_dim, dim)
        self.value = nn.Linear(kv_dim, dim)
        self.out = nn.Linear(dim, dim)
        self.norm = nn.LayerNorm(dim, eps=layer_norm_eps)

    def forward(
        self,
        x: torch.Tensor | SharedFrameTokens,
        context: torch.Tensor | SharedFrameTokens | None = None,
        mask: torch.Tensor | None = None,
        key_lengths: list[int] | None = None,
        pattern: BlockCausalPattern | None = None,
    ) -> torch.Tensor:
        """Attend from ``x`` (B, Lq, C) to ``context`` (B, Lk, kv_dim) (``None`` = ``x``); returns (B, Lq, C).

        ``mask`` is bool, broadcastable to (B, h, Lq, Lk), True = may attend. ``key_lengths`` (host ints) says
        the mask is exactly "the first ``key_lengths[b]`` keys are real", which lets a backend pack rows;
        ``pattern`` says it is exactly that block-causal pattern, which lets a backend skip masked blocks.
        ``x`` and ``context`` may be ``SharedFrameTokens`` (overlapping windows): each frame is projected once.
        """
        source = x if context is None else context
        width, kv_width = self.query.in_features, self.key.in_features
        if x.dim() != 3 or x.shape[-1] != width:
            raise ValueError(f"x: expected (batch, tokens, {width}), got shape {tuple(x.shape)}")
        if source.dim() != 3 or source.shape[0] != x.shape[0] or source.shape[-1] != kv_width:
            name = "x" if context is None else "context"
            raise ValueError(
                f"{name}: expected (batch={x.shape[0]}, tokens, {kv_width}), got shape {tuple(source.shape)}"
            )
        heads = self.num_heads
        q = rearrange(project(self.query, x), "b l (h d) -> b h l d", h=heads)
        k = rearrange(project(self.key, source), "b l (h d) -> b h l d", h=heads)
        v = rearrange(project(self.value, source), "b l (h d) -> b h l d", h=heads)
        p = self.dropout if self.training else 0.0
        inputs = AttentionInputs(q, k, v, mask=mask, key_lengths=key_lengths, dropout_p=p, pattern=pattern)
        context_layer = rearrange(attention(inputs, self.backend), "b h l d -> b l (h d)")  # (B, Lq, C)
        projected = nn.functional.dropout(self.out(context_layer), p=p, training=self.training)
        return self.norm(projected + materialise(x))


class BlockCausalAttention(MultiHeadAttention):
    """FAVOR's causal attention module over the frames of a window (post-LN, no feed-forward).

    Usable alone on any (batch, frames, tokens, dim) stream::

        layer = BlockCausalAttention(dim=96, num_heads=4, direction="past")
        y = layer(x)  # x: (B, F, N, 96) -> y: (B, F, N, 96)

    Args:
        dim: Width C of the tokens.
        num_heads: Heads h (``dim % num_heads == 0``).
        direction: ``"future"`` (released: frame i attends to frames j >= i) or ``"past"`` (j <= i).
        dropout: Dropout on the attention weights and the block output (training only).
        layer_norm_eps: Eps of the post-residual LayerNorm.
        attends_padding: Released quirk: real frames also attend to padding frames, so ``frame_mask`` does not
            change this module's output. ``False`` (default) masks padding frames as keys.
        backend: Attention backend (``"auto"``, ``"eager"``, ``"sdpa"``, ``"xformers"``, ``"flex"``).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        direction: str = "future",
        dropout: float = 0.0,
        layer_norm_eps: float = 1e-12,
        *,
        attends_padding: bool = False,
        backend: str = "auto",
    ) -> None:
        super().__init__(dim, num_heads, dropout=dropout, layer_norm_eps=layer_norm_eps, backend=backend)
        block_causal_mask(1, 1, direction)  # validates ``direction``
        self.direction = direction
        self.attends_padding = attends_padding

    def build_mask(
        self,
        num_frames: int,
        tokens_per_frame: int,
        frame_mask: torch.Tensor | None = None,
        device: torch.device | None = None,
    ) -> torch.Tensor:
        """The attention mask for ``forward_tokens``: (1, 1, L, L) or, with padding frames, (B, 1, L, L) bool.

        Padding tokens are masked as keys for real queries; a padding query keeps the block pattern so no row is
        ever fully masked (its output is finite and unused).
        """
        block = block_causal_mask(num_frames, tokens_per_frame, self.direction, device)  # (L, L)
        if frame_mask is None or self.attends_padding:
            return block[None, None]
        real = repeat(frame_mask.to(device), "b f -> b (f n)", n=tokens_per_frame)  # (B, L)
        allowed = (
            real[:, None, :] | ~real[:, :, None]
        )  # (B, Lq, Lk): real keys, or any key for padding queries
        return (block[None] & allowed)[:, None]  # (B, 1, L, L)

    def build_pattern(
        self, num_frames: int, tokens_per_frame: int, real_frames: tuple[int, ...] | None = None
    ) -> BlockCausalPattern:
        """The mask of ``build_mask`` as structure (for block-sparse backends), from each row's real frames
        (host ints, real frames first; ``None`` = all real). Equal to ``build_mask`` with the matching
        ``frame_mask``."""
        padded = real_frames is not None and any(r < num_frames for r in real_frames)
        keep = tuple(real_frames) if padded and not self.attends_padding else None
        return BlockCausalPattern(num_frames, tokens_per_frame, self.direction, keep)

    def forward_tokens(
        self,
        x: torch.Tensor | SharedFrameTokens,
        mask: torch.Tensor,
        pattern: BlockCausalPattern | None = None,
    ) -> torch.Tensor:
        """The module on flattened tokens: ``x`` (B, L, C) with a mask from ``build_mask`` (and, optionally, the
        same mask as ``build_pattern``'s structure); returns (B, L, C)."""
        return super().forward(x, mask=mask, pattern=pattern)

    def forward(self, x: torch.Tensor, frame_mask: torch.Tensor | None = None) -> torch.Tensor:  # type: ignore[override]
        """Block-causal self-attention over frames.

        Args:
            x: (B, F, N, C) tokens, frame by frame.
            frame_mask: (B, F) bool, True = real frame; padding frames are not attended (unless
                ``attends_padding``) and their outputs are finite but meaningless.

        Returns:
            (B, F, N, C).
        """
        if x.dim() != 4:
            raise ValueError(
                f"x: expected a 4-D tensor (batch, frames, tokens, dim), got shape {tuple(x.shape)}"
            )
        batch, frames, tokens, width = x.shape
        if width != self.query.in_features:
            raise ValueError(
                f"x: expected dim={self.query.in_features} features (dim 3), got {width} (shape {tuple(x.shape)})"
            )
        if frame_mask is not None and (
            frame_mask.dtype != torch.bool or tuple(frame_mask.shape) != (batch, frames)
        ):
            raise ValueError(
                f"frame_mask: expected a bool tensor of shape {(batch, frames)}, "
                f"got {frame_mask.dtype} of shape {tuple(frame_mask.shape)}"
            )
        mask = self.build_mask(frames, tokens, frame_mask, x.device)
        pattern = self.build_pattern(frames, tokens)
        if frame_mask is not None:
            real = frame_mask.sum(dim=1)  # (B,)
            real_first = torch.arange(frames, device=frame_mask.device)[None, :] < real[:, None]
            # The pattern means "real frames first"; a mask with holes is only expressed by the dense mask.
            contiguous = torch.equal(real_first, frame_mask)
            pattern = self.build_pattern(frames, tokens, tuple(real.tolist())) if contiguous else None
        flat = rearrange(x, "b f n c -> b (f n) c")
        return rearrange(self.forward_tokens(flat, mask, pattern), "b (f n) c -> b f n c", f=frames)
