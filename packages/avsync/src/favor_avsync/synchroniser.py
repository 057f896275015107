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
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from einops import rearrange
from torch import nn

from favor_avsync._clock import as_fraction, frames_for_seconds, frames_needed, step_frames

Mode = Literal["time", "released"]
Overflow = Literal["error", "pool"]
Timeline = Literal["longest", "visual"]

_MODES = ("time", "released")
_OVERFLOWS = ("error", "pool")
_TIMELINES = ("longest", "visual")


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
        self._fps = as_fraction(fps, "fps")
        if isinstance(audio_rates, (int, float)) or not isinstance(audio_rates, Sequence):
            raise ValueError(f"audio_rates must be a sequence of rates, e.g. (50.0,), got {audio_rates!r}")
        if len(audio_rates) == 0:
            raise ValueError("audio_rates must name at least one audio stream, got an empty sequence")
        self._rates = tuple(as_fraction(r, f"audio_rates[{i}]") for i, r in enumerate(audio_rates))
        if (
            isinstance(tokens_per_frame, bool)
            or not isinstance(tokens_per_frame, int)
            or tokens_per_frame < 1
        ):
            raise ValueError(f"tokens_per_frame must be an int >= 1, got {tokens_per_frame!r}")
        if mode not in _MODES:
            raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
        if overflow not in _OVERFLOWS:
            raise ValueError(f"overflow must be one of {_OVERFLOWS}, got {overflow!r}")
        if isinstance(repeat_image, bool) or not isinstance(repeat_image, int) or repeat_image < 1:
            raise ValueError(f"repeat_image must be an int >= 1, got {repeat_image!r}")
        if timeline not in _TIMELINES:
            raise ValueError(f"timeline must be one of {_TIMELINES}, got {timeline!r}")
        if mode == "released":
            if timeline != "longest":
                raise ValueError(f"timeline must be 'longest' with mode='released', got {timeline!r}")
            for i, rate in enumerate(self._rates):
                per_frame = rate / self._fps
                if per_frame.denominator != 1 or per_frame > tokens_per_frame:
                    raise ValueError(
                        f"mode='released' needs audio_rates[{i}] / fps to be a whole number of steps per frame "
                        f"<= tokens_per_frame={tokens_per_frame}; got audio_rates[{i}]={float(rate)!r}, "
                        f"fps={float(self._fps)!r} ({float(per_frame):g} steps per frame)"
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
        if not isinstance(image, torch.Tensor):
            raise ValueError(f"image must be a torch.Tensor, got {type(image).__name__}")
        if image.ndim == 3:
            image = image.unsqueeze(1)
        if image.ndim != 4 or image.shape[1] != 1:
            raise ValueError(f"image must have shape (B, N, Dv) or (B, 1, N, Dv), got {tuple(image.shape)}")
        if image.shape[2] != self.tokens_per_frame:
            raise ValueError(
                f"image must have tokens_per_frame={self.tokens_per_frame} tokens (dim 2), "
                f"got shape {tuple(image.shape)}"
            )
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
        streams = self._check_inputs(visual, audio)
        batch, tv = visual.shape[0], visual.shape[1]
        device = visual.device
        v_len = self._check_lengths(visual_lengths, batch, tv, "visual_lengths", device)
        a_lens = self._check_audio_lengths(audio_lengths, streams, device)
        mask = self._check_modality_mask(modality_mask, batch, device)
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
        n = self.tokens_per_frame
        batch = visual.shape[0]
        grouped = []
        for k, (stream, rate) in enumerate(zip(streams, self._rates)):
            per_frame = int(rate / self._fps)
            if stream.shape[1] % per_frame != 0:
                raise ValueError(
                    f"mode='released' needs audio[{k}] to have a multiple of {per_frame} steps "
                    f"({float(rate):g} Hz / {float(self._fps):g} fps), got shape {tuple(stream.shape)}"
                )
            # (B, S, Da) -> (B, S / per_frame, per_frame, Da): consecutive groups, as the released view().
            grouped.append(rearrange(stream, "b (t k) d -> b t k d", k=per_frame))
        frames = max([visual.shape[1], *(g.shape[1] for g in grouped)])
        # In the features' dtype: a float64 (or float32) mask must not promote bf16/float32 features.
        weight = mask.to(visual.dtype)
        parts = [_pad_frames_and_slots(visual, frames, n) * weight[:, 0, None, None, None]]
        for k, g in enumerate(grouped):
            parts.append(_pad_frames_and_slots(g, frames, n) * weight[:, k + 1, None, None, None])
        features = torch.cat(parts, dim=-1)
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
        features = visual.new_zeros(batch, frames, n, sum(widths))
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
                dropped += self._place_whole_ratio(
                    target, stream, int(per_frame), len_k, sample_frames, mask[:, k + 1]
                )
            else:
                placed, dropped_k = self._place_stream(k, stream, frames_k, len_k, sample_frames, frames)
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

    @staticmethod
    def _place_whole_ratio(
        target: torch.Tensor,
        stream: torch.Tensor,
        per_frame: int,
        length: torch.Tensor,
        sample_frames: torch.Tensor,
        weight: torch.Tensor,
    ) -> torch.Tensor:
        """Fast path when a frame holds a whole number ``k <= N`` of steps: step ``j`` is slot ``j % k`` of frame
        ``j // k`` (what the centre rule gives for an integer ratio), so placing is a view and one copy.

        Writes into ``target (B, T, N, Da)``; returns the dropped-step count ``(B,)``. Equal to `_place_stream`
        (tested); ``fast_path = False`` forces that plain path.
        """
        batch, steps, dim = stream.shape
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
            target[:, :whole, :per_frame] = values[:, : whole * per_frame].reshape(
                batch, whole, per_frame, dim
            )
        rest = steps_in - whole * per_frame
        if rest:
            target[:, whole, :rest] = values[:, whole * per_frame :]
        return dropped.to(torch.int64)

    def _place_stream(
        self,
        k: int,
        stream: torch.Tensor,
        frame_of: torch.Tensor,
        length: torch.Tensor,
        sample_frames: torch.Tensor,
        frames: int,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Scatter one stream ``(B, S, Da)`` into frame slots ``(B, T, N, Da)``; count dropped steps ``(B,)``."""
        n = self.tokens_per_frame
        batch, steps, dim = stream.shape
        device = stream.device
        if steps == 0 or frames == 0:
            real = torch.arange(steps, device=device)[None, :] < length[:, None]
            return stream.new_zeros(batch, frames, n, dim), real.sum(dim=1).to(torch.int64)

        j = torch.arange(steps, device=device)
        # First and one-past-last step of each step's frame (frame_of is sorted): (S,).
        first = torch.searchsorted(frame_of, frame_of, right=False)
        end = torch.searchsorted(frame_of, frame_of, right=True)
        slot_in_frame = j - first  # (S,)

        real = j[None, :] < length[:, None]  # (B, S)
        kept = real & (frame_of[None, :] < sample_frames[:, None])  # (B, S)
        dropped = (real & ~kept).sum(dim=1)
        # Steps of the frame that are real for this sample (the last frame may be cut by the length): (B, S).
        in_frame = torch.minimum(end[None, :], length[:, None]) - first[None, :]

        crowded = kept & (in_frame > n)
        pooling = bool(crowded.any())
        if pooling and self.overflow == "error":
            b, s = (int(i) for i in crowded.nonzero()[0])
            raise ValueError(
                f"{'audio' if self.num_streams == 1 else f'audio[{k}]'} has {int(in_frame[b, s])} steps in frame {int(frame_of[s])} of sample {b} but "
                f"tokens_per_frame={n} slots ({float(self._rates[k]):g} Hz against {float(self._fps):g} fps); "
                "use overflow='pool' to average them into the slots, a higher fps, or more tokens_per_frame"
            )
        if pooling:
            # Adaptive average pooling of the frame's k > N steps into N slots.
            slot = torch.where(
                in_frame > n, slot_in_frame[None, :] * n // in_frame.clamp(min=1), slot_in_frame
            )
        else:
            slot = slot_in_frame[None, :].expand(batch, -1)

        dump = frames * n  # steps not kept go to one extra row that is cut off afterwards
        dest = torch.where(kept, frame_of[None, :] * n + slot, dump)  # (B, S)
        rows = torch.arange(batch, device=device)[:, None].expand(-1, steps)
        values = stream
        if pooling:
            # Counts and sums in at least float32: a bf16/fp16 running sum of hundreds of steps stalls (a
            # constant came out 2% low) and bf16 counts past 256 are not exact.
            acc = torch.promote_types(stream.dtype, torch.float32)
            count = torch.zeros(batch, dump + 1, dtype=acc, device=device)
            count.index_put_((rows, dest), torch.ones((), dtype=acc, device=device), accumulate=True)
            values = stream.to(acc) / count.gather(1, dest)[:, :, None]
        out = values.new_zeros(batch, dump + 1, dim).index_put((rows, dest), values, accumulate=pooling)
        out = out[:, :dump].reshape(batch, frames, n, dim).to(stream.dtype)
        return out, dropped.to(torch.int64)

    # ------------------------------------------------------------------ input checks

    def _check_inputs(
        self, visual: torch.Tensor, audio: torch.Tensor | Sequence[torch.Tensor]
    ) -> list[torch.Tensor]:
        if not isinstance(visual, torch.Tensor):
            raise ValueError(
                f"visual must be a torch.Tensor of shape (B, Tv, N, Dv), got {type(visual).__name__}; for audio "
                "only, pass a tensor with zero frames, shape (B, 0, N, Dv)"
            )
        if visual.ndim != 4:
            raise ValueError(f"visual must have shape (B, Tv, N, Dv) (4 dims), got {tuple(visual.shape)}")
        if visual.shape[2] != self.tokens_per_frame:
            raise ValueError(
                f"visual must have tokens_per_frame={self.tokens_per_frame} tokens per frame (dim 2), got "
                f"shape {tuple(visual.shape)}"
            )
        if not visual.is_floating_point():
            raise ValueError(f"visual must be a floating-point tensor, got dtype {visual.dtype}")
        if isinstance(audio, torch.Tensor):
            streams = [audio]
        elif isinstance(audio, Sequence) and all(isinstance(a, torch.Tensor) for a in audio):
            streams = list(audio)
        else:
            raise ValueError(
                f"audio must be a tensor (B, S, Da) or a list of them, got {type(audio).__name__}; for video only, "
                "pass a tensor with zero steps, shape (B, 0, Da)"
            )
        if len(streams) != self.num_streams:
            raise ValueError(
                f"audio must have one tensor per entry of audio_rates={self.audio_rates} ({self.num_streams}), "
                f"got {len(streams)}"
            )
        for k, s in enumerate(streams):
            name = "audio" if self.num_streams == 1 else f"audio[{k}]"
            if s.ndim != 3:
                raise ValueError(f"{name} must have shape (B, S, Da) (3 dims), got {tuple(s.shape)}")
            if s.shape[0] != visual.shape[0]:
                raise ValueError(
                    f"{name} has batch size {s.shape[0]} but visual has {visual.shape[0]} "
                    f"(shapes {tuple(s.shape)} and {tuple(visual.shape)})"
                )
            if s.dtype != visual.dtype:
                raise ValueError(
                    f"{name} has dtype {s.dtype} but visual has {visual.dtype}; cast one of them"
                )
            if s.device != visual.device:
                raise ValueError(f"{name} is on {s.device} but visual is on {visual.device}")
        return streams

    @staticmethod
    def _check_lengths(
        lengths: torch.Tensor | Sequence[int] | None, batch: int, size: int, name: str, device: torch.device
    ) -> torch.Tensor:
        if lengths is None:
            return torch.full((batch,), size, dtype=torch.int64, device=device)
        if isinstance(lengths, torch.Tensor):
            if lengths.is_floating_point() or lengths.is_complex() or lengths.dtype == torch.bool:
                raise ValueError(f"{name} must hold integers, got dtype {lengths.dtype}")
            t = lengths.to(device=device, dtype=torch.int64)
        else:
            try:
                values = list(lengths)
            except TypeError as err:
                raise ValueError(f"{name} must be a (B,) sequence of ints, got {lengths!r}") from err
            # as_tensor(..., dtype=int64) would truncate 1.5 to 1 silently: only integers are lengths.
            if not all(_is_integer(v) for v in values):
                raise ValueError(f"{name} must hold integers, got {values!r}")
            t = torch.as_tensor(values, dtype=torch.int64, device=device)
        if t.shape != (batch,):
            raise ValueError(
                f"{name} must have shape ({batch},) (one length per sample), got {tuple(t.shape)}"
            )
        if batch and (int(t.min()) < 0 or int(t.max()) > size):
            raise ValueError(f"{name} must be in [0, {size}] (the tensor's length), got {t.tolist()}")
        return t

    def _check_audio_lengths(
        self,
        lengths: torch.Tensor | Sequence[int] | Sequence[torch.Tensor | Sequence[int]] | None,
        streams: list[torch.Tensor],
        device: torch.device,
    ) -> list[torch.Tensor]:
        batch = streams[0].shape[0]
        if lengths is None:
            per_stream: list = [None] * len(streams)
        elif len(streams) == 1 and not _is_nested(lengths):
            per_stream = [lengths]
        elif isinstance(lengths, torch.Tensor):
            if lengths.ndim != 2 or lengths.shape[1] != len(streams):
                raise ValueError(
                    f"audio_lengths must be a list of {len(streams)} (B,) lengths or a (B, {len(streams)}) tensor, "
                    f"got shape {tuple(lengths.shape)}"
                )
            per_stream = list(lengths.unbind(1))
        else:
            per_stream = list(lengths)
            if len(per_stream) != len(streams):
                raise ValueError(
                    f"audio_lengths must hold one (B,) length per audio stream ({len(streams)}), "
                    f"got {len(per_stream)} entries"
                )
        out = []
        for k, (s, lk) in enumerate(zip(streams, per_stream)):
            name = "audio_lengths" if len(streams) == 1 else f"audio_lengths[{k}]"
            out.append(self._check_lengths(lk, batch, s.shape[1], name, device))
        return out

    def _check_modality_mask(
        self, mask: torch.Tensor | None, batch: int, device: torch.device
    ) -> torch.Tensor:
        width = 1 + self.num_streams
        if mask is None:
            return torch.ones(batch, width, dtype=torch.int64, device=device)
        if not isinstance(mask, torch.Tensor):
            try:
                mask = torch.as_tensor(mask)
            except (TypeError, ValueError, RuntimeError) as err:
                raise ValueError(f"modality_mask must be a ({batch}, {width}) tensor, got {mask!r}") from err
        if mask.shape != (batch, width):
            raise ValueError(
                f"modality_mask must have shape (B, 1 + n_audio_streams) = ({batch}, {width}) "
                f"(columns: visual, then each audio stream), got {tuple(mask.shape)}"
            )
        return mask.to(device)


def _is_integer(value: object) -> bool:
    """An int (Python, NumPy, or a 0-dim integer tensor), not a bool or a float."""
    if isinstance(value, torch.Tensor):
        return value.ndim == 0 and not (
            value.is_floating_point() or value.is_complex() or value.dtype == torch.bool
        )
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_nested(lengths: object) -> bool:
    """True for per-stream lengths: a 2-D tensor or a sequence of sequences/tensors."""
    if isinstance(lengths, torch.Tensor):
        return lengths.ndim == 2
    return isinstance(lengths, Sequence) and any(isinstance(x, (Sequence, torch.Tensor)) for x in lengths)


def _pad_frames_and_slots(x: torch.Tensor, frames: int, slots: int) -> torch.Tensor:
    """Zero-pad ``(B, t, k, D)`` at the end of the frame and slot axes to ``(B, frames, slots, D)``."""
    t, k = x.shape[1], x.shape[2]
    if t == frames and k == slots:
        return x
    return torch.nn.functional.pad(x, (0, 0, 0, slots - k, 0, frames - t))


__all__ = ["SyncOutput", "TemporalSynchroniser"]
