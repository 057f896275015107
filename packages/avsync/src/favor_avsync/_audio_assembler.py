"""The audio assembler: the first audio stream as mono float32 at ``sample_rate`` on the clip's clock.

All channels are averaged to mono and resampled; an audio stream that starts later than the window is padded with
silence at the front, gaps in its timestamps are filled with silence, and the encoder's trailing padding is cut
where the container declares the stream's end. Shapes: ``S`` output samples.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from favor_avsync._source import (
    MediaSource,
    declared_stream_end,
    decode,
    pick_streams,
    progress_bar,
    seconds,
    seek,
)
from favor_avsync.limits import MediaLimits

#: Encoder delay (priming samples) assumed for raw ADTS AAC, which cannot declare it (FFmpeg's and most AAC-LC
#: encoders use 1024).
ADTS_PRIMING = 1024
#: Seconds decoded before ``start`` after an audio seek, so the first kept packets decode as in a full pass
#: (AAC and MP3 need one to a few frames, Opus recommends 80 ms).
AUDIO_PREROLL = 0.5


class AudioAssembler:
    """Assembles the first audio stream of ``source`` within a window of its timestamps.

    Args:
        av: The PyAV module.
        source: The file.
        sample_rate: Output samples per second.
        limits: `MediaLimits` (``max_duration`` applies here).
    """

    def __init__(self, av: Any, source: MediaSource, sample_rate: int, limits: MediaLimits) -> None:
        self.av = av
        self.source = source
        self.sample_rate = sample_rate
        self.limits = limits
        self.name = source.name
        self._chunks: list[np.ndarray] = []  # resampled mono pieces, contiguous from the first kept sample
        self._produced = 0  # samples in _chunks

    def assemble(
        self, w0: float, w1: float, show: bool, total: float | None
    ) -> tuple[torch.Tensor, float | None, bool]:
        """Mono audio of the window ``[w0, w1)`` (file timestamps, seconds).

        Args:
            w0: Start of the window; sample 0 is here.
            w1: End of the window (``inf``: to the end of the stream).
            show: Show a progress bar.
            total: Seconds expected, for the bar.

        Returns:
            ``(S,)`` float32 samples; the audio's end (file clock; None when the stream ended before the window);
            whether content lay beyond ``w1``.
        """
        sr = self.sample_rate
        bar = progress_bar(show, total, f"audio {Path(self.name).name}")
        self._chunks, self._produced = [], 0
        first: float | None = None
        expected: float | None = None  # time of the next input sample if the stream is contiguous
        resampler = None
        beyond = False
        try:
            with self.source.open(self.av) as container:
                _, stream = pick_streams(container)
                # Raw ADTS AAC has no container to say how many priming samples the encoder put first (MP4 and
                # Matroska do, and the decoder drops them); assume the usual AAC encoder delay of 1024 samples.
                # Shifting every timestamp back by the delay puts the priming before 0, where the window cuts it.
                adts = container.format.name == "aac" and stream.codec_context.name == "aac"
                shift = ADTS_PRIMING / stream.codec_context.sample_rate if adts else 0.0
                declared_end = declared_stream_end(stream)
                if w0 > 1.0:  # jump near the start instead of decoding everything before it
                    # ... but a little before it: lossy codecs decode a packet from the ones before it (MDCT
                    # overlap, the MP3 bit reservoir, Opus pre-roll); the pre-roll frames end before w0, skipped.
                    seek(container, stream, w0 - AUDIO_PREROLL)
                # The first frame after a seek is trimmed by the decoder (Opus pre-skip) and its timestamp rounded
                # twice: it does not anchor the sample clock below.
                untrusted = w0 > 1.0
                for frame in decode(self.av, container, stream, self.name):
                    t = seconds(frame)
                    t = (expected if expected is not None else 0.0) if t is None else t - shift
                    if expected is not None and abs(t - expected) <= 1e-3:
                        # Contiguous: follow the decoded samples, not timestamps rounded to the container's tick
                        # (WebM's 1 ms puts Opus packets 0.5 ms off after the pre-skip).
                        t = expected
                    frame_end = t + frame.samples / frame.sample_rate
                    if frame_end <= w0:
                        expected = None if untrusted else frame_end
                        untrusted = False
                        continue
                    untrusted = False
                    if t >= w1:
                        beyond = True
                        break
                    # before a gap or a late start is filled with silence
                    self.limits.check_timestamp(self.name, "audio", t - w0)
                    if first is None:
                        first = t
                    elif expected is not None and t > expected + 1e-3:
                        # A gap in the timestamps: fill it with silence to stay on the clock. The resampler still
                        # holds samples from before the gap: drain it first so they are counted and come before
                        # the silence (a fresh one takes over after the gap).
                        if resampler is not None:
                            self._add(resampler.resample(None))
                            resampler = None
                        gap = round((t - first) * sr) - self._produced
                        if gap > 0:
                            self._chunks.append(np.zeros(gap, dtype=np.float32))
                            self._produced += gap
                    expected = frame_end
                    if resampler is None:
                        resampler = self.av.AudioResampler(format="fltp", layout=frame.layout.name, rate=sr)
                    self._add(resampler.resample(frame))
                    if bar is not None:
                        bar.update(max(0.0, frame_end - w0 - bar.n))
                if resampler is not None:
                    self._add(resampler.resample(None))
        finally:
            if bar is not None:
                bar.close()
        if first is None and beyond:  # the stream starts at or after w1: silent over the whole window
            return torch.zeros(round((w1 - w0) * sr), dtype=torch.float32), w1, beyond
        if first is None:  # the stream ended before the window
            return torch.zeros(0, dtype=torch.float32), None, beyond
        samples = np.concatenate(self._chunks) if self._chunks else np.zeros(0, dtype=np.float32)
        self._chunks = []
        if declared_end is not None and first + samples.shape[0] / sr > declared_end:
            # The encoder's trailing padding (AAC fills its last 1024-sample frame) is not content: an MP4 edit
            # list declares where the stream ends. Trust it only for such a small excess.
            excess = first + samples.shape[0] / sr - declared_end
            if excess <= 0.5:
                samples = samples[: max(0, round((declared_end - first) * sr))]
        # Place on the clock: silence before a late start, drop what lies before w0 or after w1.
        offset = round((first - w0) * sr)
        if offset > 0:
            samples = np.concatenate([np.zeros(offset, dtype=np.float32), samples])
        elif offset < 0:
            samples = samples[-offset:]
        if math.isfinite(w1):
            limit = round((w1 - w0) * sr)
            if samples.shape[0] > limit:
                beyond |= samples.shape[0] - limit > sr // 1000  # more than 1 ms of content past the end
                samples = samples[:limit]
        end = w0 + samples.shape[0] / sr
        return torch.from_numpy(np.ascontiguousarray(samples)), end, beyond

    def _add(self, frames: list[Any]) -> None:
        """Append resampled frames, channels averaged to mono (in float64, then float32)."""
        for out in frames:
            mono = out.to_ndarray().mean(axis=0, dtype=np.float64).astype(np.float32)
            self._chunks.append(mono)
            self._produced += mono.shape[0]


__all__ = ["ADTS_PRIMING", "AUDIO_PREROLL", "AudioAssembler"]
