"""Configuration of the causal window Q-Former.

The defaults are the released FAVOR model (Sun et al., 2023, arXiv 2310.05863, Sec. 3.2 and the public code
BriansIDP/AudioVisualLLM): a two-layer BERT-base-sized Q-Former whose cross-attention reads windows of 10 frames
of 32 synchronised audio-visual tokens each, 1536 wide (768 visual + 768 audio).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CAUSAL_DIRECTIONS = ("future", "past")
POSITION_EMBEDDINGS = ("window", "none")
ATTENTION_BACKENDS = ("auto", "eager", "sdpa", "xformers", "flex")


@dataclass
class CausalQFormerConfig:
    """Sizes and switches of [`CausalQFormer`][favor_qformer.CausalQFormer].

    Attributes:
        hidden_size: Width H of the query stream (and of the output tokens).
        num_layers: Number of Q-Former layers.
        num_heads: Heads of the query self-attention and cross-attention.
        intermediate_size: Hidden width of the query feed-forward block.
        num_queries: Learned query tokens Q per window.
        encoder_hidden_size: Width D of the input features.
        causal_num_heads: Heads of each layer's causal attention module (over the D-wide window features).
        cross_attention_every: Layer ``i`` has cross-attention when ``i % cross_attention_every == 0``.
        window_size: Frames per window.
        window_stride: Frames between the starts of consecutive windows (``<= window_size``; equal = no overlap).
        tokens_per_frame: Tokens N per frame (32 in FAVOR: one frame of visual tokens and its audio slots).
        causal: Whether each layer has the block-causal attention module over the window features.
        causal_direction: ``"future"`` (released: frame i attends to frames j >= i, ``torch.triu``) or
            ``"past"`` (conventional: frame i attends to frames j <= i).
        stack_causal: ``False`` (released): every layer's causal module reads the input-stage features.
            ``True``: layer i's causal module reads layer i-1's causal output.
        input_layernorm: LayerNorm over the D-wide features before the Q-Former (released ``ln_video``).
        position_embedding: ``"window"``: learned embedding indexed by token position inside the window,
            restarting in every window (released); ``"none"``.
        max_position_embeddings: Rows of the position embedding (needs ``>= window_size * tokens_per_frame``).
        layer_norm_eps: Eps of the Q-Former's LayerNorms (BERT's 1e-12).
        input_layer_norm_eps: Eps of the input LayerNorm (released: PyTorch's default 1e-5).
        causal_attends_window_padding: Released behaviour: real frames of a partial last window attend (in the
            causal module only) to that window's padding frames, which carry the LayerNorm bias plus the position
            embedding. ``False`` (default) masks padding everywhere; ``from_favor_official`` sets ``True``.
        dropout: Dropout on attention probabilities and on each block's output (BERT's 0.1; inactive in eval).
        attention_backend: ``"auto"``, ``"eager"``, ``"sdpa"``, ``"xformers"`` or ``"flex"`` (see the backends table
            in docs).
        gradient_checkpointing: Recompute each layer in the backward pass (training only).
        check_finite: Raise ``ValueError`` when the input features hold NaN or inf (one reduction over the
            input; set ``False`` to skip it, e.g. under ``torch.compile``).
    """

    hidden_size: int = 768
    num_layers: int = 2
    num_heads: int = 12
    intermediate_size: int = 3072
    num_queries: int = 32
    encoder_hidden_size: int = 1536
    causal_num_heads: int = 12
    cross_attention_every: int = 1
    window_size: int = 10
    window_stride: int = 10
    tokens_per_frame: int = 32
    causal: bool = True
    causal_direction: str = "future"
    stack_causal: bool = False
    input_layernorm: bool = True
    position_embedding: str = "window"
    max_position_embeddings: int = 4096
    layer_norm_eps: float = 1e-12
    dropout: float = 0.1
    attention_backend: str = "auto"
    input_layer_norm_eps: float = 1e-5
    causal_attends_window_padding: bool = False
    gradient_checkpointing: bool = False
    check_finite: bool = True

    def __post_init__(self) -> None:
        positive = (
            "hidden_size",
            "num_layers",
            "num_heads",
            "intermediate_size",
            "num_queries",
            "encoder_hidden_size",
            "causal_num_heads",
            "cross_attention_every",
            "window_size",
            "window_stride",
            "tokens_per_frame",
            "max_position_embeddings",
        )
        for name in positive:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"CausalQFormerConfig.{name}: expected a positive int, got {value!r}")
        flags = ("causal", "stack_causal", "input_layernorm", "causal_attends_window_padding")
        for name in (*flags, "gradient_checkpointing", "check_finite"):
            if not isinstance(getattr(self, name), bool):  # a hand-edited "false" is truthy
                raise ValueError(
                    f"CausalQFormerConfig.{name}: expected true or false, got {getattr(self, name)!r}"
                )
        for name in ("dropout", "layer_norm_eps", "input_layer_norm_eps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"CausalQFormerConfig.{name}: expected a number, got {value!r}")
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"CausalQFormerConfig.hidden_size: expected a multiple of num_heads={self.num_heads}, "
                f"got {self.hidden_size}"
            )
        if self.encoder_hidden_size % self.causal_num_heads:
            raise ValueError(
                "CausalQFormerConfig.encoder_hidden_size: expected a multiple of "
                f"causal_num_heads={self.causal_num_heads}, got {self.encoder_hidden_size}"
            )
        if self.window_stride > self.window_size:
            raise ValueError(
                f"CausalQFormerConfig.window_stride: expected <= window_size={self.window_size} "
                f"(a larger stride would skip frames), got {self.window_stride}"
            )
        if self.causal_direction not in CAUSAL_DIRECTIONS:
            raise ValueError(
                f"CausalQFormerConfig.causal_direction: expected one of {CAUSAL_DIRECTIONS}, "
                f"got {self.causal_direction!r}"
            )
        if self.position_embedding not in POSITION_EMBEDDINGS:
            raise ValueError(
                f"CausalQFormerConfig.position_embedding: expected one of {POSITION_EMBEDDINGS}, "
                f"got {self.position_embedding!r}"
            )
        if self.attention_backend not in ATTENTION_BACKENDS:
            raise ValueError(
                f"CausalQFormerConfig.attention_backend: expected one of {ATTENTION_BACKENDS}, "
                f"got {self.attention_backend!r}"
            )
        if self.position_embedding == "window" and self.max_position_embeddings < self.tokens_per_window:
            raise ValueError(
                "CausalQFormerConfig.max_position_embeddings: expected >= window_size * tokens_per_frame = "
                f"{self.tokens_per_window}, got {self.max_position_embeddings}"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"CausalQFormerConfig.dropout: expected a value in [0, 1), got {self.dropout!r}")
        for name in ("layer_norm_eps", "input_layer_norm_eps"):
            if not getattr(self, name) > 0:
                raise ValueError(f"CausalQFormerConfig.{name}: expected > 0, got {getattr(self, name)!r}")

    @property
    def tokens_per_window(self) -> int:
        """Tokens in one window, ``window_size * tokens_per_frame``."""
        return self.window_size * self.tokens_per_frame

    def has_cross_attention(self, layer: int) -> bool:
        """Whether layer ``layer`` has cross-attention (``layer % cross_attention_every == 0``, as BLIP-2)."""
        return layer % self.cross_attention_every == 0

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of every field (what ``config.json`` holds)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CausalQFormerConfig:
        """Build from a dict such as ``to_dict()``'s; unknown keys raise ``ValueError``."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(
                f"CausalQFormerConfig.from_dict: unknown keys {unknown}; expected a subset of {sorted(names)}"
            )
        return cls(**data)

    def save(self, path: str | Path) -> None:
        """Write the config as JSON to ``path``."""
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> CausalQFormerConfig:
        """Read a config written by [`save`][favor_qformer.CausalQFormerConfig.save]."""
        return cls.from_dict(json.loads(Path(path).read_text()))
