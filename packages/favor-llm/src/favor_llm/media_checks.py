"""Checks and normalisation of the media tensors given to `FavorModel` (lengths, batch sizes, frozen features).

Every check raises ``ValueError`` naming the argument, what was expected and what came, before a tensor reaches an
encoder (a wrong shape would otherwise fail deep inside a convolution or a broadcast).

Shape legend: ``B`` batch, ``T`` frames, ``N`` tokens per frame, ``Dv`` visual width, ``S`` audio encoder steps,
``Da`` audio encoder width.
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = [
    "FROZEN_FEATURE_NAMES",
    "MAX_AUDIO_ENCODERS",
    "RAW_MEDIA_NAMES",
    "as_counts",
    "audio_feature_key",
    "batch_size_of",
    "check_batch",
    "input_feature_key",
    "media_counts",
    "per_encoder",
]

#: At most this many audio encoders (``input_features``, ``input_features_1`` .. ``_3``).
MAX_AUDIO_ENCODERS = 4
#: The raw media tensors (the frozen encoders read them).
RAW_MEDIA_NAMES = ("pixel_values", *(f"input_features{'' if k == 0 else f'_{k}'}" for k in range(4)))
#: The frozen features `FavorModel.encode_frozen_media` returns (instead of the raw media).
FROZEN_FEATURE_NAMES = ("visual_features", *(f"audio_features{'' if k == 0 else f'_{k}'}" for k in range(4)))


def input_feature_key(k: int) -> str:
    """The raw-input key of audio encoder ``k`` (``input_features``, ``input_features_1``, ...)."""
    return "input_features" if k == 0 else f"input_features_{k}"


def audio_feature_key(k: int) -> str:
    """The frozen-feature key of audio encoder ``k`` (``audio_features``, ``audio_features_1``, ...)."""
    return "audio_features" if k == 0 else f"audio_features_{k}"


def per_encoder(first: Any, further: tuple, count: int) -> list:
    """``input_features`` (a tensor, or a list with one per encoder) plus ``input_features_<k>`` -> one entry per
    encoder (``None`` where absent)."""
    if isinstance(first, (list, tuple)):
        items = list(first)
    else:
        items = [first, *further[: max(count - 1, 0)]]
        extra = [k + 1 for k, f in enumerate(further) if f is not None and k + 1 >= count]
        if extra:
            raise ValueError(
                f"{input_feature_key(extra[0])}: the model has {count} audio encoder(s), got features for more"
            )
    if len(items) != count:
        raise ValueError(
            f"input_features: expected {count} tensors (one per audio encoder), got {len(items)}"
        )
    return items


def as_counts(lengths: Any, name: str, device: torch.device) -> torch.Tensor:
    """Per-sample counts as a long tensor; floats and bools are refused rather than truncated (1.5 -> 1)."""
    tensor = torch.as_tensor(lengths, device=device)
    if tensor.dtype == torch.bool or tensor.is_floating_point() or tensor.is_complex():
        raise ValueError(f"{name}: expected integer counts, got {tensor.dtype} values {tensor.tolist()}")
    return tensor.long()


def check_batch(name: str, tensor: torch.Tensor, batch: int) -> None:
    """``tensor.shape[0] == batch`` or a ValueError naming ``name``."""
    if tensor.shape[0] != batch:
        raise ValueError(f"{name}: expected batch size {batch}, got shape {tuple(tensor.shape)}")


def media_counts(lengths: Any, batch: int, name: str, device: torch.device) -> torch.Tensor:
    """Per-sample counts ``(B,)`` (zeros when ``None``): integer, non-negative, of the batch size."""
    if lengths is None:
        return torch.zeros(batch, dtype=torch.long, device=device)
    counts = as_counts(lengths, name, device)
    check_batch(name, counts, batch)
    if batch and int(counts.min()) < 0:
        raise ValueError(f"{name}: expected lengths >= 0, got {counts.tolist()}")
    return counts


def batch_size_of(tensors: dict[str, Any], batch_size: int | None) -> int:
    """The one batch size of the given tensors (and ``batch_size``, e.g. ``input_ids``'), or a ValueError."""
    sizes = {name: t.shape[0] for name, t in tensors.items() if t is not None}
    if batch_size is not None:
        sizes["input_ids"] = batch_size
    if len(set(sizes.values())) > 1:
        raise ValueError(f"batch sizes differ between inputs: {sizes}")
    if not sizes:
        raise ValueError("pixel_values, input_features: give at least one of them to encode media")
    return next(iter(sizes.values()))
