"""What every attention backend receives and must declare.

Shape legend: B batch (windows), h heads, Lq query tokens, Lk key tokens, d head width.

Like xformers' ``ops/fmha/dispatch.py``, a backend does not guess: ``supports(inputs)`` returns the list of
reasons it refuses an input (empty = it can run it) and the dispatcher in ``backends/__init__.py`` tries the
backends in order, so a refusal can always be explained.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from ..masks import BlockCausalPattern


@dataclass
class AttentionInputs:
    """One attention call.

    Attributes:
        query: (B, h, Lq, d).
        key: (B, h, Lk, d).
        value: (B, h, Lk, d).
        mask: bool, broadcastable to (B, h, Lq, Lk), True = may attend; ``None`` = attend everywhere.
            No row is fully masked.
        key_lengths: Host-side list of B ints when ``mask`` is exactly "keys ``[0, key_lengths[b])`` of row b are
            real" (a key-padding mask, nothing else); lets a backend pack variable-length rows. ``None`` otherwise.
        dropout_p: Dropout probability on the attention weights (0 in eval).
        pattern: Set when ``mask`` is exactly this block-causal pattern (the causal module); lets a block-sparse
            backend skip the blocks it masks entirely. ``None`` otherwise.
    """

    query: torch.Tensor
    key: torch.Tensor
    value: torch.Tensor
    mask: torch.Tensor | None = None
    key_lengths: list[int] | None = None
    dropout_p: float = 0.0
    pattern: BlockCausalPattern | None = None

    @property
    def device(self) -> torch.device:
        return self.query.device

    @property
    def dtype(self) -> torch.dtype:
        return self.query.dtype

    @property
    def flops(self) -> int:
        """Multiply-adds x 2 of the two matmuls when every pair is computed: ``4 B h Lq Lk d``."""
        batch, heads, q_len, head_dim = self.query.shape
        return 4 * batch * heads * q_len * self.key.shape[-2] * head_dim


class AttentionBackend(Protocol):
    """An attention implementation: (B, h, Lq, d) queries, (B, h, Lk, d) keys/values -> (B, h, Lq, d)."""

    name: str

    def supports(self, inputs: AttentionInputs) -> list[str]:
        """Reasons this backend refuses ``inputs``; empty when it can run them."""
        ...

    def __call__(self, inputs: AttentionInputs) -> torch.Tensor:
        """The attention output, (B, h, Lq, d)."""
        ...


def common_refusals(inputs: AttentionInputs) -> list[str]:
    """Checks every backend shares (consistent shapes and dtypes)."""
    reasons = []
    q, k, v = inputs.query, inputs.key, inputs.value
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        reasons.append(
            f"query/key/value must be 4-D (B, h, L, d), got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}"
        )
    elif k.shape != v.shape or q.shape[:2] != k.shape[:2] or q.shape[-1] != k.shape[-1]:
        reasons.append(
            f"inconsistent shapes query {tuple(q.shape)}, key {tuple(k.shape)}, value {tuple(v.shape)}"
        )
    if not (q.dtype == k.dtype == v.dtype):
        reasons.append(f"dtypes differ: query {q.dtype}, key {k.dtype}, value {v.dtype}")
    return reasons
