"""Input checks of ``CausalQFormer.forward``: every mistake becomes a ValueError naming the argument."""

from __future__ import annotations

import torch

from .config import CausalQFormerConfig


def validate_inputs(
    features: object,
    frame_mask: object,
    config: CausalQFormerConfig,
    device: torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None, list[int]]:
    """Check ``features`` (B, T, N, D) and ``frame_mask`` (B, T) bool; return them and the real frames per video.

    Real frames must come first in every row of ``frame_mask`` (videos padded at the end). With ``dtype`` (the
    model's), the returned features are cast to it, and (with ``config.check_finite``) values that overflow it are
    refused like NaN/inf: finite float32 features past 65504 would otherwise become inf in a float16 model.
    """
    if not isinstance(features, torch.Tensor):
        raise ValueError(f"features: expected a torch.Tensor, got {type(features).__name__}")
    expected = f"(batch, frames, tokens_per_frame={config.tokens_per_frame}, encoder_hidden_size={config.encoder_hidden_size})"
    if features.dim() != 4:
        raise ValueError(f"features: expected a 4-D tensor {expected}, got shape {tuple(features.shape)}")
    batch, frames, tokens, width = features.shape
    if not features.is_floating_point():
        raise ValueError(f"features: expected a floating-point tensor, got {features.dtype}")
    if batch == 0:
        raise ValueError(
            f"features: expected at least one video, got batch size 0 (shape {tuple(features.shape)})"
        )
    if frames == 0:
        raise ValueError(
            f"features: expected at least one frame, got 0 frames (shape {tuple(features.shape)})"
        )
    if tokens != config.tokens_per_frame:
        raise ValueError(
            f"features: expected tokens_per_frame={config.tokens_per_frame} tokens per frame (dim 2), got {tokens} "
            f"(shape {tuple(features.shape)})"
        )
    if width != config.encoder_hidden_size:
        raise ValueError(
            f"features: expected encoder_hidden_size={config.encoder_hidden_size} features (dim 3), got {width} "
            f"(shape {tuple(features.shape)})"
        )
    if device is not None and features.device != device:
        raise ValueError(f"features: expected a tensor on the model's device {device}, got {features.device}")
    if frame_mask is None:
        lengths = [frames] * batch
    else:
        if not isinstance(frame_mask, torch.Tensor):
            raise ValueError(
                f"frame_mask: expected a bool torch.Tensor of shape {(batch, frames)}, got {type(frame_mask).__name__}"
            )
        if frame_mask.dtype != torch.bool:
            raise ValueError(
                f"frame_mask: expected dtype torch.bool (True = real frame), got {frame_mask.dtype}"
            )
        if tuple(frame_mask.shape) != (batch, frames):
            raise ValueError(
                f"frame_mask: expected shape {(batch, frames)} (batch, frames), got {tuple(frame_mask.shape)}"
            )
        frame_mask = frame_mask.to(features.device)
        late = frame_mask[:, 1:] & ~frame_mask[:, :-1]  # a real frame right after a padding frame
        if bool(late.any()):
            rows = late.any(dim=1).nonzero().flatten().tolist()
            raise ValueError(
                f"frame_mask: expected real frames first and padding at the end of each row, but rows {rows} "
                "have a real frame after a padding frame"
            )
        lengths = frame_mask.sum(dim=1).tolist()
    if config.check_finite and not bool(torch.isfinite(features).all()):
        bad = (~torch.isfinite(features)).sum().item()
        raise ValueError(
            f"features: expected finite values, got {bad} NaN/inf entries (set config.check_finite=False to skip this check)"
        )
    if dtype is not None and dtype != features.dtype:
        cast = features.to(dtype)
        if config.check_finite and not bool(torch.isfinite(cast).all()):
            bad = (~torch.isfinite(cast)).sum().item()
            raise ValueError(
                f"features: expected values within the range of the model's dtype {str(dtype).removeprefix('torch.')} "
                f"(|x| <= {torch.finfo(dtype).max:g}), got {bad} entries that overflow to inf when cast from "
                f"{str(features.dtype).removeprefix('torch.')} (scale the features or use a wider model dtype)"
            )
        features = cast
    return features, frame_mask, lengths
