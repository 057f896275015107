"""LoRA on the LLM with peft (released FAVOR: r=32, alpha=32, dropout 0.1 on q/k/v/o projections)."""

from __future__ import annotations

import warnings

from peft import LoraConfig, PeftModel, get_peft_model
from transformers import PreTrainedModel

from .configuration import FavorConfig

__all__ = ["ADAPTER_NAME", "add_lora", "lora_config"]

ADAPTER_NAME = "default"


def lora_config(config: FavorConfig) -> LoraConfig:
    """The peft `LoraConfig` of ``config``'s LoRA settings."""
    return LoraConfig(
        task_type="CAUSAL_LM",
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=list(config.lora_target_modules),
        inference_mode=False,
    )


def add_lora(llm: PreTrainedModel, config: FavorConfig) -> PeftModel:
    """Wrap ``llm`` with fresh LoRA adapters (base weights frozen, adapters trainable)."""
    if isinstance(llm, PeftModel):
        raise ValueError("language_model: already a peft model; pass the base causal LM")
    with warnings.catch_warnings():  # peft still calls a transformers method deprecated in v5
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        return get_peft_model(llm, lora_config(config))
