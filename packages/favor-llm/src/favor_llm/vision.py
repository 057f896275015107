"""Frozen frame encoder: a transformers vision model, optionally followed by a BLIP-2/InstructBLIP Q-Former.

Released FAVOR (Sec. 3.1): every frame goes through InstructBLIP's EVA ViT-g and its instruction-aware Q-Former,
giving ``N = 32`` tokens of width 768 per frame. Other vision towers (CLIP, SigLIP, ...) give patch tokens that are
average-pooled (adaptive, in patch order) to ``N = tokens_per_frame`` tokens.

Shape legend: ``F`` frames (packed over the batch), ``C`` channels, ``H``/``W`` pixels, ``P`` patch tokens,
``N`` tokens per frame, ``Dv`` visual token width, ``L`` instruction tokens.
"""

from __future__ import annotations

import torch
from torch import nn
from tqdm.auto import tqdm
from transformers import AutoModel, PretrainedConfig

from .configuration import FavorConfig
from .media_checks import check_batch

__all__ = ["FrameEncoder", "build_vision_model", "build_vision_qformer"]

# Vision towers that AutoModel does not map from their sub-config (they live inside composite BLIP models).
_VISION_CLASSES = {
    "instructblip_vision_model": ("transformers", "InstructBlipVisionModel"),
    "blip_2_vision_model": ("transformers", "Blip2VisionModel"),
}
_QFORMER_CLASSES = {
    "instructblip_qformer": ("transformers", "InstructBlipQFormerModel"),
    "blip_2_qformer": ("transformers", "Blip2QFormerModel"),
}
# Vision towers whose first output token is a [CLS] token, dropped before pooling patch tokens.
_HAS_CLS_TOKEN = {"clip_vision_model", "instructblip_vision_model", "blip_2_vision_model", "vit"}


def _class_for(table: dict[str, tuple[str, str]], config: PretrainedConfig):
    import importlib

    module, name = table[config.model_type]
    return getattr(importlib.import_module(module), name)


def build_vision_model(config: PretrainedConfig) -> nn.Module:
    """A randomly initialised vision tower for ``config`` (any transformers vision config)."""
    if config.model_type in _VISION_CLASSES:
        return _class_for(_VISION_CLASSES, config)(config)
    return AutoModel.from_config(config)


def build_vision_qformer(config: PretrainedConfig) -> nn.Module:
    """A randomly initialised InstructBLIP / BLIP-2 Q-Former for ``config``."""
    if config.model_type not in _QFORMER_CLASSES:
        raise ValueError(
            f"vision_qformer_config: expected model_type in {sorted(_QFORMER_CLASSES)}, got {config.model_type!r}"
        )
    return _class_for(_QFORMER_CLASSES, config)(config)


class FrameEncoder(nn.Module):
    """Frozen per-frame visual tokens: ``pixel_values (F, C, H, W) -> (F, N, Dv)``.

    Submodules (their state-dict names are the public key layout): ``vision_model``, and with a Q-Former
    ``qformer`` + ``query_tokens (1, N, Dv)`` exactly as in transformers' ``InstructBlipForConditionalGeneration``
    (so its weights load by prefix).
    """

    def __init__(self, config: FavorConfig) -> None:
        super().__init__()
        self.vision_model = build_vision_model(config.vision_config)
        self.has_qformer = config.vision_qformer_config is not None
        self.tokens_per_frame = config.tokens_per_frame
        self.drop_cls = config.vision_config.model_type in _HAS_CLS_TOKEN
        size = config.vision_config.image_size
        height, width = (size, size) if isinstance(size, int) else tuple(size)
        #: ``(C, H, W)`` of one frame, as the vision tower reads it.
        self.frame_shape = (int(getattr(config.vision_config, "num_channels", 3)), int(height), int(width))
        self.width = config.visual_hidden_size
        self.use_instruction = config.vision_use_instruction
        if self.has_qformer:
            self.qformer = build_vision_qformer(config.vision_qformer_config)
            self.query_tokens = nn.Parameter(
                torch.zeros(1, config.vision_num_query_tokens, config.vision_qformer_config.hidden_size)
            )
            nn.init.normal_(self.query_tokens, std=0.02)
            self.instruction_aware = config.vision_qformer_config.model_type == "instructblip_qformer"

    @property
    def dtype(self) -> torch.dtype:
        return next(self.vision_model.parameters()).dtype

    def encode_batch(
        self,
        pixel_values: torch.Tensor | None,
        pixel_lengths: torch.Tensor,
        frame_lengths: torch.Tensor,
        instruction_ids: torch.Tensor | None,
        instruction_mask: torch.Tensor | None,
        dtype: torch.dtype,
    ) -> torch.Tensor:
        """A padded batch of frames -> ``(B, T, N, Dv)`` visual tokens over the frames each sample spans.

        Only real frames are encoded (packed over the batch); an image (``pixel_lengths == 1``) is repeated over
        its ``frame_lengths`` frames; frames past a sample's length are zero.

        Args:
            pixel_values: ``(B, F, C, H, W)`` frames, or ``None`` (no visual input).
            pixel_lengths: ``(B,)`` distinct frames per sample.
            frame_lengths: ``(B,)`` frames each sample spans (``T = max``).
            instruction_ids: ``(B, Lq)`` InstructBLIP instruction tokens, or ``None``.
            instruction_mask: ``(B, Lq)`` their mask.
            dtype: dtype of the result.
        """
        batch = pixel_lengths.shape[0]
        device = pixel_lengths.device
        max_frames = int(frame_lengths.max()) if batch else 0
        visual = torch.zeros(batch, max_frames, self.tokens_per_frame, self.width, dtype=dtype, device=device)
        if pixel_values is None or int(pixel_lengths.sum()) == 0:
            return visual
        if pixel_values.ndim != 5:
            raise ValueError(
                "pixel_values: expected (batch, frames, channels, height, width), got shape "
                f"{tuple(pixel_values.shape)}"
            )
        if tuple(pixel_values.shape[2:]) != self.frame_shape:
            raise ValueError(
                f"pixel_values: frames must be (channels, height, width) = {self.frame_shape} for the vision tower, "
                f"got {tuple(pixel_values.shape[2:])} (FavorProcessor resizes and normalises frames)"
            )
        real = torch.arange(pixel_values.shape[1], device=device)[None, :] < pixel_lengths[:, None]  # (B, F)
        pixels = pixel_values.to(device)[real]  # (sum F, C, H, W)
        ids = mask = None
        if self.use_instruction and instruction_ids is not None:
            check_batch("qformer_input_ids", instruction_ids, batch)
            owner = torch.arange(batch, device=device)[:, None].expand_as(real)[
                real
            ]  # (sum F,) frame's sample
            ids = instruction_ids.to(device)[owner]
            if instruction_mask is not None:
                mask = instruction_mask.to(device)[owner]
        tokens = self(pixels, ids, mask).to(dtype)  # (sum F, N, Dv)
        for b, frames in enumerate(tokens.split(pixel_lengths.tolist())):
            count = int(frame_lengths[b])
            if count and frames.shape[0]:
                visual[b, :count] = frames.expand(count, -1, -1) if frames.shape[0] == 1 else frames
        return visual

    def forward(
        self,
        pixel_values: torch.Tensor,
        instruction_ids: torch.Tensor | None = None,
        instruction_mask: torch.Tensor | None = None,
        frame_batch_size: int = 256,
    ) -> torch.Tensor:
        """Encode frames in slices of ``frame_batch_size`` (bounded memory for long videos).

        Args:
            pixel_values: ``(F, C, H, W)`` normalised frames.
            instruction_ids: ``(F, L)`` Q-Former instruction tokens per frame (InstructBLIP only; optional).
            instruction_mask: ``(F, L)`` their attention mask.

        Returns:
            ``(F, N, Dv)`` visual tokens.
        """
        outputs = []
        starts = range(0, pixel_values.shape[0], frame_batch_size)
        # a progress bar for long videos only (more than 4 slices of frames)
        for start in tqdm(
            starts, desc="Encoding frames", unit="slice", disable=len(starts) <= 4, leave=False
        ):
            stop = start + frame_batch_size
            ids = instruction_ids[start:stop] if instruction_ids is not None else None
            mask = instruction_mask[start:stop] if instruction_mask is not None else None
            outputs.append(self._encode(pixel_values[start:stop], ids, mask))
        return torch.cat(outputs, dim=0)

    def _encode(
        self, pixels: torch.Tensor, ids: torch.Tensor | None, mask: torch.Tensor | None
    ) -> torch.Tensor:
        patches = self.vision_model(pixel_values=pixels.to(self.dtype)).last_hidden_state  # (F, P, Dvis)
        if not self.has_qformer:
            if self.drop_cls:
                patches = patches[:, 1:]
            # (F, P, D) -> (F, N, D): adaptive average pooling over patch order
            return nn.functional.adaptive_avg_pool1d(
                patches.transpose(1, 2), self.tokens_per_frame
            ).transpose(1, 2)
        queries = self.query_tokens.expand(patches.shape[0], -1, -1)  # (F, N, Dv)
        num_queries = queries.shape[1]
        if self.instruction_aware and ids is not None:
            query_mask = torch.ones(queries.shape[:2], dtype=torch.long, device=queries.device)
            mask = torch.ones_like(ids) if mask is None else mask
            out = self.qformer(
                input_ids=ids,
                attention_mask=torch.cat([query_mask, mask.to(query_mask.dtype)], dim=1),
                query_embeds=queries,
                encoder_hidden_states=patches,
            ).last_hidden_state
        else:
            extra = {"input_ids": None} if self.instruction_aware else {}
            out = self.qformer(query_embeds=queries, encoder_hidden_states=patches, **extra).last_hidden_state
        return out[:, :num_queries]  # (F, N, Dv): the instruction tokens' outputs are not visual tokens
