"""Model statistics computed from a config alone (no weights): parameter counts and AV tokens per minute.

`parameter_counts` builds the model on PyTorch's ``meta`` device, so even the released 13B configuration is
counted in a few seconds without allocating memory. ``favor info`` prints `describe`.
"""

from __future__ import annotations

from typing import Any

import torch

from .components import component_of
from .components import components as declared_components
from .configuration import FavorConfig
from .layout import AVLayout
from .streaming.budget import stream_budget

__all__ = ["describe", "parameter_counts"]


def parameter_counts(config: FavorConfig | None = None) -> dict[str, Any]:
    """Trainable / frozen parameter counts of the model ``config`` describes (default: the released FAVOR).

    Returns:
        ``{"trainable": int, "frozen": int, "total": int, "components": {name: {"trainable": int, "frozen": int}}}``
        keyed by the declared component names (`favor_llm.components`: ``vision``, ``audio_<k>``,
        ``audio_projections``, ``synchroniser``, ``causal_qformer``, ``language_projection``, ``text``, ``lora``).
    """
    from .modeling import FavorModel

    config = config or FavorConfig()
    with torch.device("meta"):
        model = FavorModel(config)
    parts = declared_components(config)
    components = {c.name: {"trainable": 0, "frozen": 0} for c in parts}
    for name, param in model.named_parameters():
        entry = components[component_of(name, parts).name]
        entry["trainable" if param.requires_grad else "frozen"] += param.numel()
    trainable = sum(c["trainable"] for c in components.values())
    frozen = sum(c["frozen"] for c in components.values())
    return {"trainable": trainable, "frozen": frozen, "total": trainable + frozen, "components": components}


def describe(config: FavorConfig | None = None) -> dict[str, Any]:
    """A summary for ``favor info``: the composed parts, parameter counts and AV tokens per minute of video."""
    config = config or FavorConfig()
    layout = AVLayout.from_config(config)
    q = config.causal_qformer_config
    return {
        "vision": config.vision_config.model_type
        + (
            f" + {config.vision_qformer_config.model_type}"
            if config.vision_qformer_config is not None
            else ""
        ),
        "tokens_per_frame": config.tokens_per_frame,
        "audio": [c.model_type for c in config.audio_configs],
        "audio_feature_rates": list(config.audio_feature_rates),
        "fps": config.fps,
        "window_size": q.window_size,
        "window_stride": q.window_stride,
        "num_queries": config.num_queries,
        "llm": config.text_config.model_type,
        "lora": {
            "r": config.lora_r,
            "alpha": config.lora_alpha,
            "dropout": config.lora_dropout,
            "target_modules": list(config.lora_target_modules),
        }
        if config.use_lora
        else None,
        "diversity_loss_weight": config.diversity_loss_weight,
        "av_fusion": config.av_fusion,
        "av_tokens_per_minute": layout.tokens_per_minute(),
        # a live stream needs one token block per window (`StreamingSession` refuses separate Q-Formers)
        "streaming": stream_budget(config) if config.av_blocks == 1 else None,
        "parameters": parameter_counts(config),
        "components": [
            {"name": c.name, "module": c.module, "trainable": c.trainable, "weights": c.weights}
            for c in declared_components(config)
        ],
    }
