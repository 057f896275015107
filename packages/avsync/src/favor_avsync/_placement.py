"""Writing one audio stream's steps into the frame slots, once the time rule has said which frame each step is in.

The time rule itself (which frame a step belongs to, how many frames a sample has) lives in synchroniser.py and
_clock.py; this module only moves values. Shape legend as in synchroniser.py: ``B`` batch, ``S`` steps of the
stream, ``T`` output frames, ``N`` slots per frame, ``Da`` the stream's width.
"""

from __future__ import annotations

import torch
from einops import rearrange


def place_whole_ratio(
    target: torch.Tensor,
    stream: torch.Tensor,
    per_frame: int,
    length: torch.Tensor,
    sample_frames: torch.Tensor,
    weight: torch.Tensor,
) -> torch.Tensor:
    """Fast path when a frame holds a whole number ``k <= N`` of steps: step ``j`` is slot ``j % k`` of frame
    ``j // k`` (what the centre rule gives for an integer ratio), so placing is a view and one copy.

    Args:
        target: ``(B, T, N, Da)`` zeros, written in place.
        stream: ``(B, S, Da)``.
        per_frame: ``k``, steps per frame.
        length: ``(B,)`` real steps per sample.
        sample_frames: ``(B,)`` frames per sample.
        weight: ``(B,)`` the stream's modality-mask column.

    Returns:
        ``(B,)`` int64, steps dropped because they fall after the sample's last frame. Equal to `place_stream`
        (tested); ``TemporalSynchroniser.fast_path = False`` forces that plain path.
    """
    steps = stream.shape[1]
    frames = target.shape[1]
    # Steps a sample keeps: before its length and before the end of its last frame.
    keep = torch.minimum(length, sample_frames * per_frame)  # (B,)
    dropped = (length - keep).clamp(min=0)
    steps_in = min(steps, frames * per_frame)
    values = stream[:, :steps_in]
    if bool((keep < steps_in).any()):
        j = torch.arange(steps_in, device=stream.device)
        values = torch.where(
            (j[None, :] < keep[:, None])[:, :, None], values, torch.zeros((), dtype=values.dtype)
        )
    values = values * weight[:, None, None]
    whole = steps_in // per_frame
    if whole:
        # (B, whole * k, Da) -> (B, whole, k, Da): consecutive steps fill a frame's first k slots.
        target[:, :whole, :per_frame] = rearrange(
            values[:, : whole * per_frame], "b (t k) d -> b t k d", k=per_frame
        )
    rest = steps_in - whole * per_frame
    if rest:
        target[:, whole, :rest] = values[:, whole * per_frame :]
    return dropped.to(torch.int64)


def place_stream(
    stream: torch.Tensor,
    frame_of: torch.Tensor,
    length: torch.Tensor,
    sample_frames: torch.Tensor,
    frames: int,
    slots: int,
    pool: bool,
) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int, int] | None]:
    """Scatter one stream into frame slots, step ``j`` into frame ``frame_of[j]``.

    Args:
        stream: ``(B, S, Da)``.
        frame_of: ``(S,)`` int64, non-decreasing: each step's frame.
        length: ``(B,)`` real steps per sample.
        sample_frames: ``(B,)`` frames per sample; steps of later frames are dropped (counted).
        frames: ``T``.
        slots: ``N``.
        pool: Average a frame's ``k > N`` steps into its ``N`` slots (slot ``s`` takes steps ``i`` with
            ``floor(i * N / k) == s``); without it such a frame is reported instead of placed.

    Returns:
        ``(B, T, N, Da)`` placed steps, ``(B,)`` int64 dropped-step counts, and (without ``pool``) the first
        crowded frame as ``(sample, frame, steps)`` or None. With a crowded frame the placed tensor is not valid.
    """
    batch, steps, dim = stream.shape
    device = stream.device
    if steps == 0 or frames == 0:
        real = torch.arange(steps, device=device)[None, :] < length[:, None]
        return stream.new_zeros(batch, frames, slots, dim), real.sum(dim=1).to(torch.int64), None

    j = torch.arange(steps, device=device)
    # First and one-past-last step of each step's frame (frame_of is sorted): (S,).
    first = torch.searchsorted(frame_of, frame_of, right=False)
    end = torch.searchsorted(frame_of, frame_of, right=True)
    slot_in_frame = j - first  # (S,)

    real = j[None, :] < length[:, None]  # (B, S)
    kept = real & (frame_of[None, :] < sample_frames[:, None])  # (B, S)
    dropped = (real & ~kept).sum(dim=1).to(torch.int64)
    # Steps of the frame that are real for this sample (the last frame may be cut by the length): (B, S).
    in_frame = torch.minimum(end[None, :], length[:, None]) - first[None, :]

    crowded = kept & (in_frame > slots)
    pooling = bool(crowded.any())
    if pooling and not pool:
        b, s = (int(i) for i in crowded.nonzero()[0])
        return stream.new_zeros(0), dropped, (b, int(frame_of[s]), int(in_frame[b, s]))
    if pooling:
        # Adaptive average pooling of the frame's k > N steps into N slots.
        slot = torch.where(
            in_frame > slots, slot_in_frame[None, :] * slots // in_frame.clamp(min=1), slot_in_frame
        )
    else:
        slot = slot_in_frame[None, :].expand(batch, -1)

    dump = frames * slots  # steps not kept go to one extra row that is cut off afterwards
    dest = torch.where(kept, frame_of[None, :] * slots + slot, dump)  # (B, S)
    rows = torch.arange(batch, device=device)[:, None].expand(-1, steps)
    values = stream
    if pooling:
        # Counts and sums in at least float32: a bf16/fp16 running sum of hundreds of steps stalls (a
        # constant came out 2% low) and bf16 counts past 256 are not exact. Each value is divided by its count
        # before the sum, so values near the dtype's maximum average without overflowing to inf.
        acc = torch.promote_types(stream.dtype, torch.float32)
        count = torch.zeros(batch, dump + 1, dtype=acc, device=device)
        count.index_put_((rows, dest), torch.ones((), dtype=acc, device=device), accumulate=True)
        values = stream.to(acc) / count.gather(1, dest)[:, :, None]
    out = values.new_zeros(batch, dump + 1, dim).index_put((rows, dest), values, accumulate=pooling)
    # (B, T * N, Da) -> (B, T, N, Da)
    out = rearrange(out[:, :dump], "b (t n) d -> b t n d", n=slots).to(stream.dtype)
    return out, dropped, None


def released_features(
    visual: torch.Tensor, streams: list[torch.Tensor], per_frame: list[int], mask: torch.Tensor, slots: int
) -> torch.Tensor:
    """The released ``sequence_align_v2``: consecutive groups of ``per_frame[k]`` steps per frame, the shorter
    stream zero-padded at the end, slots zero-padded to ``N``, each stream multiplied by its mask column.

    Args:
        visual: ``(B, Tv, N, Dv)``.
        streams: ``K`` tensors ``(B, S_k, Da_k)``; ``S_k`` a multiple of ``per_frame[k]``.
        per_frame: Steps per frame of each stream (``rate / fps``, whole, ``<= N``).
        mask: ``(B, 1 + K)`` modality mask.
        slots: ``N``.

    Returns:
        ``(B, T, N, Dv + sum(Da))`` with ``T`` the longest stream's frames.
    """
    grouped = []
    for k, (stream, k_steps) in enumerate(zip(streams, per_frame)):
        if stream.shape[1] % k_steps != 0:
            raise ValueError(
                f"mode='released' needs audio[{k}] to have a multiple of {k_steps} steps (its rate / fps), "
                f"got shape {tuple(stream.shape)}"
            )
        # (B, S, Da) -> (B, S / per_frame, per_frame, Da): consecutive groups, as the released view().
        grouped.append(rearrange(stream, "b (t k) d -> b t k d", k=k_steps))
    frames = max([visual.shape[1], *(g.shape[1] for g in grouped)])
    # In the features' dtype: a float64 (or float32) mask must not promote bf16/float32 features.
    weight = mask.to(visual.dtype)
    parts = [pad_frames_and_slots(visual, frames, slots) * weight[:, 0, None, None, None]]
    for k, g in enumerate(grouped):
        parts.append(pad_frames_and_slots(g, frames, slots) * weight[:, k + 1, None, None, None])
    return torch.cat(parts, dim=-1)


def pad_frames_and_slots(x: torch.Tensor, frames: int, slots: int) -> torch.Tensor:
    """Zero-pad ``(B, t, k, D)`` at the end of the frame and slot axes to ``(B, frames, slots, D)``."""
    t, k = x.shape[1], x.shape[2]
    if t == frames and k == slots:
        return x
    return torch.nn.functional.pad(x, (0, 0, 0, slots - k, 0, frames - t))


__all__ = ["pad_frames_and_slots", "place_stream", "place_whole_ratio", "released_features"]
