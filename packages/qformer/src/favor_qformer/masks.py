"""Block-causal attention masks at frame granularity (FAVOR, arXiv 2310.05863, Sec. 3.2, "causal attention").

Shape legend: F frames in a window, N tokens per frame, L = F * N tokens.

Inside a window all N tokens of a frame see each other; between frames the mask is triangular. The released
code builds it with ``torch.triu`` over frames, so frame i attends to frames j >= i (``direction="future"``);
``direction="past"`` is the conventional causal order (j <= i).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .config import CAUSAL_DIRECTIONS


def _check_direction(direction: str) -> None:
    if direction not in CAUSAL_DIRECTIONS:
        raise ValueError(f"direction: expected one of {CAUSAL_DIRECTIONS}, got {direction!r}")


def frame_causal_mask(
    num_frames: int, direction: str, device: torch.device | str | None = None
) -> torch.Tensor:
    """Frame-level pattern (F, F) bool, True where frame ``i`` (row) may attend to frame ``j`` (column)."""
    _check_direction(direction)
    if num_frames < 1:
        raise ValueError(f"num_frames: expected >= 1, got {num_frames}")
    idx = torch.arange(num_frames, device=device)
    if direction == "future":
        return idx[None, :] >= idx[:, None]
    return idx[None, :] <= idx[:, None]


def block_causal_mask(
    num_frames: int,
    tokens_per_frame: int,
    direction: str,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Token-level block-causal mask.

    Args:
        num_frames: Frames F in the window.
        tokens_per_frame: Tokens N per frame.
        direction: ``"future"`` (released; frame i sees frames >= i) or ``"past"`` (frame i sees frames <= i).
        device: Where to build the mask.

    Returns:
        (L, L) bool with L = F * N; True = the row token may attend to the column token.
    """
    if tokens_per_frame < 1:
        raise ValueError(f"tokens_per_frame: expected >= 1, got {tokens_per_frame}")
    frames = frame_causal_mask(num_frames, direction, device)  # (F, F)
    frame_of_token = torch.arange(num_frames * tokens_per_frame, device=device) // tokens_per_frame  # (L,)
    return frames[frame_of_token[:, None], frame_of_token[None, :]]  # (L, L)


def block_causal_additive_bias(
    num_frames: int,
    tokens_per_frame: int,
    direction: str,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """The same pattern in the released additive form: (L, L), 0 where allowed, ``finfo(dtype).min`` elsewhere."""
    allowed = block_causal_mask(num_frames, tokens_per_frame, direction, device)
    bias = torch.zeros(allowed.shape, dtype=dtype, device=device)
    return bias.masked_fill_(~allowed, torch.finfo(dtype).min)


def block_causal_attn_bias(
    num_frames: int,
    tokens_per_frame: int,
    direction: str,
    batch_size: int,
    num_heads: int,
    dtype: torch.dtype = torch.float16,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """The block-causal pattern as an xformers ``memory_efficient_attention`` ``attn_bias``.

    xformers takes a dense additive tensor bias of shape (B, heads, L, L) whose last dimension is stored with a
    stride that is a multiple of 8 (its kernels' alignment rule), so the bias is allocated 8-aligned and sliced.
    It needs xformers only at attention time; building the tensor works anywhere.

    Returns:
        (B, heads, L, L) additive bias (0 = attend, ``-inf`` = masked), an expanded view of one (L, L) pattern.
    """
    length = num_frames * tokens_per_frame
    aligned = (length + 7) // 8 * 8
    storage = torch.zeros(length, aligned, dtype=dtype, device=device)
    bias = storage[:, :length]
    allowed = block_causal_mask(num_frames, tokens_per_frame, direction, device)
    bias.masked_fill_(~allowed, float("-inf"))
    return bias[None, None].expand(batch_size, num_heads, length, length)


@dataclass(frozen=True)
class BlockCausalPattern:
    """The block-causal mask of a batch of windows as structure, not as a dense tensor.

    Block-sparse backends (``backends/flex.py``) read it to skip the blocks the rule masks entirely; the other
    backends use the dense mask from [`dense`][favor_qformer.masks.BlockCausalPattern.dense], which is equal.

    Rule, for query token q and key token k of row b (frames ``q // N`` and ``k // N``): the frame-level
    ``direction`` rule allows the pair, and, when ``real_frames`` is given, k is a real token
    (``k < real_frames[b] * N``) or q is a padding token (a padding query keeps the block pattern, so no row is
    fully masked; its output is unused).

    Attributes:
        num_frames: Frames F per window.
        tokens_per_frame: Tokens N per frame.
        direction: ``"future"`` or ``"past"``.
        real_frames: Real frames of each row (host ints, length B), or ``None`` when every frame is attended as a
            key (no padding, or the released ``causal_attends_window_padding`` quirk).
    """

    num_frames: int
    tokens_per_frame: int
    direction: str
    real_frames: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        _check_direction(self.direction)

    @property
    def length(self) -> int:
        """Tokens L = F * N per window."""
        return self.num_frames * self.tokens_per_frame

    def allowed(
        self, batch: torch.Tensor, query: torch.Tensor, key: torch.Tensor, real_tokens: torch.Tensor | None
    ) -> torch.Tensor:
        """The rule on index tensors (broadcasting; a FlexAttention ``mask_mod`` calls it on scalars): True where
        query token ``query`` of row ``batch`` may attend to key token ``key``. ``real_tokens``: (B,) long real
        tokens per row (from ``real_tokens()``), ``None`` = no padding."""
        q_frame, k_frame = query // self.tokens_per_frame, key // self.tokens_per_frame
        block = k_frame >= q_frame if self.direction == "future" else k_frame <= q_frame
        if real_tokens is None:
            return block
        real = real_tokens[batch]
        return block & ((key < real) | (query >= real))

    def real_tokens(self, device: torch.device | str | None = None) -> torch.Tensor | None:
        """(B,) long real tokens per row, or ``None`` without padding."""
        if self.real_frames is None:
            return None
        return torch.tensor(self.real_frames, device=device) * self.tokens_per_frame

    def dense(self, device: torch.device | str | None = None) -> torch.Tensor:
        """The same mask as a tensor: (1, 1, L, L) without padding, else (B, 1, L, L) bool (True = attend)."""
        block = block_causal_mask(self.num_frames, self.tokens_per_frame, self.direction, device)  # (L, L)
        real_tokens = self.real_tokens(device)
        if real_tokens is None:
            return block[None, None]
        idx = torch.arange(self.length, device=device)
        real = idx[None, :] < real_tokens[:, None]  # (B, L)
        allowed = (
            real[:, None, :] | ~real[:, :, None]
        )  # (B, Lq, Lk): real keys, or any key for padding queries
        return (block[None] & allowed)[:, None]
