"""`FavorModel`: frozen encoders + temporal synchroniser + causal Q-Former + LoRA LLM (Sun et al., 2023, Sec. 3).

Data flow for one batch (shape legend below)::

    pixel_values (B, F, C, H, W) --FrameEncoder (frozen)--> visual (B, T, N, Dv)   images repeated over frames
    input_features (B, K, M, L) --AudioEncoder (frozen)---> (B, S, Da) --audio_projections--> (B, S, Dp)
    TemporalSynchroniser(visual, audio)                 --> features (B, T, N, Dv + Dp), frame_mask (B, T)
    CausalQFormer(features, frame_mask)                 --> tokens (B, W, Q, H), window_mask (B, W)
    language_projection                                 --> (B, W, Q, E) scattered into the placeholder positions
    language_model (LoRA)                               --> logits (B, Lt, V)

``loss = CE(answer tokens) + diversity_loss_weight * diversity_loss(tokens)`` (released Sec. 3.3).

Modalities follow the released modality-mask conventions: the missing stream is zero (video only: no audio
steps and its audio column of the modality mask is 0; audio only: zero frames and the visual column 0; an image
is one frame repeated over ``image_repeat`` frames, or over the audio's frames when it comes with audio).

Shape legend: ``B`` batch, ``F`` distinct frames given, ``T`` frames after synchronisation, ``N`` tokens per
frame, ``Dv`` visual width, ``Dp`` projected audio width, ``W`` windows, ``Q`` queries, ``H`` Q-Former width,
``E`` LLM width, ``Lt`` text tokens, ``V`` vocabulary, ``K`` audio windows (30 s chunks), ``M`` mel bins,
``L`` mel frames per chunk, ``S`` audio encoder steps.
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn
from transformers import AutoModelForCausalLM, GenerationConfig, GenerationMixin, PreTrainedModel
from transformers.utils import ModelOutput

from .audio import AudioEncoder, audio_steps, chunk_samples
from .configuration import FavorConfig
from .lora import add_lora
from .vision import FrameEncoder

__all__ = ["AV_INPUT_NAMES", "FavorModel", "FavorOutput"]

logger = logging.getLogger("favor_llm")

#: Inputs that only the first (prefill) forward of `generate` needs; later steps reuse the KV cache.
AV_INPUT_NAMES = (
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
    "visual_features",
    "audio_features",
    "audio_features_1",
    "audio_features_2",
    "audio_features_3",
)
#: The media tensors themselves (raw or frozen features); lengths and masks alone are not media.
_MEDIA_TENSOR_NAMES = (
    "pixel_values",
    "input_features",
    "input_features_1",
    "input_features_2",
    "input_features_3",
    "visual_features",
    "audio_features",
    "audio_features_1",
    "audio_features_2",
    "audio_features_3",
)


@dataclass
class FavorOutput(ModelOutput):
    """Output of `FavorModel.forward`.

    Attributes:
        loss: ``lm_loss + diversity_loss_weight * diversity_loss`` (when ``labels`` are given).
        lm_loss: cross-entropy over the answer tokens (labels != -100).
        diversity_loss: the Q-Former diversity loss over real windows (0 without media).
        logits: ``(B, Lt, V)``.
        cache: the LLM's KV cache (generation).
        av_tokens: ``(B, W, Q, H)`` Q-Former output tokens (before the LLM projection), ``None`` without media.
        window_mask: ``(B, W)`` real windows.
        hidden_states: the LLM's hidden states (``output_hidden_states=True``): its input embeddings with the AV
            tokens in place, then each layer's output, each ``(B, Lt, E)``.
        attentions: the LLM's attention weights (``output_attentions=True``).
    """

    loss: torch.Tensor | None = None
    lm_loss: torch.Tensor | None = None
    diversity_loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    cache: Any = None
    av_tokens: torch.Tensor | None = None
    window_mask: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None


class FavorPreTrainedModel(PreTrainedModel):
    """Base class wiring `FavorConfig` into transformers (AutoModel, generation)."""

    config_class = FavorConfig
    base_model_prefix = "favor"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    # The loss is a mean over the batch (answer tokens + the diversity term) and `forward` ignores transformers'
    # ``num_items_in_batch``, so the Trainer must scale it for gradient accumulation itself (its test of this
    # otherwise looks for ``**kwargs`` in `forward`, finds them and skips the division).
    accepts_loss_kwargs = False
    # Mixed precision: like transformers' BLIP-2 (which keeps its query tokens / Q-Former in fp32), the causal
    # Q-Former and the small trainable projections stay in float32; see `FavorModel.to_mixed_precision`.
    _keep_in_fp32_modules: ClassVar[list[str]] = ["qformer", "audio_projections"]
    _no_split_modules: ClassVar[list[str]] = [
        "LlamaDecoderLayer",
        "WhisperEncoderLayer",
        "InstructBlipEncoderLayer",
    ]

    def init_weights(self) -> None:
        """Every part is initialised by its own constructor (and the frozen ones are usually loaded)."""


class FavorModel(FavorPreTrainedModel, GenerationMixin):
    """The FAVOR audio-visual LLM.

    Submodules (state-dict prefixes are public API): ``vision`` (`FrameEncoder`, frozen), ``audio_encoders``
    (frozen Whisper encoders), ``audio_projections`` (trainable), ``synchroniser`` (no parameters), ``qformer``
    (`favor_qformer.CausalQFormer`, trainable), ``language_projection`` (trainable), ``language_model`` (the causal
    LM, frozen, with trainable LoRA adapters when ``config.use_lora``).

    Args:
        config: the model config.
        language_model: an already built / loaded causal LM to use instead of one built from ``config.text_config``
            (LoRA is added to it).
    """

    def __init__(self, config: FavorConfig, language_model: PreTrainedModel | None = None) -> None:
        super().__init__(config)
        from favor_avsync import TemporalSynchroniser
        from favor_qformer import CausalQFormer, CausalQFormerConfig

        self.vision = FrameEncoder(config)
        self.audio_encoders = nn.ModuleList([AudioEncoder(c) for c in config.audio_configs])
        self.audio_projections = nn.ModuleList(
            [nn.Linear(enc.hidden_size, config.audio_stream_width) for enc in self.audio_encoders]
        )
        self.synchroniser = TemporalSynchroniser(
            fps=config.fps,
            audio_rates=tuple(config.audio_feature_rates),
            tokens_per_frame=config.tokens_per_frame,
            mode=config.sync_mode,
            overflow=config.sync_overflow,
        )
        self.qformer = CausalQFormer(CausalQFormerConfig(**config.qformer_config))
        llm = (
            language_model
            if language_model is not None
            else AutoModelForCausalLM.from_config(config.text_config)
        )
        self.language_projection = nn.Linear(
            config.qformer_config["hidden_size"], config.text_config.hidden_size
        )
        self.language_model = add_lora(llm, config) if config.use_lora else llm
        self._context_warned: set[int] = set()
        self._freeze_frozen_parts()
        self.generation_config = _generation_config(config, language_model)
        self.post_init()

    # ------------------------------------------------------------------------------------------------ structure
    @property
    def causal_lm(self) -> PreTrainedModel:
        """The causal LM itself (LoRA layers injected in place when LoRA is on)."""
        lm = self.language_model
        return lm.get_base_model() if hasattr(lm, "get_base_model") else lm

    def frozen_modules(self) -> Iterator[tuple[str, nn.Module]]:
        """The frozen encoders (always in eval mode, never receive gradients)."""
        yield "vision", self.vision
        for i, enc in enumerate(self.audio_encoders):
            yield f"audio_encoders.{i}", enc

    def _freeze_frozen_parts(self) -> None:
        for _, module in self.frozen_modules():
            module.requires_grad_(False)
            module.eval()
        if self.config.use_lora:
            for name, p in self.language_model.named_parameters():
                p.requires_grad_("lora_" in name)
        else:
            self.language_model.requires_grad_(False)

    def train(self, mode: bool = True) -> FavorModel:
        """Like `nn.Module.train`, but the frozen encoders stay in eval mode (no dropout, as released)."""
        super().train(mode)
        for _, module in self.frozen_modules():
            module.eval()
        return self

    def get_input_embeddings(self) -> nn.Module:
        return self.causal_lm.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.causal_lm.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Module:
        return self.causal_lm.get_output_embeddings()

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """Every parameter that training changes (projections, Q-Former, LoRA), under `state_dict` names."""
        names = {n for n, p in self.named_parameters() if p.requires_grad}
        return {k: v for k, v in self.state_dict().items() if k in names}

    def to_mixed_precision(self, dtype: torch.dtype = torch.bfloat16) -> FavorModel:
        """Cast to ``dtype`` except ``_keep_in_fp32_modules`` (the Q-Former and audio projections stay float32).

        The causal Q-Former's LayerNorms over 1536-wide features and its softmaxes over 320-token windows are
        where half precision loses most; it is small (tens of millions of parameters), so, as transformers does
        for BLIP-2's Q-Former, it stays in float32 and its output is cast to the LLM's dtype.
        """
        self.to(dtype)
        if self.config.qformer_fp32:
            for name in self._keep_in_fp32_modules:
                getattr(self, name).to(torch.float32)
        return self

    def activation_checkpointing_enable(
        self, activation_checkpointing_kwargs: dict | None = None, **kwargs: Any
    ) -> None:
        """Recompute activations in the backward pass of the causal Q-Former and the LLM (the frozen encoders run
        without gradients anyway). Non-reentrant checkpointing by default, so frozen embeddings need no grads.

        Args:
            activation_checkpointing_kwargs: passed to ``torch.utils.checkpoint`` through the LLM.
            **kwargs: passed to the LLM's ``activation_checkpointing_enable`` (e.g. ``every_n_layers``).
        """
        ckpt_kwargs = {"use_reentrant": False, **(activation_checkpointing_kwargs or {})}
        self.causal_lm.activation_checkpointing_enable(activation_checkpointing_kwargs=ckpt_kwargs, **kwargs)
        self.qformer.gradient_checkpointing_enable()

    def activation_checkpointing_disable(self) -> None:
        """Undo `activation_checkpointing_enable`."""
        self.causal_lm.activation_checkpointing_disable()
        self.qformer.gradient_checkpointing_disable()

    def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs: dict | None = None) -> None:
        """The transformers v4 name of `activation_checkpointing_enable`."""
        self.activation_checkpointing_enable(gradient_checkpointing_kwargs)

    def gradient_checkpointing_disable(self) -> None:
        """The transformers v4 name of `activation_checkpointing_disable`."""
        self.activation_checkpointing_disable()

    # ------------------------------------------------------------------------------------------- save / load
    def save_pretrained(
        self,
        save_directory: str | os.PathLike,
        merge_lora: bool = False,
        max_shard_size: str | int = "5GB",
        push_to_hub: bool = False,
        repo_id: str | None = None,
        **kwargs: Any,
    ) -> None:
        """Save a delta checkpoint (config + trainable weights + LoRA adapter; the frozen encoders and base LLM are
        referenced through ``config.component_sources``) or, with ``merge_lora=True``, everything with the LoRA
        merged. See `favor_llm.checkpoint`. ``push_to_hub=True`` uploads the directory to ``repo_id``.

        Raises:
            ValueError: a delta save while a frozen part has no source (call `save_frozen_components` or set
                ``config.component_sources``).
        """
        from .checkpoint import save_favor_model

        save_favor_model(self, save_directory, merge_lora=merge_lora, max_shard_size=max_shard_size)
        if push_to_hub:
            from huggingface_hub import upload_folder

            upload_folder(
                repo_id=repo_id or Path(save_directory).name, folder_path=str(save_directory), **kwargs
            )

    def push_to_hub(self, repo_id: str, merge_lora: bool = False, **kwargs: Any) -> None:
        """Save (delta or merged) into a temporary directory and upload it to the Hub repo ``repo_id``."""
        import tempfile

        from huggingface_hub import create_repo, upload_folder

        create_repo(repo_id, exist_ok=True, private=kwargs.pop("private", None))
        with tempfile.TemporaryDirectory() as tmp:
            self.save_pretrained(tmp, merge_lora=merge_lora)
            upload_folder(repo_id=repo_id, folder_path=tmp, **kwargs)

    def save_frozen_components(self, directory: str | os.PathLike) -> dict[str, dict]:
        """Write the frozen encoders and the base LLM (without LoRA) under ``directory`` and reference them in
        ``config.component_sources`` (for models built from configs, e.g. the tiny one, before a delta save)."""
        from .checkpoint import save_frozen_components

        return save_frozen_components(self, directory)

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike,
        *model_args: Any,
        config: FavorConfig | None = None,
        dtype: torch.dtype | str | None = None,
        device_map: Any = None,
        **kwargs: Any,
    ) -> FavorModel:
        """Load a FAVOR checkpoint (delta or full; local directory or Hub repo).

        Args:
            pretrained_model_name_or_path: the checkpoint directory or repo id.
            config: a config to use instead of the checkpoint's.
            dtype: load the LLM in this dtype and cast the rest with `to_mixed_precision` (a `torch.dtype`, its
                name such as ``"bfloat16"``, or ``"auto"``: the dtype the LLM's weights were saved in).
            device_map: passed to the LLM's ``AutoModelForCausalLM.from_pretrained`` (as are ``kwargs`` such as
                ``low_cpu_mem_usage``).
            *model_args: not accepted (transformers' signature).
            **kwargs: passed to the LLM's ``from_pretrained``.

        Raises:
            ValueError: a missing, unexpected or wrongly shaped weight, or a checkpoint that is not FAVOR's.
        """
        from .checkpoint import load_favor_model

        if model_args:
            raise ValueError(
                f"model_args: FavorModel.from_pretrained takes no positional arguments, got {model_args}"
            )
        dtype = kwargs.pop("torch_dtype", dtype)
        for ignored in ("trust_remote_code", "_from_auto", "adapter_kwargs", "_commit_hash", "name_or_path"):
            kwargs.pop(ignored, None)
        return load_favor_model(
            cls, pretrained_model_name_or_path, dtype=dtype, device_map=device_map, config=config, **kwargs
        )

    # --------------------------------------------------------------------------------------------- AV encoding
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
        """Run the frozen encoders only (no gradients): the features a training run may cache once per clip.

        `forward`, `get_av_features` and `generate` accept the returned keys instead of ``pixel_values`` /
        ``input_features`` and give the same result.

        Args:
            pixel_values: ``(B, F, C, H, W)`` frames (zeros past ``pixel_lengths``).
            pixel_lengths: ``(B,)`` distinct frames per sample (0: no visual input; 1 and ``frame_lengths > 1``:
                an image repeated over ``frame_lengths`` frames).
            frame_lengths: ``(B,)`` frames the visual stream spans (default ``pixel_lengths``).
            input_features: ``(B, K, M, L)`` Whisper log-mel windows of the first audio encoder (or a list, one
                per audio encoder).
            audio_lengths: ``(B,)`` audio samples at ``config.audio_sample_rate`` (0: no audio).
            qformer_input_ids: ``(B, Lq)`` instruction tokens for InstructBLIP's Q-Former.
            qformer_attention_mask: ``(B, Lq)`` their mask.
            input_features_1: windows of the 2nd audio encoder (when configured); ``_2``, ``_3`` likewise.
            input_features_2: see ``input_features_1``.
            input_features_3: see ``input_features_1``.
            batch_size: the batch size the inputs must have (e.g. ``input_ids``'), checked.

        Returns:
            ``{"visual_features": (B, T, N, Dv)`` frame-encoder tokens over the frames each sample spans (an image
            repeated), ``"frame_lengths": (B,)``, ``"audio_features": (B, S, Da)`` the first audio encoder's output
            before its trainable projection, cut to the longest sample's real steps (zeros past each sample's
            steps), ``"audio_lengths": (B,)`` samples, and ``"audio_features_<k>"`` for further encoders``}``.
        """
        features = _merge_audio_features(
            input_features, (input_features_1, input_features_2, input_features_3)
        )
        device = self.language_projection.weight.device
        batch = _batch_size(batch_size, pixel_values, features)
        pixel_lengths = _lengths(pixel_lengths, pixel_values, 1, batch, "pixel_lengths", device)
        frame_lengths = (
            pixel_lengths.clone()
            if frame_lengths is None
            else _as_counts(frame_lengths, "frame_lengths", device)
        )
        features_list = _as_list(features, len(self.audio_encoders))
        if audio_lengths is None and features is not None:
            raise ValueError(
                "audio_lengths: required with input_features (audio samples per sample, 0 = no audio)"
            )
        audio_lengths = _media_counts(audio_lengths, batch, "audio_lengths", device)
        _check_batch("frame_lengths", frame_lengths, batch)
        for name, lengths in (("pixel_lengths", pixel_lengths), ("frame_lengths", frame_lengths)):
            if batch and int(lengths.min()) < 0:
                raise ValueError(f"{name}: expected lengths >= 0, got {lengths.tolist()}")
        repeat = (pixel_lengths == 1) & (frame_lengths > 1)
        if bool(((pixel_lengths != frame_lengths) & ~repeat).any()):
            raise ValueError(
                "frame_lengths: must equal pixel_lengths for videos (or be >= 1 for an image, pixel_lengths == 1); "
                f"got pixel_lengths={pixel_lengths.tolist()}, frame_lengths={frame_lengths.tolist()}"
            )
        with torch.no_grad():
            visual = self._encode_visual(
                pixel_values, pixel_lengths, frame_lengths, qformer_input_ids, qformer_attention_mask, batch
            )  # (B, T, N, Dv)
            out = {"visual_features": visual, "frame_lengths": frame_lengths, "audio_lengths": audio_lengths}
            for k, feats in enumerate(self._encode_audio(features_list, audio_lengths, batch)):
                out[_audio_key(k)] = feats
        return out

    def get_av_features(
        self,
        pixel_values: torch.Tensor | None = None,
        pixel_lengths: torch.Tensor | None = None,
        frame_lengths: torch.Tensor | None = None,
        input_features: torch.Tensor | list[torch.Tensor] | None = None,
        audio_lengths: torch.Tensor | None = None,
        qformer_input_ids: torch.Tensor | None = None,
        qformer_attention_mask: torch.Tensor | None = None,
        modality_mask: torch.Tensor | None = None,
        input_features_1: torch.Tensor | None = None,
        input_features_2: torch.Tensor | None = None,
        input_features_3: torch.Tensor | None = None,
        visual_features: torch.Tensor | None = None,
        audio_features: torch.Tensor | None = None,
        audio_features_1: torch.Tensor | None = None,
        audio_features_2: torch.Tensor | None = None,
        audio_features_3: torch.Tensor | None = None,
        batch_size: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Media (raw, or the frozen features of `encode_frozen_media`) -> causal Q-Former tokens.

        Give either raw media (``pixel_values`` / ``input_features*``, see `encode_frozen_media`) or frozen
        features (``visual_features`` / ``audio_features*`` with ``frame_lengths`` / ``audio_lengths``), not both.
        ``modality_mask`` ``(B, 1 + n_audio)`` overrides the stream mask (default: 1 where the stream exists).

        Returns:
            ``tokens (B, W, Q, H)``, ``window_mask (B, W)``, ``diversity_loss`` (scalar).
        """
        frozen = {
            "visual_features": visual_features,
            "audio_features": audio_features,
            "audio_features_1": audio_features_1,
            "audio_features_2": audio_features_2,
            "audio_features_3": audio_features_3,
        }
        raw = {
            "pixel_values": pixel_values,
            "input_features": input_features,
            "input_features_1": input_features_1,
            "input_features_2": input_features_2,
            "input_features_3": input_features_3,
        }
        given_frozen = sorted(k for k, v in frozen.items() if v is not None)
        given_raw = sorted(k for k, v in raw.items() if v is not None)
        if given_frozen and given_raw:
            raise ValueError(
                f"{', '.join(given_raw)} / {', '.join(given_frozen)}: give raw media or the frozen features of "
                "encode_frozen_media, not both"
            )
        if not given_frozen:
            encoded = self.encode_frozen_media(
                pixel_values,
                pixel_lengths,
                frame_lengths,
                input_features,
                audio_lengths,
                qformer_input_ids,
                qformer_attention_mask,
                input_features_1,
                input_features_2,
                input_features_3,
                batch_size=batch_size,
            )
        else:
            encoded = self._check_frozen_features(frozen, frame_lengths, audio_lengths, batch_size)
        return self._av_tokens(encoded, modality_mask)

    def encode_media(self, *args: Any, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The earlier name of `get_av_features` (same arguments and result)."""
        return self.get_av_features(*args, **kwargs)

    def _check_frozen_features(
        self,
        frozen: dict[str, torch.Tensor | None],
        frame_lengths: torch.Tensor | None,
        audio_lengths: torch.Tensor | None,
        batch_size: int | None,
    ) -> dict[str, torch.Tensor]:
        """Validate frozen features (the output of `encode_frozen_media`) and fill in the absent streams."""
        device = self.language_projection.weight.device
        n, dv = self.config.tokens_per_frame, self.config.visual_hidden_size
        sizes = {k: v.shape[0] for k, v in frozen.items() if v is not None}
        if batch_size is not None:
            sizes["input_ids"] = batch_size
        if len(set(sizes.values())) > 1:
            raise ValueError(f"batch sizes differ between inputs: {sizes}")
        batch = next(iter(sizes.values()))
        visual = frozen["visual_features"]
        if visual is None:
            visual = torch.zeros(batch, 0, n, dv, dtype=self._visual_dtype, device=device)
        if visual.ndim != 4 or tuple(visual.shape[2:]) != (n, dv):
            raise ValueError(
                f"visual_features: expected (batch, frames, {n}, {dv}) from encode_frozen_media, got "
                f"{tuple(visual.shape)}"
            )
        frames = _media_counts(
            frame_lengths if frame_lengths is not None else [visual.shape[1]] * batch,
            batch,
            "frame_lengths",
            device,
        )
        if batch and (int(frames.max()) > visual.shape[1] or int(frames.min()) < 0):
            raise ValueError(
                f"frame_lengths: {frames.tolist()} must lie in [0, {visual.shape[1]}] (the frames of visual_features)"
            )
        out = {"visual_features": visual.to(device), "frame_lengths": frames}
        if audio_lengths is None and any(frozen[_audio_key(k)] is not None for k in range(4)):
            raise ValueError(
                "audio_lengths: required with audio_features (audio samples per sample, 0 = no audio)"
            )
        out["audio_lengths"] = _media_counts(audio_lengths, batch, "audio_lengths", device)
        for k, enc in enumerate(self.audio_encoders):
            key = _audio_key(k)
            feats = frozen[key]
            if feats is None:
                feats = torch.zeros(batch, 0, enc.hidden_size, dtype=enc.dtype, device=device)
            if feats.ndim != 3 or feats.shape[2] != enc.hidden_size:
                raise ValueError(
                    f"{key}: expected (batch, steps, {enc.hidden_size}) from encode_frozen_media, got "
                    f"{tuple(feats.shape)}"
                )
            out[key] = feats.to(device)
        extra = [k for k in range(len(self.audio_encoders), 4) if frozen[_audio_key(k)] is not None]
        if extra:
            raise ValueError(
                f"{_audio_key(extra[0])}: the model has {len(self.audio_encoders)} audio encoder(s), got features "
                f"for encoder {extra[0]}"
            )
        return out

    def _av_tokens(
        self, encoded: dict[str, torch.Tensor], modality_mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Frozen features -> trainable audio projections -> synchroniser -> causal Q-Former (the trainable part)."""
        from favor_qformer import diversity_loss

        device = self.language_projection.weight.device
        visual = encoded["visual_features"]  # (B, T, N, Dv)
        frame_lengths, audio_lengths = encoded["frame_lengths"], encoded["audio_lengths"]
        streams, steps = [], []
        for k, (proj, rate) in enumerate(zip(self.audio_projections, self.config.audio_feature_rates)):
            feats = encoded[_audio_key(k)]  # (B, S, Da)
            real = audio_steps(audio_lengths, rate, self.config.audio_sample_rate).to(device)  # (B,)
            if feats.shape[1] == 0 and bool((real > 0).any()):
                raise ValueError(
                    f"{_audio_key(k).replace('audio_features', 'input_features')}: missing, but audio_lengths say "
                    "some samples have audio"
                )
            streams.append(proj(feats.to(proj.weight.dtype)).to(visual.dtype))  # (B, S, Dp)
            steps.append(real.clamp(max=feats.shape[1]))
        if modality_mask is None:
            columns = [frame_lengths > 0] + [audio_lengths > 0 for _ in self.audio_encoders]
            modality_mask = torch.stack(columns, dim=1).to(visual.dtype)
        synced = self.synchroniser(
            visual,
            streams if len(streams) > 1 else streams[0],
            visual_lengths=frame_lengths,
            audio_lengths=steps if len(steps) > 1 else steps[0],
            modality_mask=modality_mask.to(device=device, dtype=visual.dtype),
        )
        out = self.qformer(synced.features.to(self.qformer_dtype), synced.frame_mask)
        return out.tokens, out.window_mask, diversity_loss(out.tokens, out.window_mask)

    @property
    def qformer_dtype(self) -> torch.dtype:
        return next(self.qformer.parameters()).dtype

    @property
    def _visual_dtype(self) -> torch.dtype:
        return self.qformer_dtype if self.config.qformer_fp32 else self.vision.dtype

    def _encode_visual(
        self,
        pixel_values: torch.Tensor | None,
        pixel_lengths: torch.Tensor,
        frame_lengths: torch.Tensor,
        qformer_input_ids: torch.Tensor | None,
        qformer_attention_mask: torch.Tensor | None,
        batch: int,
    ) -> torch.Tensor:
        """``(B, F, C, H, W)`` -> ``(B, Tv, N, Dv)``, only real frames encoded (packed over the batch)."""
        n, dv = self.config.tokens_per_frame, self.config.visual_hidden_size
        dtype = self._visual_dtype
        device = self.language_projection.weight.device
        max_frames = int(frame_lengths.max()) if batch else 0
        visual = torch.zeros(batch, max_frames, n, dv, dtype=dtype, device=device)
        if pixel_values is None or int(pixel_lengths.sum()) == 0:
            return visual
        if pixel_values.ndim != 5:
            raise ValueError(
                f"pixel_values: expected (batch, frames, channels, height, width), got shape {tuple(pixel_values.shape)}"
            )
        vision_config = self.config.vision_config
        size = vision_config.image_size
        height, width = (size, size) if isinstance(size, int) else tuple(size)
        frame_shape = (int(getattr(vision_config, "num_channels", 3)), int(height), int(width))
        if tuple(pixel_values.shape[2:]) != frame_shape:
            raise ValueError(
                f"pixel_values: frames must be (channels, height, width) = {frame_shape} for the vision tower, got "
                f"{tuple(pixel_values.shape[2:])} (FavorProcessor resizes and normalises frames)"
            )
        real = torch.arange(pixel_values.shape[1], device=device)[None, :] < pixel_lengths[:, None]  # (B, F)
        pixels = pixel_values.to(device)[real]  # (sum F, C, H, W)
        ids = mask = None
        if self.config.vision_use_instruction and qformer_input_ids is not None:
            _check_batch("qformer_input_ids", qformer_input_ids, batch)
            owner = torch.arange(batch, device=device)[:, None].expand_as(real)[
                real
            ]  # (sum F,) frame's sample
            ids = qformer_input_ids.to(device)[owner]
            if qformer_attention_mask is not None:
                mask = qformer_attention_mask.to(device)[owner]
        tokens = self.vision(pixels, ids, mask).to(dtype)  # (sum F, N, Dv)
        frames = list(tokens.split(pixel_lengths.tolist()))
        for b in range(batch):
            count = int(frame_lengths[b])
            if count == 0 or frames[b].shape[0] == 0:
                continue
            visual[b, :count] = frames[b].expand(count, -1, -1) if frames[b].shape[0] == 1 else frames[b]
        return visual

    def _encode_audio(
        self, features: list[torch.Tensor | None], audio_lengths: torch.Tensor, batch: int
    ) -> list[torch.Tensor]:
        """Each frozen encoder: ``(B, K, M, L)`` -> ``(B, S, Da)`` cut to the longest real steps, zeros past each
        sample's steps (``S = 0`` without audio)."""
        device = self.language_projection.weight.device
        sample_rate = self.config.audio_sample_rate
        streams = []
        for enc, rate, feats, cfg in zip(
            self.audio_encoders, self.config.audio_feature_rates, features, self.config.audio_configs
        ):
            steps = audio_steps(audio_lengths, rate, sample_rate).to(device)  # (B,)
            if feats is None or batch == 0 or int(audio_lengths.max()) == 0:
                if batch and int(steps.max()) > 0:
                    raise ValueError("input_features: missing, but audio_lengths say some samples have audio")
                streams.append(torch.zeros(batch, 0, enc.hidden_size, dtype=enc.dtype, device=device))
                continue
            if feats.ndim != 4 or feats.shape[0] != batch:
                raise ValueError(
                    f"input_features: expected (batch={batch}, chunks, mel_bins, frames), got {tuple(feats.shape)}"
                )
            window = (int(cfg.num_mel_bins), 2 * int(cfg.max_source_positions))
            if tuple(feats.shape[2:]) != window:
                raise ValueError(
                    f"input_features: each window must be (mel_bins, frames) = {window} for this Whisper encoder, "
                    f"got {tuple(feats.shape[2:])} (a feature extractor with feature_size={window[0]} and "
                    f"n_samples={chunk_samples(cfg, sample_rate)})"
                )
            per_chunk = chunk_samples(cfg, sample_rate, self.config.audio_chunk_seconds)
            chunks = torch.div(audio_lengths + per_chunk - 1, per_chunk, rounding_mode="floor")
            if int(chunks.max()) > feats.shape[1]:
                raise ValueError(
                    f"input_features: audio_lengths={audio_lengths.tolist()} need {chunks.tolist()} windows of "
                    f"{per_chunk} samples but input_features has {feats.shape[1]}"
                )
            # (B, K * C, Da): C = the steps one chunk fills (P, or fewer with config.audio_chunk_seconds)
            encoded = enc(
                feats.to(device), chunks, steps_per_chunk=int(audio_steps(per_chunk, rate, sample_rate))
            )
            steps = steps.clamp(max=encoded.shape[1])
            encoded = encoded[:, : int(steps.max())]  # (B, S, Da)
            real = torch.arange(encoded.shape[1], device=device)[None, :] < steps[:, None]  # (B, S)
            streams.append(encoded * real[..., None].to(encoded.dtype))
        return streams

    # ----------------------------------------------------------------------------------------------- embedding
    def _scatter_av(
        self,
        input_ids: torch.Tensor,
        inputs_embeds: torch.Tensor,
        tokens: torch.Tensor | None,
        window_mask: torch.Tensor | None,
    ) -> torch.Tensor:
        """Put the projected AV tokens where ``input_ids`` holds the placeholder; counts must match exactly."""
        placeholder = self.config.av_token_id
        if placeholder is None:
            if tokens is not None:
                raise ValueError(
                    "config.av_token_id: not set; the processor sets it (it is the id of config.av_token)"
                )
            return inputs_embeds
        is_av = input_ids == placeholder  # (B, Lt)
        have = is_av.sum(dim=1)  # (B,)
        if tokens is None:
            if bool((have > 0).any()):
                raise ValueError(
                    f"input_ids: hold {have.tolist()} AV placeholder tokens ({self.config.av_token!r}) per sample but "
                    "no media was given (pixel_values / input_features)"
                )
            return inputs_embeds
        q = tokens.shape[2]
        want = window_mask.sum(dim=1) * q  # (B,)
        if have.shape != want.shape or bool((have != want.to(have.device)).any()):
            raise ValueError(
                f"input_ids: the number of AV placeholder tokens ({self.config.av_token!r}) per sample must equal "
                f"windows x queries of its media; got {have.tolist()} placeholders, expected {want.tolist()} "
                "(use FavorProcessor, which expands one placeholder per media item)"
            )
        projected = self.language_projection(tokens[window_mask].to(self.language_projection.weight.dtype))
        # (real windows, Q, E) in batch-major order, which is the row-major order of `is_av`.
        projected = projected.reshape(-1, projected.shape[-1]).to(inputs_embeds.dtype)
        return inputs_embeds.masked_scatter(is_av[..., None].to(inputs_embeds.device), projected)

    # ------------------------------------------------------------------------------------------------- forward
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Any = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        pixel_values: torch.Tensor | None = None,
        pixel_lengths: torch.Tensor | None = None,
        frame_lengths: torch.Tensor | None = None,
        input_features: torch.Tensor | None = None,
        audio_lengths: torch.Tensor | None = None,
        qformer_input_ids: torch.Tensor | None = None,
        qformer_attention_mask: torch.Tensor | None = None,
        modality_mask: torch.Tensor | None = None,
        input_features_1: torch.Tensor | None = None,
        input_features_2: torch.Tensor | None = None,
        input_features_3: torch.Tensor | None = None,
        visual_features: torch.Tensor | None = None,
        audio_features: torch.Tensor | None = None,
        audio_features_1: torch.Tensor | None = None,
        audio_features_2: torch.Tensor | None = None,
        audio_features_3: torch.Tensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs: Any,
    ) -> FavorOutput:
        """Run the model; see the module docstring for shapes. Returns a `FavorOutput`.

        Args:
            input_ids: ``(B, Lt)`` prompt (+ answer) tokens with the AV placeholder expanded (`FavorProcessor`).
            attention_mask: ``(B, Lt)`` 1 for real tokens (left or right padding).
            position_ids: ``(B, Lt)``; default from ``attention_mask`` (padding-invariant positions).
            labels: ``(B, Lt)`` answer tokens, -100 elsewhere.
            cache: the KV cache (generation).
            inputs_embeds: ``(B, Lt, E)`` instead of ``input_ids`` (no media then).
            pixel_values: media, see `encode_media` (as are the following media arguments).
            pixel_lengths: see `encode_media`.
            frame_lengths: see `encode_media`.
            input_features: see `encode_media`.
            audio_lengths: see `encode_media`.
            qformer_input_ids: see `encode_media`.
            qformer_attention_mask: see `encode_media`.
            modality_mask: see `encode_media`.
            input_features_1: features of the 2nd audio encoder (when configured).
            input_features_2: features of the 3rd audio encoder.
            input_features_3: features of the 4th audio encoder.
            visual_features: frozen features from `encode_frozen_media`, instead of ``pixel_values`` (with
                ``frame_lengths``); the same result.
            audio_features: frozen features from `encode_frozen_media`, instead of ``input_features`` (with
                ``audio_lengths``).
            audio_features_1: likewise for the 2nd audio encoder.
            audio_features_2: likewise for the 3rd audio encoder.
            audio_features_3: likewise for the 4th audio encoder.
            use_cache: return the KV cache.
            logits_to_keep: compute logits for the last this many positions only (0: all).
            **kwargs: passed to the LLM.
        """
        past_key_values = kwargs.pop("past_key_values", None)
        cache = cache if cache is not None else past_key_values
        media = {
            "pixel_values": pixel_values,
            "pixel_lengths": pixel_lengths,
            "frame_lengths": frame_lengths,
            "input_features": input_features,
            "audio_lengths": audio_lengths,
            "qformer_input_ids": qformer_input_ids,
            "qformer_attention_mask": qformer_attention_mask,
            "modality_mask": modality_mask,
            "input_features_1": input_features_1,
            "input_features_2": input_features_2,
            "input_features_3": input_features_3,
            "visual_features": visual_features,
            "audio_features": audio_features,
            "audio_features_1": audio_features_1,
            "audio_features_2": audio_features_2,
            "audio_features_3": audio_features_3,
        }
        has_media = any(media[k] is not None for k in _MEDIA_TENSOR_NAMES)
        tokens = window_mask = None
        div = None
        if input_ids is not None and inputs_embeds is not None:
            raise ValueError("input_ids, inputs_embeds: give one of them, not both")
        if inputs_embeds is not None and has_media:
            raise ValueError(
                "inputs_embeds: media (pixel_values / input_features) need input_ids, whose AV placeholders say where "
                "the AV tokens go"
            )
        if inputs_embeds is None:
            if input_ids is None:
                raise ValueError("input_ids: required (or inputs_embeds)")
            if has_media:
                tokens, window_mask, div = self.get_av_features(**media, batch_size=input_ids.shape[0])
                if tokens.shape[0] != input_ids.shape[0]:
                    raise ValueError(
                        f"pixel_values/input_features: batch size {tokens.shape[0]} differs from input_ids' "
                        f"{input_ids.shape[0]}"
                    )
            safe_ids = input_ids
            if (
                self.config.av_token_id is not None
                and self.config.av_token_id >= self.get_input_embeddings().num_embeddings
            ):
                safe_ids = input_ids.masked_fill(input_ids == self.config.av_token_id, 0)
            inputs_embeds = self.get_input_embeddings()(safe_ids)
            is_prefill = cache is None or _cache_length(cache) == 0
            if has_media or is_prefill:
                inputs_embeds = self._scatter_av(input_ids, inputs_embeds, tokens, window_mask)
            if is_prefill:
                self._warn_past_context(input_ids)
        if attention_mask is not None and attention_mask.shape[:2] != (
            inputs_embeds.shape[0],
            attention_mask.shape[1],
        ):
            raise ValueError(
                f"attention_mask: expected batch size {inputs_embeds.shape[0]}, got shape {tuple(attention_mask.shape)}"
            )
        no_past = cache is None or _cache_length(cache) == 0
        if (
            attention_mask is not None
            and attention_mask.ndim == 2
            and no_past
            and attention_mask.shape != inputs_embeds.shape[:2]
        ):
            raise ValueError(
                f"attention_mask: expected shape {tuple(inputs_embeds.shape[:2])} like input_ids, got "
                f"{tuple(attention_mask.shape)}"
            )
        if position_ids is None and attention_mask is not None:
            # Positions count real tokens only, so left padding does not shift a sample's positions.
            full = attention_mask.long().cumsum(-1) - 1
            position_ids = full.clamp(min=0)[:, -inputs_embeds.shape[1] :]
        if labels is not None and labels.shape != inputs_embeds.shape[:2]:
            raise ValueError(
                f"labels: expected shape {tuple(inputs_embeds.shape[:2])} like input_ids, got {tuple(labels.shape)}"
            )
        out = self.causal_lm(
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            use_cache=use_cache,
            logits_to_keep=logits_to_keep,
            **kwargs,
        )
        logits = out.logits
        lm_loss = loss = None
        if labels is not None:
            lm_loss = _causal_lm_loss(logits, labels.to(logits.device))
            loss = lm_loss
            if div is not None and self.config.diversity_loss_weight:
                loss = loss + self.config.diversity_loss_weight * div.to(loss.dtype)
        if div is None and labels is not None:
            div = torch.zeros((), device=logits.device)
        return FavorOutput(
            loss=loss,
            lm_loss=lm_loss,
            diversity_loss=div,
            logits=logits,
            cache=getattr(out, "cache", None) if hasattr(out, "cache") else out.get("past_key_values"),
            av_tokens=tokens,
            window_mask=window_mask,
            hidden_states=getattr(out, "hidden_states", None),
            attentions=getattr(out, "attentions", None),
        )

    def _warn_past_context(self, input_ids: torch.Tensor) -> None:
        """Warn (once per length) when a prompt is longer than the LLM was trained for: long media fill the context
        fast (384 AV tokens per minute at the released settings, Vicuna's context is 2048 tokens)."""
        limit = getattr(self.config.text_config, "max_position_embeddings", None)
        length = input_ids.shape[1]
        if limit is not None and length > limit and length not in self._context_warned:
            self._context_warned.add(length)
            av = (
                int((input_ids == self.config.av_token_id).sum(dim=1).max())
                if self.config.av_token_id is not None
                else 0
            )
            logger.warning(
                "input_ids: %d tokens (%d of them AV tokens) exceed the LLM's max_position_embeddings=%d; the LLM "
                "was not trained on positions this far, expect degraded answers (cut the media shorter)",
                length,
                av,
                limit,
            )

    # ---------------------------------------------------------------------------------------------- generation
    def stream(self, processor: Any, **kwargs: Any) -> Any:
        """Start a `favor_llm.streaming.StreamingSession`: feed media as it arrives, ask questions at any time
        (each window encoded once into the KV cache). ``kwargs`` go to the session (``prompt``, ``instruction``,
        ``context_policy``, ...)."""
        from .streaming import StreamingSession

        return StreamingSession(self, processor, **kwargs)

    def generate(self, *args: Any, **kwargs: Any) -> Any:
        """`GenerationMixin.generate`, with the AV placeholder id suppressed: a generated placeholder would be read
        as a media slot on the next uncached step. See `transformers.GenerationMixin.generate` for arguments."""
        av = self.config.av_token_id
        output = self.get_output_embeddings()
        vocab = output.weight.shape[0] if output is not None else 0
        if av is not None and av < vocab:  # a placeholder past the vocabulary can't be generated anyway
            given = kwargs.get("suppress_tokens")
            if given is None:
                generation_config = kwargs.get("generation_config") or self.generation_config
                given = generation_config.suppress_tokens
            suppress = list(given or [])
            if av not in suppress:
                kwargs["suppress_tokens"] = [*suppress, av]
        return super().generate(*args, **kwargs)

    def prepare_inputs_for_generation(self, input_ids: torch.LongTensor, *args: Any, **kwargs: Any) -> dict:
        """Media inputs go to the first (prefill) forward only; later steps read the KV cache."""
        is_first = kwargs.get("is_first_iteration", False)
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        model_inputs = super().prepare_inputs_for_generation(input_ids, *args, **kwargs)
        if not is_first and cache is not None and _cache_length(cache) > 0:
            for name in list(model_inputs):
                if name in AV_INPUT_NAMES:
                    model_inputs.pop(name)
        return model_inputs


# ---------------------------------------------------------------------------------------------------- helpers
def _causal_lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over positions whose label is not -100 (float32 for stability)."""
    shift_logits = logits[:, :-1].float()
    shift_labels = labels[:, 1:]
    if not bool((shift_labels != -100).any()):
        raise ValueError("labels: no answer token (every label is -100 after the first position)")
    return nn.functional.cross_entropy(
        shift_logits.reshape(-1, shift_logits.shape[-1]), shift_labels.reshape(-1), ignore_index=-100
    )


def _cache_length(cache: Any) -> int:
    if hasattr(cache, "get_seq_length"):
        return int(cache.get_seq_length())
    return 0


def _batch_size(batch_size: int | None, pixel_values: torch.Tensor | None, features: Any) -> int:
    sizes = {}
    if pixel_values is not None:
        sizes["pixel_values"] = pixel_values.shape[0]
    for i, f in enumerate(_as_list(features, None)):
        if f is not None:
            sizes["input_features" if i == 0 else f"input_features[{i}]"] = f.shape[0]
    if batch_size is not None:
        sizes["input_ids"] = batch_size
    if len(set(sizes.values())) > 1:
        raise ValueError(f"batch sizes differ between inputs: {sizes}")
    if not sizes:
        raise ValueError("pixel_values, input_features: give at least one of them to encode media")
    return next(iter(sizes.values()))


def _audio_key(k: int) -> str:
    """The frozen-feature key of audio encoder ``k`` (``audio_features``, ``audio_features_1``, ...)."""
    return "audio_features" if k == 0 else f"audio_features_{k}"


def _merge_audio_features(first: Any, further: tuple) -> Any:
    """``input_features`` plus ``input_features_<k>`` as one list (or the single tensor / None as given)."""
    extra = [f for f in further if f is not None]
    return [first, *extra] if extra else first


def _media_counts(lengths: Any, batch: int, name: str, device: torch.device) -> torch.Tensor:
    """Per-sample counts ``(B,)`` (zeros when ``None``), integer, non-negative, of the batch size."""
    if lengths is None:
        return torch.zeros(batch, dtype=torch.long, device=device)
    counts = _as_counts(lengths, name, device)
    _check_batch(name, counts, batch)
    if batch and int(counts.min()) < 0:
        raise ValueError(f"{name}: expected lengths >= 0, got {counts.tolist()}")
    return counts


def _as_list(features: Any, count: int | None) -> list:
    if features is None:
        return [None] * (count or 1)
    if isinstance(features, torch.Tensor):
        items = [features]
    else:
        items = list(features)
    if count is not None and len(items) != count:
        raise ValueError(
            f"input_features: expected {count} tensors (one per audio encoder), got {len(items)}"
        )
    return items


def _lengths(
    lengths: torch.Tensor | None,
    values: torch.Tensor | None,
    dim: int,
    batch: int,
    name: str,
    device: torch.device,
) -> torch.Tensor:
    if lengths is None:
        size = values.shape[dim] if values is not None else 0
        return torch.full((batch,), size, dtype=torch.long, device=device)
    lengths = _as_counts(lengths, name, device)
    _check_batch(name, lengths, batch)
    if values is not None and int(lengths.max()) > values.shape[dim]:
        raise ValueError(f"{name}: {lengths.tolist()} exceed the {values.shape[dim]} frames of pixel_values")
    return lengths


def _as_counts(lengths: Any, name: str, device: torch.device) -> torch.Tensor:
    """Per-sample counts as a long tensor; floats and bools are refused rather than truncated (1.5 -> 1)."""
    tensor = torch.as_tensor(lengths, device=device)
    if tensor.dtype == torch.bool or tensor.is_floating_point() or tensor.is_complex():
        raise ValueError(f"{name}: expected integer counts, got {tensor.dtype} values {tensor.tolist()}")
    return tensor.long()


def _check_batch(name: str, tensor: torch.Tensor, batch: int) -> None:
    if tensor.shape[0] != batch:
        raise ValueError(f"{name}: expected batch size {batch}, got shape {tuple(tensor.shape)}")


def _generation_config(
    config: FavorConfig, language_model: PreTrainedModel | None = None
) -> GenerationConfig:
    """The LLM's own generation config when one was given (a chat model's ``generation_config.json`` may list
    end-of-turn ids or sampling defaults that its config lacks), else one from ``config.text_config``'s ids."""
    given = getattr(language_model, "generation_config", None)
    if isinstance(given, GenerationConfig):
        return copy.deepcopy(given)
    text = config.text_config
    return GenerationConfig(
        bos_token_id=getattr(text, "bos_token_id", None),
        eos_token_id=getattr(text, "eos_token_id", None),
        pad_token_id=getattr(text, "pad_token_id", None),
    )
