"""Frozen audio encoders with chunking, and the trainable projections to the synchroniser's audio width.

Released FAVOR (Sec. 3.1) encodes speech and audio events with Whisper's encoder at 50 Hz and cuts audio at
Whisper's 30 s window. Here audio longer than the window is encoded in consecutive windows (chunks) whose features
are concatenated in time, so chunk ``k`` covers encoder steps ``[k * P, (k + 1) * P)`` and nothing is cut.

Shape legend: ``B`` batch, ``K`` chunks per sample (padded), ``M`` mel bins, ``L`` mel frames per chunk
(``2 * P`` for Whisper), ``P`` encoder steps per chunk, ``S`` encoder steps (padded), ``Da`` encoder width.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from tqdm.auto import tqdm
from transformers import PretrainedConfig

__all__ = ["AudioEncoder", "audio_steps", "chunk_samples", "num_chunks"]

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


class AudioEncoder(nn.Module):
    """One frozen Whisper encoder run over consecutive windows: ``(B, K, M, L) -> (B, K * P, Da)``."""

    def __init__(self, config: PretrainedConfig) -> None:
        super().__init__()
        if config.model_type != "whisper":
            raise ValueError(f"audio_configs: only Whisper encoders are supported, got {config.model_type!r}")
        from transformers.models.whisper.modeling_whisper import WhisperEncoder

        self.encoder = WhisperEncoder(config)
        self.steps_per_chunk = int(config.max_source_positions)
        self.hidden_size = int(config.d_model)

    @property
    def dtype(self) -> torch.dtype:
        return self.encoder.conv1.weight.dtype

    def forward(
        self,
        input_features: torch.Tensor,
        chunks: torch.Tensor,
        chunk_batch_size: int = 16,
        steps_per_chunk: int | None = None,
    ) -> torch.Tensor:
        """Encode the real chunks of every sample and lay them end to end.

        Args:
            input_features: ``(B, K, M, L)`` log-mel windows (padding windows are never encoded).
            chunks: ``(B,)`` real windows per sample.
            chunk_batch_size: windows per encoder call.
            steps_per_chunk: encoder steps kept from each window (``C <= P``; default ``P``): a chunk shorter than
                the window (`FavorConfig.audio_chunk_seconds`) fills only its first ``C`` steps.

        Returns:
            ``(B, K * C, Da)`` features; steps of padding windows are zero.
        """
        batch, max_chunks = input_features.shape[:2]
        real = torch.arange(max_chunks, device=chunks.device)[None, :] < chunks[:, None]  # (B, K)
        flat = input_features[real.to(input_features.device)]  # (sum K, M, L)
        out = input_features.new_zeros(
            batch, max_chunks, self.steps_per_chunk, self.hidden_size, dtype=self.dtype
        )  # (B, K, P, Da)
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
        keep = self.steps_per_chunk if steps_per_chunk is None else int(steps_per_chunk)
        return out[:, :, :keep].reshape(batch, max_chunks * keep, self.hidden_size)
