"""The frame-level temporal synchroniser of FAVOR (Sun et al., 2023, arXiv 2310.05863, Section 3.1).

FAVOR aligns audio-encoder features with video frames in time and joins them on the feature axis, so each
video frame carries the audio heard during it. The released code (``sequence_align_v2`` in
``model/openllama.py`` of BriansIDP/AudioVisualLLM) hard-codes 2 fps, 25 Whisper steps (50 Hz) per frame
padded to 32 slots, and pads the shorter stream at the end. ``mode="released"`` reproduces it exactly;
``mode="time"`` (the default) generalises it with an explicit time rule: any frame rate, any number of audio
streams at any rates, per-sample lengths, and an account of every audio step.

Shape legend (used in every docstring of this module):

- ``B``: batch size.
- ``T``: frames of the output; ``Tv``: frames of the visual input.
- ``N``: tokens (slots) per frame, ``tokens_per_frame``.
- ``Dv``: visual feature width; ``Da``: width of one audio stream; ``D = Dv + sum(Da)``.
- ``S``: steps of one audio stream; ``K``: number of audio streams.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from einops import rearrange
from torch import nn

from favor_avsync._clock import frames_for_seconds, frames_needed, step_frames
from favor_avsync._placement import place_stream, place_whole_ratio, released_features
from favor_avsync._validation import (
    check_audio_lengths,
    check_config,
    check_image,
    check_inputs,
    check_lengths,
    check_modality_mask,
)

Mode = Literal["time", "released"]
Overflow = Literal["error", "pool"]
Timeline = Literal["longest", "visual"]


@dataclass
class SyncOutput:
    """What `TemporalSynchroniser.sync` returns.

    Attributes:
        features: ``(B, T, N, D)`` with ``D = Dv + sum(Da)``: per frame, the ``N`` visual tokens joined on the
            feature axis with each audio stream's slots (in stream order). Audio slot ``i`` of frame ``t``
            holds the ``i``-th audio step of that frame; unused slots are zero.
        frame_mask: ``(B, T)`` bool, True for frames that carry content of the sample (visual or audio);
            False for frames that only pad the batch.
        frame_times: ``(B, T, 2)`` float64 seconds, ``[start, end)`` of each frame: ``[t / fps, (t + 1) / fps)``.
        modality_mask: ``(B, 1 + K)`` the mask that was applied (columns: visual, then each audio stream).
        dropped: ``(B,)`` int64, audio steps (all streams) that fell after the last frame of their sample
            and are therefore not in ``features`` (only with ``timeline="visual"``).
    """

    features: torch.Tensor
    frame_mask: torch.Tensor
    frame_times: torch.Tensor
    modality_mask: torch.Tensor
    dropped: torch.Tensor

    @property
    def tokens(self) -> torch.Tensor:
        """``(B, T * N, D)``: the features as one token sequence (the released ``concat_features`` layout)."""
        return rearrange(self.features, "b t n d -> b (t n) d")

    @property
    def token_mask(self) -> torch.Tensor:
        """``(B, T * N)`` bool: ``frame_mask`` expanded to every token of the frame."""
        n = self.features.shape[2]
        return self.frame_mask.repeat_interleave(n, dim=1)


class TemporalSynchroniser(nn.Module):
    """Aligns audio feature streams with video frames and joins them per frame (no trainable parameters).

    Time rule (``mode="time"``): frame ``t`` covers ``[t / fps, (t + 1) / fps)`` seconds. Audio step ``j`` of
    a stream at rate ``r`` covers ``[j / r, (j + 1) / r)`` and belongs to the frame whose interval contains
    its centre ``(j + 1/2) / r`` (a centre on a boundary belongs to the later frame). Indices are computed
    with exact fractions, so 50 Hz against 29.97 or 15 fps, or a BEATs-style rate, never lands a step one
    frame off through rounding. Within a frame the frame's steps fill slots ``0 .. k-1`` in order and the
    other slots are zero (the released layout). If a frame gets more steps than ``tokens_per_frame`` slots,
    ``overflow="error"`` raises and ``overflow="pool"`` averages runs of consecutive steps into the slots
    (slot ``s`` of a frame with ``k > N`` steps averages steps ``i`` with ``floor(i * N / k) == s``).

    Frame count: with ``timeline="longest"`` (released behaviour) a sample has as many frames as its longer
    stream needs, and the shorter stream is zero-padded at the end. With ``timeline="visual"`` the visual
    stream sets the frame count and audio steps after its last frame are counted in ``SyncOutput.dropped``.
    Every audio step within ``audio_lengths`` is in exactly one frame or counted as dropped.

    ``mode="released"`` reproduces ``sequence_align_v2`` of the released code bit for bit: each stream's
    steps are cut into consecutive groups of ``rate / fps`` steps (which must be an integer, at most
    ``tokens_per_frame``; 25 for Whisper at 2 fps), the shorter stream is zero-padded at the end, slots are
    zero-padded to ``tokens_per_frame``, and the modality mask multiplies each stream. It has no per-sample
    lengths, and the step count must be a multiple of ``rate / fps``.

    Audio only: pass a visual tensor with zero frames, ``(B, 0, N, Dv)``, and (as the released code does)
    a modality mask with 0 in the visual column; the audio sets the frame count. ``num_frames`` and
    ``frames_for_duration`` give the frame count if you prefer a zero visual tensor of full length.

    Video only: pass an audio tensor with zero steps, ``(B, 0, Da)``, and 0 in that stream's mask column.

    Images: an image is a 1-frame video, or ``repeat_image`` copies of it (the released code uses 60);
    `image_as_video` makes the visual tensor.

    Args:
        fps: Frame rate of the visual stream (frames per second), > 0.
        audio_rates: One rate (steps per second, > 0) per audio stream, in the order of ``audio`` in
            `sync`. Whisper's encoder gives 50 steps per second.
        tokens_per_frame: Visual tokens per frame ``N``; also the number of audio slots per frame.
        mode: ``"time"`` (the time rule above) or ``"released"`` (exactly the released ``sequence_align_v2``).
        overflow: What ``mode="time"`` does when a frame has more audio steps than slots: ``"error"`` or
            ``"pool"``.
        repeat_image: Frames an image becomes in `image_as_video` (>= 1).
        timeline: ``"longest"`` (the longer stream sets the frame count; released) or ``"visual"`` (the visual
            stream does; later audio is dropped and counted). Only for ``mode="time"``.

    Example:
        >>> import torch
        >>> sync = TemporalSynchroniser(fps=2.0, audio_rates=(50.0,))
        >>> out = sync(torch.randn(1, 4, 32, 8), torch.randn(1, 100, 6))
        >>> tuple(out.features.shape)
        (1, 4, 32, 14)
    """

    def __init__(
        self,
        fps: float = 2.0,
        audio_rates: Sequence[float] = (50.0,),
        tokens_per_frame: int = 32,
        mode: Mode = "time",
        overflow: Overflow = "error",
        repeat_image: int = 1,
        timeline: Timeline = "longest",
    ) -> None:
        super().__init__()
        self._fps, self._rates = check_config(
            fps, audio_rates, tokens_per_frame, mode, overflow, repeat_image, timeline
        )
        self.fps = float(fps)
        self.audio_rates = tuple(float(r) for r in audio_rates)
        self.tokens_per_frame = tokens_per_frame
        self.mode: Mode = mode
        self.overflow: Overflow = overflow
        self.repeat_image = repeat_image
        self.timeline: Timeline = timeline
        #: Use the view-and-copy path for streams with a whole number of steps per frame (``mode="time"``);
        #: False forces the plain scatter path everywhere (same result; for checking and debugging).
        self.fast_path = True

    def extra_repr(self) -> str:
        return (
            f"fps={self.fps}, audio_rates={self.audio_rates}, tokens_per_frame={self.tokens_per_frame}, "
            f"mode={self.mode!r}, overflow={self.overflow!r}, repeat_image={self.repeat_image}, "
            f"timeline={self.timeline!r}"
        )

    # ------------------------------------------------------------------ helpers for callers

    @property
    def num_streams(self) -> int:
        """Number of audio streams ``K``."""
        return len(self._rates)

    def num_frames(self, audio_steps: int, stream: int = 0) -> int:
        """Frames needed to hold ``audio_steps`` steps of audio stream ``stream``.

        In ``mode="time"`` this is the frame of the last step's centre plus one; in ``mode="released"`` it
        is ``ceil(audio_steps / (rate / fps))``.

        Args:
            audio_steps: Steps of the stream (>= 0).
            stream: Index into ``audio_rates``.

        Returns:
            The frame count.
        """
        if isinstance(audio_steps, bool) or not isinstance(audio_steps, int) or audio_steps < 0:
            raise ValueError(f"audio_steps must be an int >= 0, got {audio_steps!r}")
        if not 0 <= stream < self.num_streams:
            raise ValueError(f"stream must be in [0, {self.num_streams}), got {stream!r}")
        rate = self._rates[stream]
        if self.mode == "released":
            per_frame = int(rate / self._fps)
            return -(-audio_steps // per_frame)
        return frames_needed(audio_steps, self._fps, rate)

    def frames_for_duration(self, seconds: float) -> int:
        """Frames whose interval starts before ``seconds``: ``ceil(seconds * fps)``.

        This is the frame count `favor_avsync.load_media` returns for a video stream of that length.
        """
        if not isinstance(seconds, (int, float)) or not math.isfinite(seconds) or seconds < 0:
            raise ValueError(f"seconds must be a finite number >= 0, got {seconds!r}")
        return frames_for_seconds(float(seconds), self._fps)

    def frame_times(self, frames: int, *, device: torch.device | str | None = None) -> torch.Tensor:
        """``(frames, 2)`` float64: ``[t / fps, (t + 1) / fps)`` for each frame ``t``."""
        # Computed on the CPU (exact division) and then moved, so every device gets the same bits: CUDA divides by
        # a scalar through its reciprocal, which can differ in the last bit.
        t = torch.arange(frames + 1, dtype=torch.float64)
        edges = t * self._fps.denominator / self._fps.numerator
        return torch.stack([edges[:-1], edges[1:]], dim=-1).to(device)

    def image_as_video(self, image: torch.Tensor) -> torch.Tensor:
        """An image's visual tokens as a video of ``repeat_image`` identical frames.

        Args:
            image: ``(B, N, Dv)`` or ``(B, 1, N, Dv)`` visual tokens of one image per sample.

        Returns:
            ``(B, repeat_image, N, Dv)`` (a broadcast view; ``.contiguous()`` it before writing into it).
        """
        image = check_image(image, self.tokens_per_frame)  # (B, 1, N, Dv)
        return image.expand(-1, self.repeat_image, -1, -1)

    # ------------------------------------------------------------------ the synchroniser

    def forward(
        self,
        visual: torch.Tensor,
        audio: torch.Tensor | Sequence[torch.Tensor],
        visual_lengths: torch.Tensor | Sequence[int] | None = None,
        audio_lengths: torch.Tensor | Sequence[int] | Sequence[torch.Tensor | Sequence[int]] | None = None,
        modality_mask: torch.Tensor | None = None,
    ) -> SyncOutput:
        """Same as `sync` (so the synchroniser is callable and composes as an ``nn.Module``)."""
        return self.sync(visual, audio, visual_lengths, audio_lengths, modality_mask)

    def sync(
        self,
        visual: torch.Tensor,
        audio: torch.Tensor | Sequence[torch.Tensor],
        visual_lengths: torch.Tensor | Sequence[int] | None = None,
        audio_lengths: torch.Tensor | Sequence[int] | Sequence[torch.Tensor | Sequence[int]] | None = None,
        modality_mask: torch.Tensor | None = None,
    ) -> SyncOutput:
        """Align the audio streams with the visual frames and join them per frame.

        Args:
            visual: ``(B, Tv, N, Dv)`` visual tokens per frame at ``fps``. ``Tv`` may be 0 (audio only).
            audio: ``(B, S, Da)``, or a list of ``K`` such tensors (one per entry of ``audio_rates``; each has
                its own ``S`` and ``Da``). ``S`` may be 0 (no audio).
            visual_lengths: ``(B,)`` real frames per sample (<= ``Tv``); default all ``Tv``. Frames after a
                sample's length are treated as padding and zeroed.
            audio_lengths: Real steps per sample: ``(B,)`` for one stream, or a list of ``K`` ``(B,)`` (or a
                ``(B, K)`` tensor) for several; default all ``S``. Steps after a length are ignored.
            modality_mask: ``(B, 1 + K)``; column 0 multiplies the visual stream, column ``1 + k`` audio
                stream ``k`` (0 zeroes it, as released). Default all ones.

        Returns:
            A `SyncOutput` with ``features (B, T, N, D)``.

        Raises:
            ValueError: On a wrong rank, batch size, token count, dtype or device, a length outside
                ``[0, tensor length]``, a modality mask of the wrong shape, or (``overflow="error"``) a frame
                with more audio steps than slots.
        """
        streams = check_inputs(visual, audio, self.tokens_per_frame, self.audio_rates)
        batch, tv = visual.shape[0], visual.shape[1]
        device = visual.device
        v_len = check_lengths(visual_lengths, batch, tv, "visual_lengths", device)
        a_lens = check_audio_lengths(audio_lengths, streams, device)
        mask = check_modality_mask(modality_mask, batch, self.num_streams, device)
        if self.mode == "released":
            if visual_lengths is not None or audio_lengths is not None:
                raise ValueError(
                    "mode='released' has no per-sample lengths (the released sequence_align_v2 takes none); "
                    f"got visual_lengths={visual_lengths!r}, audio_lengths={audio_lengths!r}. "
                    "Use mode='time' for padded batches."
                )
            return self._sync_released(visual, streams, mask)
        return self._sync_time(visual, streams, v_len, a_lens, mask)

    # ------------------------------------------------------------------ released mode

    def _sync_released(
        self, visual: torch.Tensor, streams: list[torch.Tensor], mask: torch.Tensor
    ) -> SyncOutput:
        per_frame = [int(rate / self._fps) for rate in self._rates]
        features = released_features(visual, streams, per_frame, mask, self.tokens_per_frame)
        batch, frames = features.shape[0], features.shape[1]
        return SyncOutput(
            features=features,
            frame_mask=torch.ones(batch, frames, dtype=torch.bool, device=visual.device),
            frame_times=self.frame_times(frames, device=visual.device).expand(batch, -1, -1),
            modality_mask=mask,
            dropped=torch.zeros(batch, dtype=torch.int64, device=visual.device),
        )

    # ------------------------------------------------------------------ time mode

    def _sync_time(
        self,
        visual: torch.Tensor,
        streams: list[torch.Tensor],
        v_len: torch.Tensor,
        a_lens: list[torch.Tensor],
        mask: torch.Tensor,
    ) -> SyncOutput:
        n = self.tokens_per_frame
        batch, device = visual.shape[0], visual.device

        # Frames each sample needs: (B,) int64.
        frame_of = [step_frames(s.shape[1], self._fps, r, device) for s, r in zip(streams, self._rates)]
        if self.timeline == "visual":
            sample_frames = v_len.clone()
        else:
            sample_frames = v_len.clone()
            for frames_k, len_k in zip(frame_of, a_lens):
                if frames_k.numel() == 0:
                    continue
                last = frames_k[(len_k - 1).clamp(min=0)] + 1  # frame of the last real step, + 1
                sample_frames = torch.maximum(sample_frames, torch.where(len_k > 0, last, 0))
        frames = int(sample_frames.max()) if batch > 0 else 0

        # One output tensor, written stream by stream (no padded copies and no concatenation).
        widths = [visual.shape[-1], *(s.shape[-1] for s in streams)]
        features = _allocate(visual, (batch, frames, n, sum(widths)), self)
        t_idx = torch.arange(frames, device=device)

        # Visual: (B, Tv, N, Dv) -> frames [0, min(Tv, T)), padding frames (t >= visual_lengths) zeroed.
        tv = min(visual.shape[1], frames)
        vis = visual[:, :tv]
        if bool((v_len < tv).any()):
            real_visual = t_idx[None, :tv] < v_len[:, None]  # (B, tv)
            vis = torch.where(
                real_visual[:, :, None, None], vis, torch.zeros((), dtype=vis.dtype, device=device)
            )
        features[:, :tv, :, : widths[0]] = vis * mask[:, 0, None, None, None]

        dropped = torch.zeros(batch, dtype=torch.int64, device=device)
        offset = widths[0]
        for k, (stream, frames_k, len_k) in enumerate(zip(streams, frame_of, a_lens)):
            target = features[..., offset : offset + widths[k + 1]]  # (B, T, N, Da) view
            per_frame = self._rates[k] / self._fps
            if self.fast_path and per_frame.denominator == 1 and per_frame <= n:
                dropped += place_whole_ratio(
                    target, stream, int(per_frame), len_k, sample_frames, mask[:, k + 1]
                )
            else:
                placed, dropped_k, crowded = place_stream(
                    stream, frames_k, len_k, sample_frames, frames, n, pool=self.overflow == "pool"
                )
                if crowded is not None:
                    b, t, count = crowded
                    raise ValueError(
                        f"{'audio' if self.num_streams == 1 else f'audio[{k}]'} has {count} steps in frame {t} of "
                        f"sample {b} but tokens_per_frame={n} slots ({float(self._rates[k]):g} Hz against "
                        f"{float(self._fps):g} fps); use overflow='pool' to average them into the slots, a higher "
                        "fps, or more tokens_per_frame"
                    )
                target.copy_(placed * mask[:, k + 1, None, None, None])
                dropped += dropped_k
            offset += widths[k + 1]

        return SyncOutput(
            features=features,
            frame_mask=t_idx[None, :] < sample_frames[:, None],
            frame_times=self.frame_times(frames, device=device).expand(batch, -1, -1),
            modality_mask=mask,
            dropped=dropped,
        )


def _allocate(
    like: torch.Tensor, shape: tuple[int, int, int, int], sync: TemporalSynchroniser
) -> torch.Tensor:
    """Zeros of ``shape`` (B, T, N, D) like ``like``; an impossible size is a ValueError that says where it came from.

    (Finite but extreme rates, e.g. fps=1e6 against 0.001 Hz audio, ask for ~1e9 frames per audio step.)
    """
    try:
        return like.new_zeros(shape)
    except RuntimeError as err:  # torch.OutOfMemoryError is a RuntimeError too
        size = math.prod(shape) * like.element_size() / 2**30
        raise ValueError(
            f"the synchronised output (B, T, N, D) = {shape} ({size:.3g} GiB) cannot be allocated on {like.device}: "
            f"T={shape[1]} frames at fps={sync.fps:g} for audio at {sync.audio_rates} steps per second; check "
            "fps and audio_rates, or sync shorter inputs"
        ) from err


__all__ = ["SyncOutput", "TemporalSynchroniser"]
