"""Audio encoded chunk by chunk as it arrives, so a stream needs no audio past the current chunk.

Whisper-style encoders read a fixed window (30 s released). Offline, FAVOR fills each window with 30 s of audio;
a stream cannot wait 30 s for a window, so each chunk of ``chunk_seconds`` (the Q-Former window's stride by
default) is encoded alone, padded to the encoder window as the feature extractor pads a short clip, and its
``C = chunk_seconds x rate`` steps are kept. `FavorConfig.audio_chunk_seconds` makes offline inference cut audio
the same way (the processor cuts the waveform into such chunks, the model keeps ``C`` steps of each), which is
what makes a stream's AV tokens equal the offline ones. The cost: the encoder runs on a full padded window per
chunk (6x the offline encoder work for 5 s chunks of a 30 s Whisper window).

Shape legend: ``S`` samples, ``C`` encoder steps per chunk, ``Da`` encoder width, ``M`` mel bins, ``L`` mel frames.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..audio import audio_steps, chunk_samples

__all__ = ["ChunkedAudioEncoder", "as_waveform"]


class ChunkedAudioEncoder:
    """Turns a growing mono waveform into the frozen audio features of every encoder, one chunk at a time.

    Args:
        model: a `FavorModel` (its frozen audio encoders run through `FavorModel.encode_frozen_media`).
        processor: its `FavorProcessor` (one feature extractor per audio encoder).
        chunk_seconds: seconds per chunk (a whole number of encoder steps, at most the encoder window).

    Raises:
        ValueError: a chunk that is not a whole number of steps of every encoder.
    """

    def __init__(self, model: Any, processor: Any, chunk_seconds: float) -> None:
        config = model.config
        self.model = model
        self.feature_extractors = list(processor.feature_extractors)
        self.sample_rate = int(config.audio_sample_rate)
        sizes = {chunk_samples(c, self.sample_rate, chunk_seconds) for c in config.audio_configs}
        self.chunk_samples = sizes.pop()  # Whisper windows are defined in samples, so every encoder agrees
        self.steps_per_chunk: list[int] = []
        for k, rate in enumerate(config.audio_feature_rates):
            exact = self.chunk_samples * rate / self.sample_rate
            if abs(exact - round(exact)) > 1e-9:
                raise ValueError(
                    f"audio_chunk_seconds: {chunk_seconds} s is {exact:g} steps of audio encoder {k} at {rate:g} Hz; "
                    "a chunk must hold a whole number of steps"
                )
            self.steps_per_chunk.append(round(exact))
        self.rates = [float(r) for r in config.audio_feature_rates]

    def encode(self, waveform: torch.Tensor) -> list[torch.Tensor]:
        """Encode one chunk (``S <= chunk_samples`` samples; a short one is padded, as offline).

        Args:
            waveform: ``(S,)`` float32 at the model's sample rate.

        Returns:
            One ``(ceil(S x rate / sample_rate), Da)`` tensor per audio encoder (before its trainable projection).
        """
        samples = int(waveform.shape[0])
        if not 0 < samples <= self.chunk_samples:
            raise ValueError(
                f"waveform: expected 1 to {self.chunk_samples} samples (one chunk), got {samples}"
            )
        features = []
        for fe in self.feature_extractors:
            mel = fe([waveform.numpy()], sampling_rate=self.sample_rate, return_tensors="pt")[
                "input_features"
            ]
            features.append(mel[:, None])  # (1, 1, M, L): one sample, one chunk
        encoded = self.model.encode_frozen_media(
            input_features=features if len(features) > 1 else features[0],
            audio_lengths=torch.tensor([samples]),
        )
        out = []
        for k in range(len(self.feature_extractors)):
            key = "audio_features" if k == 0 else f"audio_features_{k}"
            feats = encoded[key][0]  # (steps, Da)
            steps = int(audio_steps(samples, self.rates[k], self.sample_rate))
            out.append(feats[:steps])
        return out


def as_waveform(audio: Any, sample_rate: int) -> torch.Tensor:
    """Mono float32 ``(S,)`` from a float (-1..1) or int16 PCM array / tensor; a clear error otherwise."""
    array = audio.detach().cpu().numpy() if isinstance(audio, torch.Tensor) else np.asarray(audio)
    if array.ndim == 2 and 1 in array.shape:
        array = array.reshape(-1)
    if array.ndim != 1:
        raise ValueError(
            f"audio: expected a mono waveform (samples,) at {sample_rate} Hz, got shape {array.shape}"
        )
    if array.dtype == np.int16:
        array = array.astype(np.float32) / 32768.0
    elif not np.issubdtype(array.dtype, np.floating):
        raise ValueError(f"audio: expected float samples in [-1, 1] or int16 PCM, got {array.dtype}")
    array = array.astype(np.float32, copy=False)
    if not np.isfinite(array).all():
        raise ValueError("audio: holds NaN or inf")
    return torch.from_numpy(np.ascontiguousarray(array))
