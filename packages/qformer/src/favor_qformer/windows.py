"""Cutting videos into windows of frames (FAVOR, arXiv 2310.05863, Sec. 3.2: "sliding windows").

Shape legend: B videos, T frames (padded), N tokens per frame, D feature width, F = window_size frames per window,
W windows per video (padded to the batch maximum), Nw real windows in the whole batch.

Window rule. A video with ``T_real`` real frames gets windows starting at frames 0, stride, 2*stride, ... up to
the first window that reaches its last frame::

    count = 0                                            if T_real == 0
    count = 1 + ceil(max(0, T_real - window_size) / window_stride)   otherwise

With ``window_stride == window_size`` this is ``ceil(T_real / window_size)``, the released grouping, and every real
frame lies in exactly one window. A window's frames past ``T_real`` are padding: they are zero features, masked
out of cross-attention (and, by default, out of the causal module).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from einops import rearrange


def count_windows(num_frames: int, window_size: int, window_stride: int) -> int:
    """Windows of a video with ``num_frames`` real frames (0 for an empty video).

    Raises:
        ValueError: ``num_frames`` not an int >= 0, ``window_size`` not an int >= 1, or ``window_stride`` not an
            int in ``[1, window_size]`` (the rule ``CausalQFormerConfig`` enforces).
    """
    for name, value, low in (("num_frames", num_frames, 0), ("window_size", window_size, 1)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
            raise ValueError(f"{name}: expected an int >= {low}, got {value!r}")
    if (
        isinstance(window_stride, bool)
        or not isinstance(window_stride, numbers.Integral)
        or not 1 <= window_stride <= window_size
    ):
        raise ValueError(
            f"window_stride: expected an int in [1, window_size={window_size}] (a larger stride would skip "
            f"frames), got {window_stride!r}"
        )
    if num_frames == 0:
        return 0
    return 1 + math.ceil(max(0, num_frames - window_size) / window_stride)


@dataclass(frozen=True)
class WindowPlan:
    """Where the Nw real windows of a batch come from.

    Attributes:
        batch_index: (Nw,) long, the video of each window.
        slot: (Nw,) long, the window's index within its video.
        start: (Nw,) long, its first frame.
        length: (Nw,) long, its real frames (``<= window_size``; fewer only in a video's last window).
        counts: Windows per video (host ints, length B).
        real_frames: ``length`` as host ints (for backends that pack variable-length windows).
    """

    batch_index: torch.Tensor
    slot: torch.Tensor
    start: torch.Tensor
    length: torch.Tensor
    counts: tuple[int, ...]
    real_frames: tuple[int, ...]

    @property
    def num_real(self) -> int:
        """Nw, the real windows in the batch."""
        return int(sum(self.counts))

    @property
    def max_windows(self) -> int:
        """W, the windows per video in the padded output (at least 1, so an all-padding batch has a shape)."""
        return max(1, *self.counts) if self.counts else 1


def plan_windows(
    lengths: Sequence[int], window_size: int, window_stride: int, device: torch.device | None = None
) -> WindowPlan:
    """Plan the windows of videos with ``lengths`` real frames each (host ints)."""
    batch_index, slot, start, length, counts = [], [], [], [], []
    for b, frames in enumerate(lengths):
        count = count_windows(int(frames), window_size, window_stride)
        counts.append(count)
        for k in range(count):
            first = k * window_stride
            batch_index.append(b)
            slot.append(k)
            start.append(first)
            length.append(min(window_size, int(frames) - first))

    def as_tensor(values: list[int]) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.long, device=device)

    return WindowPlan(
        as_tensor(batch_index),
        as_tensor(slot),
        as_tensor(start),
        as_tensor(length),
        tuple(counts),
        tuple(length),
    )


def gather_windows(
    features: torch.Tensor, plan: WindowPlan, window_size: int, window_stride: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The real windows of ``features`` (B, T, N, D).

    When every video has the same number of full, non-overlapping windows the result is a reshaped view (no copy);
    otherwise the windows are gathered.

    Returns:
        windows: (Nw, F, N, D), zero on padding frames.
        frame_valid: (Nw, F) bool, True on real frames.
    """
    batch = features.shape[0]
    offsets = torch.arange(window_size, device=features.device)  # (F,)
    frame_valid = offsets[None, :] < plan.length[:, None]  # (Nw, F)
    full = all(length == window_size for length in plan.real_frames)
    if (
        full
        and window_stride == window_size
        and len(set(plan.counts)) == 1
        and plan.num_real == batch * plan.counts[0]
    ):
        used = features[
            :, : plan.counts[0] * window_size
        ]  # windows in (video, slot) order, as the plan lists them
        return rearrange(used, "b (w f) n d -> (b w) f n d", f=window_size), frame_valid
    frames = (plan.start[:, None] + offsets[None, :]).clamp(max=features.shape[1] - 1)  # (Nw, F)
    windows = features[plan.batch_index[:, None], frames]  # (Nw, F, N, D)
    if not full:
        # Assignment, not a multiplication: padding frames may hold anything (even NaN) and must become exact
        # zeros. In place on the fresh gathered copy, touching only the padding frames (not a pass over all).
        windows[~frame_valid] = 0
    return windows, frame_valid


def scatter_windows(values: torch.Tensor, plan: WindowPlan, batch_size: int) -> torch.Tensor:
    """Place per-window ``values`` (Nw, ...) at their (video, slot): returns (B, W, ...), zero elsewhere."""
    out = values.new_zeros(batch_size, plan.max_windows, *values.shape[1:])
    return out.index_put((plan.batch_index, plan.slot), values)


def window_frame_ranges(plan: WindowPlan, batch_size: int) -> torch.Tensor:
    """(B, W, 2) long ``[start, end)`` real frames of every window; ``[0, 0)`` for padding windows."""
    ranges = torch.stack([plan.start, plan.start + plan.length], dim=-1)  # (Nw, 2)
    return scatter_windows(ranges, plan, batch_size)


def window_mask(plan: WindowPlan, batch_size: int) -> torch.Tensor:
    """(B, W) bool, True on real windows."""
    return scatter_windows(torch.ones_like(plan.slot, dtype=torch.bool), plan, batch_size)
