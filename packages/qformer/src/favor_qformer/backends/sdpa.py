"""torch's fused ``scaled_dot_product_attention`` (flash / memory-efficient / math kernels chosen by torch)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import AttentionInputs, common_refusals


class SdpaBackend:
    """``torch.nn.functional.scaled_dot_product_attention`` with a boolean mask (True = attend)."""

    name = "sdpa"

    def supports(self, inputs: AttentionInputs) -> list[str]:
        reasons = common_refusals(inputs)
        if inputs.mask is not None and inputs.mask.dtype != torch.bool:
            reasons.append(f"mask must be bool, got {inputs.mask.dtype}")
        return reasons

    def __call__(self, inputs: AttentionInputs) -> torch.Tensor:
        return F.scaled_dot_product_attention(
            inputs.query, inputs.key, inputs.value, attn_mask=inputs.mask, dropout_p=inputs.dropout_p
        )
