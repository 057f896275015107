"""Helpers of the favor-qformer tests: tiny configs and the golden files' configuration."""

from __future__ import annotations

import torch

from favor_qformer import CausalQFormer, CausalQFormerConfig

REFERENCE_NAMES = ("favor_official_tiny", "favor_official_tiny_unitln")
PREFIX = "official_state_dict."


def tiny_config(**overrides) -> CausalQFormerConfig:
    """A small config that keeps every structural feature (2 layers, cross-attention, causal module)."""
    fields = dict(
        hidden_size=16,
        num_layers=2,
        num_heads=2,
        intermediate_size=32,
        num_queries=4,
        encoder_hidden_size=12,
        causal_num_heads=2,
        window_size=3,
        window_stride=3,
        tokens_per_frame=2,
        dropout=0.0,
        attention_backend="eager",
    )
    fields.update(overrides)
    return CausalQFormerConfig(**fields)


def tiny_model(**overrides) -> CausalQFormer:
    """A tiny model in eval mode with non-trivial LayerNorms (so mistakes show up)."""
    model = CausalQFormer(tiny_config(**overrides)).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name and name.endswith("weight"):
                param.copy_(1 + 0.1 * torch.randn_like(param))
            elif name.endswith("bias"):
                param.copy_(0.1 * torch.randn_like(param))
    return model


def official_state_dict(reference: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k.removeprefix(PREFIX): v for k, v in reference.items() if k.startswith(PREFIX)}


def reference_config(**overrides) -> CausalQFormerConfig:
    """The tiny configuration of the golden files (see their JSON sidecars)."""
    fields = dict(
        hidden_size=64,
        num_layers=2,
        num_heads=4,
        intermediate_size=128,
        num_queries=32,
        encoder_hidden_size=96,
        causal_num_heads=4,
        window_size=10,
        window_stride=10,
        tokens_per_frame=32,
        causal_attends_window_padding=True,
        attention_backend="eager",
    )
    fields.update(overrides)
    return CausalQFormerConfig(**fields)
