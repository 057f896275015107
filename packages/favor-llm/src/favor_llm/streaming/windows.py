"""`MediaWindows`: media arriving in pieces -> the projected AV tokens of each Q-Former window, once it is complete.

Frames are encoded by the frozen frame encoder as they arrive; audio by `ChunkedAudioEncoder` each time a chunk is
complete. Window ``w`` covers frames ``[w x stride, w x stride + size)`` and the audio of the same seconds; it
closes when its last frame and its last audio chunk are in (for the streams the session has), and is then turned
into AV tokens by `FavorModel.get_av_features` on the frozen features (projections, synchroniser, causal Q-Former,
language projection: the offline code path). Features no later window reads are released.

Shape legend: ``N`` tokens per frame, ``Dv`` visual width, ``C`` encoder steps per audio chunk, ``Da`` audio encoder
width, ``W`` windows, ``Q`` queries, ``E`` LLM width.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from .audio_chunks import ChunkedAudioEncoder, as_waveform
from .spans import WindowSpan

__all__ = ["MediaWindows"]


class MediaWindows:
    """Buffers of encoded frames and audio chunks, cut into the causal Q-Former's windows.

    Args:
        model: the `FavorModel`.
        processor: its `FavorProcessor` (frame processor, feature extractors, layout, Q-Former tokenizer).
        video: the stream has frames.
        audio: the stream has audio.
        chunk_seconds: seconds of audio encoded at a time; must divide the window's stride and size.
        instruction: text for an instruction-aware frame encoder (``None``: none).

    Raises:
        ValueError: a chunking that does not divide the windows, or a frame rate with a fractional number of
            audio samples per frame.
    """

    def __init__(
        self,
        model: Any,
        processor: Any,
        video: bool,
        audio: bool,
        chunk_seconds: float,
        instruction: str | None,
    ) -> None:
        config = model.config
        self.model, self.processor = model, processor
        self.video, self.audio = bool(video), bool(audio)
        self.fps = float(config.fps)
        self.sample_rate = int(config.audio_sample_rate)
        self.window_size = int(config.causal_qformer_config.window_size)
        self.window_stride = int(config.causal_qformer_config.window_stride)
        spf = self.sample_rate / self.fps
        if spf != int(spf):
            raise ValueError(
                f"fps: {self.fps} gives {spf} audio samples per frame; streaming needs a whole number"
            )
        self.samples_per_frame = int(spf)
        self.audio_encoder = ChunkedAudioEncoder(model, processor, chunk_seconds)
        chunk = self.audio_encoder.chunk_samples
        for name, frames in (("window_stride", self.window_stride), ("window_size", self.window_size)):
            if (frames * self.samples_per_frame) % chunk:
                raise ValueError(
                    f"chunk_seconds: {chunk_seconds} s must divide the Q-Former's {name} "
                    f"({frames / self.fps:g} s) so that a window's audio is whole chunks"
                )
        self._qformer_ids = self._instruction_ids(instruction)
        self._frames: list[torch.Tensor] = []  # frame features from `_frame_base` on, each (N, Dv)
        self._frame_base = 0
        self._chunks: list[
            list[torch.Tensor]
        ] = []  # audio chunks from `_chunk_base` on: one (C, Da) per encoder
        self._chunk_base = 0
        self._pending_audio = np.zeros(0, dtype=np.float32)  # samples not yet in a full chunk
        self.frames_seen = 0
        self.samples_seen = 0
        self.closed = 0  # windows closed so far

    # ------------------------------------------------------------------------------------------------- state
    @property
    def media_seconds(self) -> float:
        """Media received so far (the longer stream; seconds)."""
        return max(
            self.frames_seen / self.fps if self.video else 0.0,
            self.samples_seen / self.sample_rate if self.audio else 0.0,
        )

    def memory(self) -> dict[str, int]:
        """``buffered_frames``, ``buffered_chunks`` (encoded, waiting for a window), ``pending_samples``."""
        return {
            "buffered_frames": len(self._frames),
            "buffered_chunks": len(self._chunks),
            "pending_samples": int(self._pending_audio.shape[0]),
        }

    # ------------------------------------------------------------------------------------------------ adding
    def add_frames(self, frames: Any, frame_times: Any = None) -> None:
        """Encode frames that follow the ones before (see `StreamingSession.feed`)."""
        t = torch.as_tensor(np.asarray(frames)) if not isinstance(frames, torch.Tensor) else frames
        if t.ndim == 4 and t.shape[1] != 3 and t.shape[-1] == 3:
            t = t.permute(0, 3, 1, 2)
        if t.ndim != 4 or t.shape[1] != 3 or t.dtype != torch.uint8:
            raise ValueError(
                f"frames: expected uint8 (frames, height, width, 3) or (frames, 3, height, width), got "
                f"{t.dtype} {tuple(t.shape)}"
            )
        if frame_times is not None:
            times = np.asarray(frame_times, dtype=np.float64).reshape(-1)
            expected = (self.frames_seen + np.arange(t.shape[0])) / self.fps
            if times.shape != expected.shape or np.abs(times - expected).max(initial=0.0) >= 0.5 / self.fps:
                raise ValueError(
                    f"frame_times: the stream takes consecutive frames at {self.fps:g} fps, so these "
                    f"{t.shape[0]} frames must be at {np.round(expected, 3).tolist()} s; got "
                    f"{np.round(times, 3).tolist()} (resample to {self.fps:g} fps first)"
                )
        if t.shape[0] == 0:
            return
        pixels = self.processor.image_processor(images=list(t), return_tensors="pt")["pixel_values"]
        ids, mask = self._qformer_ids
        encoded = self.model.encode_frozen_media(
            pixel_values=pixels[None], qformer_input_ids=ids, qformer_attention_mask=mask
        )
        self._frames.extend(encoded["visual_features"][0].unbind(0))  # F x (N, Dv)
        self.frames_seen += int(t.shape[0])

    def add_audio(self, audio: Any) -> None:
        """Add samples; every chunk they complete is encoded now."""
        waveform = as_waveform(audio, self.sample_rate)
        self._pending_audio = np.concatenate([self._pending_audio, waveform.numpy()])
        self.samples_seen += int(waveform.shape[0])
        chunk = self.audio_encoder.chunk_samples
        while self._pending_audio.shape[0] >= chunk:
            piece, self._pending_audio = self._pending_audio[:chunk], self._pending_audio[chunk:]
            self._chunks.append(self.audio_encoder.encode(torch.from_numpy(piece.copy())))

    # ----------------------------------------------------------------------------------------------- windows
    def frames_of(self, index: int) -> tuple[int, int]:
        """``[start, end)`` frames of window ``index``."""
        start = index * self.window_stride
        return start, start + self.window_size

    def complete(self) -> Iterator[tuple[WindowSpan, torch.Tensor]]:
        """Each window now complete, in order, as ``(span, (Q, E) AV embeddings)``. A window counts as closed (and
        its media is released) only when the consumer asks for the next one, so a consumer that fails on a
        window (e.g. a full context) gets it again on the next call."""
        while self._ready(self.closed):
            start, end = self.frames_of(self.closed)
            embeds, _ = self._encode(start, self.window_size, end * self.samples_per_frame, partial=None)
            yield WindowSpan(self.closed, start / self.fps, end / self.fps, 0, embeds.shape[0]), embeds
            self.closed += 1
            self._release(self.frames_of(self.closed)[0])

    def tail(self) -> tuple[torch.Tensor, list[WindowSpan]]:
        """The partial window(s) after the last closed one, as offline makes them: ``(W x Q, E)`` embeddings and
        their spans (none when the media ends exactly at a closed window)."""
        total = self.processor.layout.timeline_frames(
            self.frames_seen if self.video else 0, self.samples_seen if self.audio else 0
        )
        closed_end = self.frames_of(self.closed - 1)[1] if self.closed else 0
        if total <= closed_end:
            return torch.zeros(0, self.model.config.text_config.hidden_size), []
        start = self.frames_of(self.closed)[0]
        frames = self.frames_seen - start if self.video else 0
        partial = None
        if self.audio and self._pending_audio.shape[0]:
            partial = torch.from_numpy(self._pending_audio.copy())
        embeds, mask = self._encode(start, frames, self.samples_seen, partial)
        q = self.model.config.num_queries
        spans = []
        for w in range(int(mask.sum())):
            first = start + w * self.window_stride
            end = min(first + self.window_size, total)
            spans.append(WindowSpan(self.closed + w, first / self.fps, end / self.fps, 0, q, partial=True))
        return embeds, spans

    def _ready(self, index: int) -> bool:
        _, end = self.frames_of(index)
        video_ready = not self.video or self.frames_seen >= end
        audio_ready = not self.audio or self.samples_seen >= end * self.samples_per_frame
        return video_ready and audio_ready

    def _encode(
        self, start: int, frames: int, sample_end: int, partial: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Frames ``[start, start + frames)`` and audio samples up to ``sample_end`` (+ a partial chunk) ->
        ``(W x Q, E)`` projected AV tokens and the ``(W,)`` window mask."""
        sample_start = start * self.samples_per_frame
        kwargs: dict[str, Any] = {"frame_lengths": [frames if self.video else 0]}
        if self.video and frames:
            offset = start - self._frame_base
            kwargs["visual_features"] = torch.stack(self._frames[offset : offset + frames])[
                None
            ]  # (1, F, N, Dv)
        samples = sample_end - sample_start if self.audio else 0
        kwargs["audio_lengths"] = [samples]
        if samples > 0:
            chunk = self.audio_encoder.chunk_samples
            first = sample_start // chunk - self._chunk_base
            pieces = self._chunks[first : first + math.ceil(samples / chunk)]
            if partial is not None:
                pieces = [*pieces, self.audio_encoder.encode(partial)]
            for k in range(len(self.audio_encoder.steps_per_chunk)):
                key = "audio_features" if k == 0 else f"audio_features_{k}"
                kwargs[key] = torch.cat([p[k] for p in pieces])[None]  # (1, steps, Da)
        if "visual_features" not in kwargs and "audio_features" not in kwargs:
            return torch.zeros(0, self.model.config.text_config.hidden_size), torch.zeros(0, dtype=torch.bool)
        av = self.model.get_av_features(**kwargs)  # av_embeds (1, W, Q, E), window_mask (1, W)
        projected = av.av_embeds[av.window_mask]  # (W, Q, E)
        return projected.reshape(-1, projected.shape[-1]), av.window_mask[0]

    def _release(self, next_start: int) -> None:
        """Forget frames and audio chunks that no later window reads (memory stays bounded)."""
        drop = max(0, min(next_start, self.frames_seen) - self._frame_base)
        del self._frames[:drop]
        self._frame_base += drop
        chunk = self.audio_encoder.chunk_samples
        drop = min(
            max(0, (next_start * self.samples_per_frame) // chunk - self._chunk_base), len(self._chunks)
        )
        del self._chunks[:drop]
        self._chunk_base += drop

    def _instruction_ids(self, instruction: str | None) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        tokenizer = getattr(self.processor, "qformer_tokenizer", None)
        if instruction is None or tokenizer is None:
            return None, None
        enc = tokenizer(
            [instruction],
            padding=True,
            truncation=True,
            max_length=self.processor.qformer_max_length,
            return_tensors="pt",
        )
        return enc["input_ids"], enc["attention_mask"]
