"""What an hour of streaming costs the LLM, from a config alone: AV tokens, KV-cache memory, minutes until the
context is full (``favor info`` prints it).

KV cache per token: ``2 (keys, values) x layers x key/value heads x head width x bytes per value``. Released FAVOR
(Vicuna-13B, 40 layers x 40 heads x 128, 16-bit): 800 KiB per token; 384 AV tokens per minute make 23,040 tokens
and about 17.6 GiB per hour, and Vicuna's 2048-token context is full after about 5 minutes (hence `ContextPolicy`).
"""

from __future__ import annotations

from typing import Any

from ..layout import AVLayout

__all__ = ["stream_budget"]


def stream_budget(config: Any, bytes_per_value: int = 2, reserve_tokens: int = 256) -> dict[str, float]:
    """Streaming cost of the model ``config`` describes.

    Args:
        config: a `FavorConfig`.
        bytes_per_value: bytes per cached key/value element (2: bfloat16 / float16, 4: float32).
        reserve_tokens: room kept for the prompt, a question and its answer (`ContextPolicy.reserve_tokens`).

    Returns:
        ``{"av_tokens_per_hour", "kv_bytes_per_token", "kv_bytes_per_hour", "context_tokens",
        "minutes_until_full"}`` (``context_tokens`` and ``minutes_until_full`` are 0 when the LLM config has no
        ``max_position_embeddings``).
    """
    text = config.text_config
    heads = int(text.num_attention_heads)
    kv_heads = int(getattr(text, "num_key_value_heads", None) or heads)
    head_dim = int(getattr(text, "head_dim", None) or text.hidden_size // heads)
    per_token = 2 * int(text.num_hidden_layers) * kv_heads * head_dim * bytes_per_value
    per_minute = AVLayout.from_config(config).tokens_per_minute()
    context = int(getattr(text, "max_position_embeddings", 0) or 0)
    return {
        "av_tokens_per_hour": 60 * per_minute,
        "kv_bytes_per_token": per_token,
        "kv_bytes_per_hour": 60 * per_minute * per_token,
        "context_tokens": context,
        "minutes_until_full": max(0.0, (context - reserve_tokens) / per_minute) if context else 0.0,
    }
