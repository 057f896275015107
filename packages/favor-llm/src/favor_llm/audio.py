"""Frozen audio encoders with chunking, and the trainable projections to the synchroniser's audio width.

Released FAVOR (Sec. 3.1) encodes speech and audio events with Whisper's encoder at 50 Hz and cuts audio at
Whisper's 30 s window. Here audio longer than the window is encoded in consecutive windows (chunks) whose features
are concatenated in time, so chunk ``k`` covers encoder steps ``[k * P, (k + 1) * P)`` and nothing is cut.

Shape legend: ``B`` batch, ``K`` chunks per sample (padded), ``M`` mel bins, ``L`` mel frames per chunk
(``2 * P`` for Whisper), ``P`` encoder steps per chunk, ``S`` encoder steps (padded), ``Da`` encoder width.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm
from transformers import PretrainedConfig

__all__ = ["AudioEncoder", "audio_steps", "chunk_samples", "num_chunks", "whisper_windows"]

#: Whisper's feature extractor hop (samples at 16 kHz); its encoder halves the mel frame rate (stride-2 conv).
WHISPER_HOP_LENGTH = 160
WHISPER_CONV_STRIDE = 2


def chunk_samples(
    config: PretrainedConfig, sample_rate: int = 16000, chunk_seconds: float | None = None
) -> int:
    """Audio samples one encoder chunk covers: the encoder's window (Whisper large: 1500 steps x 2 x 160 = 480000
    = 30 s), or ``chunk_seconds`` of it (`FavorConfig.audio_chunk_seconds`: each chunk is encoded alone, padded to
    the window, so a stream needs no audio past the chunk; see `favor_llm.streaming`).

    Raises:
        ValueError: ``chunk_seconds`` longer than the window or not a whole number of encoder steps.
    """
    if config.model_type != "whisper":
        raise ValueError(f"audio_configs: only Whisper encoders are supported, got {config.model_type!r}")
    del sample_rate  # Whisper's window is defined in samples at its own 16 kHz
    step = WHISPER_CONV_STRIDE * WHISPER_HOP_LENGTH
    window = int(config.max_source_positions) * step
    if chunk_seconds is None:
        return window
    samples = round(float(chunk_seconds) * 16000)
    if not 0 < samples <= window or samples % step or abs(samples - float(chunk_seconds) * 16000) > 1e-6:
        raise ValueError(
            f"audio_chunk_seconds: expected a multiple of {step / 16000:g} s (one encoder step) in (0, "
            f"{window / 16000:g}] (the encoder's window), got {chunk_seconds!r}"
        )
    return samples


def num_chunks(num_samples: int, samples_per_chunk: int) -> int:
    """Encoder windows needed for ``num_samples`` samples (0 for no audio)."""
    return math.ceil(num_samples / samples_per_chunk) if num_samples > 0 else 0


def audio_steps(num_samples: torch.Tensor | int, rate: float, sample_rate: int) -> torch.Tensor | int:
    """Encoder steps carrying real audio: ``ceil(num_samples * rate / sample_rate)`` (a partial step counts)."""
    if isinstance(num_samples, torch.Tensor):
        return torch.ceil(num_samples.double() * rate / sample_rate).long()
    return math.ceil(num_samples * rate / sample_rate)


def whisper_windows(
    fe: Any, audio: list[torch.Tensor | None], chunk_seconds: float | None = None
) -> torch.Tensor:
    """Waveforms -> ``(B, K, M, L)`` log-mel windows of ``fe.n_samples`` samples each (the last zero-padded), or of
    ``chunk_seconds`` of audio each, padded to the window (`FavorConfig.audio_chunk_seconds`)."""
    per_window = int(fe.n_samples)
    if chunk_seconds is not None:
        per_window = min(per_window, round(chunk_seconds * int(fe.sampling_rate)))
    windows, counts = [], []
    for a in audio:
        if a is None:
            counts.append(0)
            continue
        pieces = [a[s : s + per_window].numpy() for s in range(0, a.shape[0], per_window)]
        counts.append(len(pieces))
        windows.extend(pieces)
    feats = fe(windows, sampling_rate=fe.sampling_rate, return_tensors="pt")[
        "input_features"
    ]  # (sum K, M, L)
    out = feats.new_zeros(len(audio), max(counts), *feats.shape[1:])
    start = 0
    for b, c in enumerate(counts):
        out[b, :c] = feats[start : start + c]
        start += c
    return out


class AudioEncoder(nn.Module):
    """One frozen Whisper encoder run over consecutive windows: ``(B, K, M, L) -> (B, K * P, Da)``."""

    def __init__(self, config: PretrainedConfig, chunk_seconds: float | None = None) -> None:
        super().__init__()
        if config.model_type != "whisper":
            raise ValueError(f"audio_configs: only Whisper encoders are supported, got {config.model_type!r}")
        from transformers.models.whisper.modeling_whisper import WhisperEncoder

        self.encoder = WhisperEncoder(config)
        window_steps = int(config.max_source_positions)
        self.hidden_size = int(config.d_model)
        #: ``(M, L)`` of one log-mel window, as the encoder reads it.
        self.window_shape = (int(config.num_mel_bins), WHISPER_CONV_STRIDE * window_steps)
        #: Samples per chunk: the window, or `FavorConfig.audio_chunk_seconds` of audio padded to the window.
        self.samples_per_chunk = chunk_samples(config, chunk_seconds=chunk_seconds)
        #: Encoder steps a chunk fills (``P``; fewer than the window's with a shorter chunk).
        self.steps_per_chunk = self.samples_per_chunk // (WHISPER_CONV_STRIDE * WHISPER_HOP_LENGTH)

    @property
    def dtype(self) -> torch.dtype:
        return self.encoder.conv1.weight.dtype

    def forward(
        self, input_features: torch.Tensor, chunks: torch.Tensor, chunk_batch_size: int = 16
    ) -> torch.Tensor:
        """Encode the real chunks of every sample and lay them end to end.

        Args:
            input_features: ``(B, K, M, L)`` log-mel windows (padding windows are never encoded).
            chunks: ``(B,)`` real windows per sample.

        Returns:
            ``(B, K * P, Da)`` features; steps of padding windows are zero.
        """
        batch, max_chunks = input_features.shape[:2]
        real = torch.arange(max_chunks, device=chunks.device)[None, :] < chunks[:, None]  # (B, K)
        flat = input_features[real.to(input_features.device)]  # (sum K, M, L)
        out = input_features.new_zeros(
            batch, max_chunks, self.window_shape[1] // WHISPER_CONV_STRIDE, self.hidden_size, dtype=self.dtype
        )  # (B, K, window steps, Da)
        if flat.shape[0]:
            starts = range(0, flat.shape[0], chunk_batch_size)
            encoded = torch.cat(
                [
                    self.encoder(flat[i : i + chunk_batch_size].to(self.dtype)).last_hidden_state
                    for i in tqdm(
                        starts, desc="Encoding audio", unit="batch", disable=len(starts) <= 4, leave=False
                    )
                ]
            )  # (sum K, P, Da)
            out[real.to(out.device)] = encoded
        # A chunk shorter than the window fills only its first P steps (the rest encode padding).
        out = out[:, :, : self.steps_per_chunk]  # (B, K, P, Da)
        return out.reshape(batch, max_chunks * self.steps_per_chunk, self.hidden_size)

    def encode_batch(
        self, input_features: torch.Tensor | None, num_samples: torch.Tensor, steps: torch.Tensor
    ) -> torch.Tensor:
        """Log-mel windows -> ``(B, S, Da)`` encoder features, ``S`` the longest sample's real steps (zeros past
        each sample's ``steps``; ``S = 0`` when no sample has audio).

        Args:
            input_features: ``(B, K, M, L)`` windows (``None`` when no sample has audio).
            num_samples: ``(B,)`` audio samples per sample (they decide the windows to encode).
            steps: ``(B,)`` real encoder steps per sample (`audio_steps` of its samples).
        """
        batch = steps.shape[0]
        device = steps.device
        if input_features is None or batch == 0 or int(steps.max()) == 0:
            if input_features is None and batch and int(steps.max()) > 0:
                raise ValueError("input_features: missing, but audio_lengths say some samples have audio")
            return torch.zeros(batch, 0, self.hidden_size, dtype=self.dtype, device=device)
        if input_features.ndim != 4 or input_features.shape[0] != batch:
            raise ValueError(
                f"input_features: expected (batch={batch}, chunks, mel_bins, frames), got "
                f"{tuple(input_features.shape)}"
            )
        if tuple(input_features.shape[2:]) != self.window_shape:
            raise ValueError(
                f"input_features: each window must be (mel_bins, frames) = {self.window_shape} for this Whisper "
                f"encoder, got {tuple(input_features.shape[2:])} (a feature extractor with "
                f"feature_size={self.window_shape[0]} and n_samples={self.window_shape[1] * WHISPER_HOP_LENGTH})"
            )
        per_chunk = self.samples_per_chunk
        chunks = torch.div(num_samples + per_chunk - 1, per_chunk, rounding_mode="floor")  # (B,)
        if int(chunks.max()) > input_features.shape[1]:
            raise ValueError(
                f"input_features: audio_lengths={num_samples.tolist()} need {chunks.tolist()} windows of "
                f"{per_chunk} samples but input_features has {input_features.shape[1]}"
            )
        encoded = self(input_features.to(device), chunks)  # (B, K * P, Da)
        steps = steps.clamp(max=encoded.shape[1])
        encoded = encoded[:, : int(steps.max())]  # (B, S, Da)
        real = torch.arange(encoded.shape[1], device=device)[None, :] < steps[:, None]  # (B, S)
        return encoded * real[..., None].to(encoded.dtype)
