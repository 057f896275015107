"""The plain reference attention: the released BERT math, step by step.

scores = q kᵀ / sqrt(d); masked scores get ``finfo(dtype).min`` (the released additive value, so masked weights
are exactly 0 and a fully masked row stays finite); softmax; dropout; weights @ v.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .base import AttentionInputs, common_refusals


class EagerBackend:
    """Reference math in plain torch ops; runs everywhere (softmax in float32 for half inputs)."""

    name = "eager"

    def supports(self, inputs: AttentionInputs) -> list[str]:
        return common_refusals(inputs)

    def __call__(self, inputs: AttentionInputs) -> torch.Tensor:
        q, k, v = inputs.query, inputs.key, inputs.value
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(q.shape[-1])  # (B, h, Lq, Lk)
        if inputs.mask is not None:
            scores = scores.masked_fill(~inputs.mask, torch.finfo(scores.dtype).min)
        if scores.dtype in (torch.float16, torch.bfloat16):
            weights = torch.softmax(scores.float(), dim=-1).to(scores.dtype)
        else:
            weights = torch.softmax(scores, dim=-1)
        if inputs.dropout_p > 0:
            weights = F.dropout(weights, p=inputs.dropout_p, training=True)
        return torch.matmul(weights, v)  # (B, h, Lq, d)
