"""`FavorMediaEncoder`: media -> causal Q-Former tokens (Sun et al., 2023, Sec. 3.1-3.2).

It holds every part between the raw media and the LLM projection, in two stages::

    frozen (encode_frozen_media, no gradients; cacheable per clip):
        pixel_values (B, F, C, H, W) --vision (FrameEncoder)------------> visual_features (B, T, N, Dv)
        input_features (B, K, M, L)  --audio_encoders[k] (Whisper)------> audio_features (B, S, Da)
    trainable (forward):
        audio_features --audio_projections[k]--> (B, S, Dp)
        synchroniser(visual, audio)            --> features (B, T, N, Dv + Dp), frame_mask (B, T)
        causal_qformer(features, frame_mask)   --> tokens (B, W, Q, H), window_mask (B, W), diversity loss
    with ``config.av_fusion == "separate"`` (no synchronisation, the ablation) the last step is instead
        causal_qformer(features[..., :Dv]) ++ audio_qformer(features[..., Dv:]) --> tokens (B, 2W, Q, H)

Modalities follow the released modality-mask conventions: a missing stream is zero (video only: no audio steps
and its audio column of the modality mask is 0; audio only: zero frames and the visual column 0; an image is one
frame repeated over ``repeat_image`` frames, or over the audio's frames when it comes with audio).

Shape legend: ``B`` batch, ``F`` distinct frames given, ``T`` frames after synchronisation, ``N`` tokens per
frame, ``Dv`` visual width, ``Da`` audio encoder width, ``Dp`` projected audio width, ``W`` windows, ``Q`` queries,
``H`` Q-Former width, ``K`` audio windows (chunks), ``M`` mel bins, ``L`` mel frames per chunk, ``S`` encoder
steps.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers.utils import ModelOutput

from favor_avsync import TemporalSynchroniser
from favor_qformer import CausalQFormer, diversity_loss

from .audio import AudioEncoder, audio_steps
from .configuration import FavorConfig
from .media_checks import (
    FROZEN_FEATURE_NAMES,
    MAX_AUDIO_ENCODERS,
    RAW_MEDIA_NAMES,
    audio_feature_key,
    batch_size_of,
    check_batch,
    media_counts,
    per_encoder,
)
from .vision import FrameEncoder

__all__ = ["FavorMediaEncoder", "MediaEncoderOutput"]


@dataclass
class MediaEncoderOutput(ModelOutput):
    """Output of `FavorMediaEncoder`.

    Attributes:
        av_tokens: ``(B, W, Q, H)`` causal Q-Former tokens.
        window_mask: ``(B, W)`` real windows.
        diversity_loss: the Q-Former diversity loss over real windows (scalar).
    """

    av_tokens: torch.Tensor | None = None
    window_mask: torch.Tensor | None = None
    diversity_loss: torch.Tensor | None = None


class FavorMediaEncoder(nn.Module):
    """Frozen frame and audio encoders, trainable audio projections, the synchroniser and the causal Q-Former.

    Submodules: ``vision`` (`FrameEncoder`, frozen), ``audio_encoders`` (frozen Whisper encoders),
    ``audio_projections`` (trainable), ``synchroniser`` (no parameters), ``causal_qformer``
    (`favor_qformer.CausalQFormer`, trainable) and, with ``av_fusion="separate"`` only, ``audio_qformer``.
    """

    def __init__(self, config: FavorConfig) -> None:
        super().__init__()
        self.config = config
        self.vision = FrameEncoder(config)
        self.audio_encoders = nn.ModuleList(
            [AudioEncoder(c, config.audio_chunk_seconds) for c in config.audio_configs]
        )
        self.audio_projections = nn.ModuleList(
            [nn.Linear(enc.hidden_size, config.audio_stream_width) for enc in self.audio_encoders]
        )
        self.synchroniser = TemporalSynchroniser(
            fps=config.fps,
            audio_rates=tuple(config.audio_feature_rates),
            tokens_per_frame=config.tokens_per_frame,
            mode=config.sync_mode,
            overflow=config.sync_overflow,
            repeat_image=int(config.repeat_image),
        )
        # A copy: run-time switches (gradient checkpointing) set on the module never reach the saved config.
        self.causal_qformer = CausalQFormer(copy.deepcopy(config.causal_qformer_config))
        if config.audio_qformer_config is not None:
            self.audio_qformer = CausalQFormer(config.audio_qformer_config)

    @property
    def qformers(self) -> list[CausalQFormer]:
        """The causal Q-Former, and the audio Q-Former when the streams are not fused (``av_fusion="separate"``)."""
        return [self.causal_qformer] + ([self.audio_qformer] if hasattr(self, "audio_qformer") else [])

    def train(self, mode: bool = True) -> FavorMediaEncoder:
        """Like `nn.Module.train`, but the frozen encoders stay in eval mode (no dropout, as released)."""
        super().train(mode)
        self.vision.eval()
        self.audio_encoders.eval()
        return self

    @property
    def device(self) -> torch.device:
        return self.audio_projections[0].weight.device

    @property
    def qformer_dtype(self) -> torch.dtype:
        return next(self.causal_qformer.parameters()).dtype

    @property
    def visual_dtype(self) -> torch.dtype:
        """Visual features are kept in the Q-Former's dtype (float32 islands) or else the frame encoder's."""
        return self.qformer_dtype if self.config.qformer_fp32 else self.vision.dtype

    # -------------------------------------------------------------------------------------------- frozen
    @torch.no_grad()
    def encode_frozen_media(
        self,
        pixel_values: torch.Tensor | None = None,
        pixel_lengths: torch.Tensor | None = None,
        frame_lengths: torch.Tensor | None = None,
        input_features: torch.Tensor | list[torch.Tensor] | None = None,
        audio_lengths: torch.Tensor | None = None,
        qformer_input_ids: torch.Tensor | None = None,
        qformer_attention_mask: torch.Tensor | None = None,
        input_features_1: torch.Tensor | None = None,
        input_features_2: torch.Tensor | None = None,
        input_features_3: torch.Tensor | None = None,
        batch_size: int | None = None,
    ) -> dict[str, torch.Tensor]:
        """Run the frozen encoders only; see `FavorModel.encode_frozen_media` for arguments and result."""
        features = per_encoder(
            input_features, (input_features_1, input_features_2, input_features_3), len(self.audio_encoders)
        )
        device = self.device
        named = {"pixel_values": pixel_values} | {
            f"input_features[{k}]": f for k, f in enumerate(features) if isinstance(f, torch.Tensor)
        }
        batch = batch_size_of(named, batch_size)
        if pixel_lengths is None:
            size = pixel_values.shape[1] if pixel_values is not None else 0
            pixel_lengths = torch.full((batch,), size, dtype=torch.long, device=device)
        pixel_lengths = media_counts(pixel_lengths, batch, "pixel_lengths", device)
        if pixel_values is not None and batch and int(pixel_lengths.max()) > pixel_values.shape[1]:
            raise ValueError(
                f"pixel_lengths: {pixel_lengths.tolist()} exceed the {pixel_values.shape[1]} frames of pixel_values"
            )
        frame_lengths = (
            pixel_lengths.clone()
            if frame_lengths is None
            else media_counts(frame_lengths, batch, "frame_lengths", device)
        )
        repeat = (pixel_lengths == 1) & (frame_lengths > 1)
        if bool(((pixel_lengths != frame_lengths) & ~repeat).any()):
            raise ValueError(
                "frame_lengths: must equal pixel_lengths for videos (or be >= 1 for an image, pixel_lengths == 1); "
                f"got pixel_lengths={pixel_lengths.tolist()}, frame_lengths={frame_lengths.tolist()}"
            )
        if audio_lengths is None and any(f is not None for f in features):
            raise ValueError(
                "audio_lengths: required with input_features (audio samples per sample, 0 = no audio)"
            )
        audio_lengths = media_counts(audio_lengths, batch, "audio_lengths", device)
        vocab = getattr(self.config.vision_qformer_config, "vocab_size", None)
        if qformer_input_ids is not None and qformer_input_ids.numel() and vocab is not None:
            low, high = int(qformer_input_ids.min()), int(qformer_input_ids.max())
            if low < 0 or high >= vocab:  # else an IndexError deep inside the frame encoder's embedding
                raise ValueError(
                    f"qformer_input_ids: ids must lie in [0, {vocab}) (the frame encoder's Q-Former vocabulary), got "
                    f"[{low}, {high}]; the processor's qformer_tokenizer must be that Q-Former's (tokens added for "
                    "the LLM belong to the LLM's tokenizer only)"
                )
        visual = self.vision.encode_batch(
            pixel_values,
            pixel_lengths,
            frame_lengths,
            qformer_input_ids,
            qformer_attention_mask,
            self.visual_dtype,
        )  # (B, T, N, Dv)
        out = {"visual_features": visual, "frame_lengths": frame_lengths, "audio_lengths": audio_lengths}
        for k, (enc, feats, rate) in enumerate(
            zip(self.audio_encoders, features, self.config.audio_feature_rates)
        ):
            steps = audio_steps(audio_lengths, rate, self.config.audio_sample_rate).to(device)  # (B,)
            out[audio_feature_key(k)] = enc.encode_batch(feats, audio_lengths, steps)  # (B, S, Da)
        return out

    def check_frozen_features(
        self,
        frozen: dict[str, torch.Tensor | None],
        frame_lengths: Any = None,
        audio_lengths: Any = None,
        batch_size: int | None = None,
    ) -> dict[str, torch.Tensor]:
        """Validate frozen features (`encode_frozen_media`'s keys) and fill in the absent streams with zeros."""
        device = self.device
        n, dv = self.config.tokens_per_frame, self.config.visual_hidden_size
        batch = batch_size_of(frozen, batch_size)
        visual = frozen.get("visual_features")
        if visual is None:
            visual = torch.zeros(batch, 0, n, dv, dtype=self.visual_dtype, device=device)
        if visual.ndim != 4 or tuple(visual.shape[2:]) != (n, dv):
            raise ValueError(
                f"visual_features: expected (batch, frames, {n}, {dv}) from encode_frozen_media, got "
                f"{tuple(visual.shape)}"
            )
        if frame_lengths is None:
            frame_lengths = [visual.shape[1]] * batch
        frames = media_counts(frame_lengths, batch, "frame_lengths", device)
        if batch and int(frames.max()) > visual.shape[1]:
            raise ValueError(
                f"frame_lengths: {frames.tolist()} exceed the {visual.shape[1]} frames of visual_features"
            )
        out = {"visual_features": visual.to(device), "frame_lengths": frames}
        keys = [audio_feature_key(k) for k in range(MAX_AUDIO_ENCODERS)]
        extra = [key for key in keys[len(self.audio_encoders) :] if frozen.get(key) is not None]
        if extra:
            raise ValueError(f"{extra[0]}: the model has {len(self.audio_encoders)} audio encoder(s)")
        if audio_lengths is None and any(frozen.get(key) is not None for key in keys):
            raise ValueError(
                "audio_lengths: required with audio_features (audio samples per sample, 0 = no audio)"
            )
        out["audio_lengths"] = media_counts(audio_lengths, batch, "audio_lengths", device)
        for key, enc in zip(keys, self.audio_encoders):
            feats = frozen.get(key)
            if feats is None:
                feats = torch.zeros(batch, 0, enc.hidden_size, dtype=enc.dtype, device=device)
            if feats.ndim != 3 or feats.shape[2] != enc.hidden_size:
                raise ValueError(
                    f"{key}: expected (batch, steps, {enc.hidden_size}) from encode_frozen_media, got "
                    f"{tuple(feats.shape)}"
                )
            out[key] = feats.to(device)
        return out

    # ---------------------------------------------------------------------------------------- trainable
    def forward(
        self,
        visual_features: torch.Tensor,
        frame_lengths: torch.Tensor,
        audio_lengths: torch.Tensor,
        modality_mask: torch.Tensor | None = None,
        **audio_features: torch.Tensor,
    ) -> MediaEncoderOutput:
        """Frozen features (checked, see `check_frozen_features`) -> Q-Former tokens (the trainable stage).

        Args:
            visual_features: ``(B, T, N, Dv)``.
            frame_lengths: ``(B,)`` real frames.
            audio_lengths: ``(B,)`` audio samples.
            modality_mask: ``(B, 1 + n_audio)`` stream mask (default: 1 where the stream exists).
            **audio_features: ``audio_features`` ``(B, S, Da)`` and ``audio_features_<k>`` for further encoders.
        """
        device = self.device
        streams, steps = [], []
        for k, (proj, rate) in enumerate(zip(self.audio_projections, self.config.audio_feature_rates)):
            key = audio_feature_key(k)
            feats = audio_features[key]  # (B, S, Da)
            real = audio_steps(audio_lengths, rate, self.config.audio_sample_rate).to(device)  # (B,)
            if feats.shape[1] == 0 and bool((real > 0).any()):
                raise ValueError(f"{key}: missing, but audio_lengths say some samples have audio")
            streams.append(proj(feats.to(proj.weight.dtype)).to(visual_features.dtype))  # (B, S, Dp)
            steps.append(real.clamp(max=feats.shape[1]))
        if modality_mask is None:
            columns = [frame_lengths > 0] + [audio_lengths > 0 for _ in self.audio_encoders]
            modality_mask = torch.stack(columns, dim=1)
        synced = self.synchroniser(
            visual_features,
            streams if len(streams) > 1 else streams[0],
            visual_lengths=frame_lengths,
            audio_lengths=steps if len(steps) > 1 else steps[0],
            modality_mask=modality_mask.to(device=device, dtype=visual_features.dtype),
        )  # features (B, T, N, Dv + Dp)
        features = synced.features.to(self.qformer_dtype)
        if len(self.qformers) == 1:
            out = self.causal_qformer(features, synced.frame_mask)
            return MediaEncoderOutput(
                av_tokens=out.tokens,
                window_mask=out.window_mask,
                diversity_loss=diversity_loss(out.tokens, out.window_mask),
            )
        # No synchronisation (the ablation): the synchroniser only puts both streams on the frame clock; the video
        # Q-Former reads the visual columns, the audio Q-Former the audio columns, and their tokens become two
        # blocks (video windows, then audio windows: the released order without early_align), so relating an
        # instant of one stream to the other is left to the LLM.
        dv = self.config.visual_hidden_size
        video = self.causal_qformer(features[..., :dv], synced.frame_mask)  # tokens (B, W, Q, H)
        audio = self.audio_qformer(features[..., dv:], synced.frame_mask)  # tokens (B, W, Q, H)
        return MediaEncoderOutput(
            av_tokens=torch.cat([video.tokens, audio.tokens], dim=1),  # (B, 2W, Q, H)
            window_mask=torch.cat([video.window_mask, audio.window_mask], dim=1),  # (B, 2W)
            diversity_loss=(
                diversity_loss(video.tokens, video.window_mask)
                + diversity_loss(audio.tokens, audio.window_mask)
            )
            / 2,
        )

    def encode(self, batch_size: int | None = None, **media: Any) -> MediaEncoderOutput:
        """Raw media or frozen features (not both) -> `MediaEncoderOutput`; see `FavorModel.get_av_features`."""
        unknown = sorted(set(media) - set(MEDIA_ARGUMENTS))
        if unknown:
            raise ValueError(f"unexpected media arguments {unknown}")
        given_raw = [k for k in RAW_MEDIA_NAMES if media.get(k) is not None]
        given_frozen = [k for k in FROZEN_FEATURE_NAMES if media.get(k) is not None]
        if given_raw and given_frozen:
            raise ValueError(
                f"{', '.join(given_raw)} / {', '.join(given_frozen)}: give raw media or the frozen features of "
                "encode_frozen_media, not both"
            )
        modality_mask = media.get("modality_mask")
        if given_frozen:
            frozen = self.check_frozen_features(
                {k: media.get(k) for k in FROZEN_FEATURE_NAMES},
                media.get("frame_lengths"),
                media.get("audio_lengths"),
                batch_size,
            )
        else:
            raw = {k: v for k, v in media.items() if k not in (*FROZEN_FEATURE_NAMES, "modality_mask")}
            frozen = self.encode_frozen_media(**raw, batch_size=batch_size)
        if modality_mask is not None:
            modality_mask = torch.as_tensor(modality_mask, device=self.device)
            check_batch("modality_mask", modality_mask, frozen["frame_lengths"].shape[0])
        return self(modality_mask=modality_mask, **frozen)


#: Every media argument `FavorModel.forward` / `get_av_features` take (raw, frozen, lengths, masks).
MEDIA_ARGUMENTS = (
    "pixel_values",
    "pixel_lengths",
    "frame_lengths",
    "input_features",
    "audio_lengths",
    "qformer_input_ids",
    "qformer_attention_mask",
    "modality_mask",
    "input_features_1",
    "input_features_2",
    "input_features_3",
    *FROZEN_FEATURE_NAMES,
)
