"""Explicit key maps from foreign checkpoints to ``CausalQFormer``'s own parameter names.

Released FAVOR (BriansIDP/AudioVisualLLM, ``model/openllama.py`` + ``model/Qformer.py``)::

    video_query_tokens                                    -> query_tokens
    ln_video.{weight,bias}                                -> input_layernorm.*
    video_frame_position_embedding.weight                 -> position_embedding.weight
    video_Qformer.bert.embeddings.LayerNorm.*             -> query_layernorm.*
    video_Qformer.bert.embeddings.position_ids            -> (ignored, an unused buffer)
    video_Qformer.bert.encoder.layer.{i}.<block>.<part>   -> layers.{i}.<block>.<part>   (table _LAYER_PARTS)

BLIP-2 / InstructBLIP (transformers ``Blip2QFormerModel``: ``encoder.layer.{i}.attention.attention.query``;
LAVIS: ``Qformer.bert.encoder.layer.{i}.attention.self.query``) use the same layer parts.
"""

from __future__ import annotations

import re
import warnings
from typing import Any

import torch

from .config import CausalQFormerConfig

# Behaviour of the released code that differs from our defaults (see docs/qformer.md, "released quirks"): the causal
# module lets real frames of a partial window attend to its padding frames; the input LayerNorm uses PyTorch's eps.
RELEASED_QUIRKS: dict[str, Any] = {"causal_attends_window_padding": True, "input_layer_norm_eps": 1e-5}

# BERT layer part -> ours. "self" (released/LAVIS) and "attention" (transformers) name the q/k/v holder.
_BLOCKS = {
    "attention": "self_attention",
    "crossattention": "cross_attention",
    "encoder_causal_attention": "causal_attention",
}
_LAYER_PARTS = {
    "intermediate_query.dense": "ffn.fc1",
    "output_query.dense": "ffn.fc2",
    "output_query.LayerNorm": "ffn.norm",
}
for _block, _ours in _BLOCKS.items():
    for _holder in ("self", "attention"):
        for _proj in ("query", "key", "value"):
            _LAYER_PARTS[f"{_block}.{_holder}.{_proj}"] = f"{_ours}.{_proj}"
    _LAYER_PARTS[f"{_block}.output.dense"] = f"{_ours}.out"
    _LAYER_PARTS[f"{_block}.output.LayerNorm"] = f"{_ours}.norm"

_LAYER_KEY = re.compile(r"^encoder\.layer\.(\d+)\.(.+)\.(weight|bias)$")
# Text-side tensors of a BERT/BLIP-2 Q-Former that the query-only model never uses.
_TEXT_ONLY = re.compile(
    r"^(embeddings\.(word_embeddings|position_embeddings)\..*|embeddings\.position_ids|cls\..*|"
    r"encoder\.layer\.\d+\.(intermediate|output)\.(dense|LayerNorm)\.(weight|bias))$"
)


def _map_layer_key(key: str) -> str | None:
    match = _LAYER_KEY.match(key)
    if match is None:
        return None
    index, part, kind = match.groups()
    ours = _LAYER_PARTS.get(part)
    return None if ours is None else f"layers.{index}.{ours}.{kind}"


def official_to_native(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename released FAVOR tensors to ours; unknown keys raise ``ValueError`` (all listed)."""
    top = {
        "video_query_tokens": "query_tokens",
        "ln_video.weight": "input_layernorm.weight",
        "ln_video.bias": "input_layernorm.bias",
        "video_frame_position_embedding.weight": "position_embedding.weight",
        "video_Qformer.bert.embeddings.LayerNorm.weight": "query_layernorm.weight",
        "video_Qformer.bert.embeddings.LayerNorm.bias": "query_layernorm.bias",
    }
    native, unknown = {}, []
    for key, value in state_dict.items():
        if key == "video_Qformer.bert.embeddings.position_ids":
            continue
        ours = top.get(key)
        if ours is None and key.startswith("video_Qformer.bert."):
            ours = _map_layer_key(key.removeprefix("video_Qformer.bert."))
        if ours is None:
            unknown.append(key)
        else:
            native[ours] = value
    if unknown:
        raise ValueError(
            f"from_favor_official: state_dict has keys outside the released Q-Former layout: {sorted(unknown)}"
        )
    return native


def _layer_count(native: dict[str, torch.Tensor]) -> int:
    indices = {int(k.split(".")[1]) for k in native if k.startswith("layers.")}
    return max(indices) + 1 if indices else 0


def _cross_every(native: dict[str, torch.Tensor], num_layers: int) -> int:
    crossed = [i for i in range(num_layers) if f"layers.{i}.cross_attention.query.weight" in native]
    for every in range(1, num_layers + 1):
        if crossed == [i for i in range(num_layers) if i % every == 0]:
            return every
    raise ValueError(f"cross-attention in layers {crossed}: expected every k-th layer starting at 0")


def official_config(
    native: dict[str, torch.Tensor], config: CausalQFormerConfig | None, overrides: dict[str, Any]
) -> CausalQFormerConfig:
    """The released configuration, sized from the tensors when ``config`` is None, plus ``overrides``.

    A given ``config`` gets the released quirks (``RELEASED_QUIRKS``) unless ``overrides`` names them: the tensors
    come from the released model, which computes with them (without the padding quirk partial windows are off by
    up to 0.84). When the config disagreed, a ``UserWarning`` says what was changed and how to keep it.
    """
    if config is not None:
        fields = config.to_dict()
        changed = {
            name: (fields[name], released)
            for name, released in RELEASED_QUIRKS.items()
            if name not in overrides and fields[name] != released
        }
        if changed:
            warnings.warn(
                "from_favor_official: the config disagrees with the released model on "
                + ", ".join(
                    f"{name}={ours!r} (released {theirs!r})" for name, (ours, theirs) in changed.items()
                )
                + "; using the released values. Pass them as keywords, e.g. "
                "from_favor_official(sd, config, causal_attends_window_padding=False), to keep yours.",
                UserWarning,
                stacklevel=3,
            )
        fields.update({name: released for name, released in RELEASED_QUIRKS.items() if name not in overrides})
        return CausalQFormerConfig.from_dict(_with_overrides(fields, overrides))
    for needed in ("query_tokens", "layers.0.self_attention.query.weight", "layers.0.ffn.fc1.weight"):
        if needed not in native:
            raise ValueError(
                f"from_favor_official: cannot infer sizes, state_dict lacks the tensor for {needed!r}"
            )
    _, num_queries, hidden = native["query_tokens"].shape
    num_layers = _layer_count(native)
    causal = "layers.0.causal_attention.query.weight" in native
    if "layers.0.cross_attention.key.weight" in native:
        encoder_hidden = native["layers.0.cross_attention.key.weight"].shape[1]
    elif "input_layernorm.weight" in native:
        encoder_hidden = native["input_layernorm.weight"].shape[0]
    else:
        raise ValueError(
            "from_favor_official: cannot infer encoder_hidden_size (no cross-attention or ln_video tensors)"
        )
    fields: dict[str, Any] = {
        "hidden_size": hidden,
        "num_layers": num_layers,
        "intermediate_size": native["layers.0.ffn.fc1.weight"].shape[0],
        "num_queries": num_queries,
        "encoder_hidden_size": encoder_hidden,
        "cross_attention_every": _cross_every(native, num_layers),
        "causal": causal,
        "input_layernorm": "input_layernorm.weight" in native,
        "position_embedding": "window" if "position_embedding.weight" in native else "none",
        **RELEASED_QUIRKS,
    }
    if "position_embedding.weight" in native:
        fields["max_position_embeddings"] = native["position_embedding.weight"].shape[0]
    fields = _with_overrides(fields, overrides)
    heads = fields.setdefault("num_heads", 12)
    fields.setdefault("causal_num_heads", heads)  # released: the causal module uses the Q-Former's head count
    for name, width in (("num_heads", hidden), ("causal_num_heads", encoder_hidden)):
        if width % fields[name]:
            raise ValueError(
                f"from_favor_official: cannot infer {name} (released 12 does not divide {width}); pass config= or {name}="
            )
    return CausalQFormerConfig(**fields)


def _with_overrides(fields: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """``fields`` updated by ``overrides``; a new ``window_size`` without a stride keeps windows non-overlapping."""
    fields = {**fields, **overrides}
    if "window_size" in overrides and "window_stride" not in overrides:
        fields["window_stride"] = overrides["window_size"]
    return fields


def _largest_divisor_at_most(value: int, limit: int) -> int:
    return next(d for d in range(min(limit, value), 0, -1) if value % d == 0)


def blip2_to_native(
    model_or_state_dict: Any, query_tokens: torch.Tensor | None, overrides: dict[str, Any]
) -> tuple[dict[str, torch.Tensor], CausalQFormerConfig]:
    """BLIP-2/InstructBLIP Q-Former tensors renamed to ours, and the matching config (see ``from_blip2_qformer``)."""
    hf_config = None
    source = model_or_state_dict
    if hasattr(source, "qformer") and hasattr(source, "query_tokens"):  # Blip2Model, InstructBlip…, …
        if query_tokens is None:
            query_tokens = source.query_tokens
        source = source.qformer
    if hasattr(source, "state_dict") and hasattr(source, "config"):
        hf_config = source.config
        state_dict = source.state_dict()
    elif isinstance(source, dict):
        state_dict = source
    else:
        raise ValueError(
            "model_or_state_dict: expected a BLIP-2/InstructBLIP Q-Former model or a state dict, "
            f"got {type(model_or_state_dict).__name__}"
        )
    state_dict = dict(state_dict)
    for prefix in ("qformer.", "Qformer."):  # a whole BLIP-2 checkpoint: keep its Q-Former part
        if any(k.startswith(prefix) for k in state_dict):
            if query_tokens is None and "query_tokens" in state_dict:
                query_tokens = state_dict["query_tokens"]
            state_dict = {k.removeprefix(prefix): v for k, v in state_dict.items() if k.startswith(prefix)}
    state_dict = {k.removeprefix("bert."): v for k, v in state_dict.items()}
    if query_tokens is None and "query_tokens" in state_dict:
        query_tokens = state_dict.pop("query_tokens")
    state_dict.pop("query_tokens", None)

    native, unknown = {}, []
    query_norm = {"layernorm", "embeddings.layernorm", "embeddings.LayerNorm"}
    for key, value in state_dict.items():
        stem, _, kind = key.rpartition(".")
        if stem in query_norm and kind in ("weight", "bias"):
            native[f"query_layernorm.{kind}"] = value
        elif _TEXT_ONLY.match(key):
            continue
        else:
            ours = _map_layer_key(key)
            if ours is None:
                unknown.append(key)
            else:
                native[ours] = value
    if unknown:
        raise ValueError(f"from_blip2_qformer: unexpected keys for a BLIP-2 Q-Former: {sorted(unknown)}")
    if query_tokens is not None:
        native["query_tokens"] = query_tokens.detach()
    if "layers.0.self_attention.query.weight" not in native or "layers.0.ffn.fc1.weight" not in native:
        raise ValueError(
            "from_blip2_qformer: no Q-Former layer tensors found (expected encoder.layer.0.… keys)"
        )

    hidden = native["layers.0.self_attention.query.weight"].shape[0]
    num_layers = _layer_count(native)
    if "layers.0.cross_attention.key.weight" not in native:
        raise ValueError("from_blip2_qformer: layer 0 has no cross-attention tensors")
    fields: dict[str, Any] = {
        "hidden_size": hidden,
        "num_layers": num_layers,
        "intermediate_size": native["layers.0.ffn.fc1.weight"].shape[0],
        "encoder_hidden_size": native["layers.0.cross_attention.key.weight"].shape[1],
        "cross_attention_every": _cross_every(native, num_layers),
        "causal": False,
        "input_layernorm": False,
        "position_embedding": "none",
        "dropout": 0.1,
    }
    if query_tokens is not None:
        fields["num_queries"] = query_tokens.shape[1]
    if hf_config is not None:
        act = getattr(hf_config, "hidden_act", "gelu")
        if act != "gelu":
            raise ValueError(f"model_or_state_dict: expected hidden_act 'gelu' (exact erf GELU), got {act!r}")
        fields["num_heads"] = hf_config.num_attention_heads
        fields["layer_norm_eps"] = hf_config.layer_norm_eps
        fields["dropout"] = getattr(hf_config, "hidden_dropout_prob", 0.1)
        if getattr(hf_config, "cross_attention_frequency", None) not in (
            None,
            fields["cross_attention_every"],
        ):
            raise ValueError(
                f"model_or_state_dict: config.cross_attention_frequency={hf_config.cross_attention_frequency} "
                f"disagrees with the layers that hold cross-attention weights (every {fields['cross_attention_every']})"
            )
    else:
        fields["num_heads"] = hidden // 64 if hidden % 64 == 0 else None  # BERT's head width is 64
    fields = _with_overrides(fields, overrides)
    if fields["num_heads"] is None:
        raise ValueError(
            f"from_blip2_qformer: cannot infer num_heads from a state dict with hidden_size={hidden}; pass num_heads="
        )
    fields.setdefault(
        "causal_num_heads", _largest_divisor_at_most(fields["encoder_hidden_size"], fields["num_heads"])
    )
    return native, CausalQFormerConfig(**fields)
