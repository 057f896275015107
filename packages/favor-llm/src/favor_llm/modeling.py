"""`FavorModel`: the media encoder, a language projection and a causal LM with LoRA (Sun et al., 2023, Sec. 3).

Data flow for one batch (shape legend below; the media encoder's own stages are in `favor_llm.media_encoder`)::

    media --media_encoder (frozen encoders -> projections -> synchroniser -> causal Q-Former)
          --> av_tokens (B, W, Q, H), window_mask (B, W), diversity loss
    language_projection --> (B, W, Q, E) scattered into the AV placeholder positions of input_ids
    language_model (LoRA) --> logits (B, Lt, V)

``loss = causal-LM loss(answer tokens) + diversity_loss_weight * diversity_loss`` (released Sec. 3.3), computed in
`FavorModel.forward` only, with the LLM's own loss function (``shift_labels`` and ``num_items_in_batch`` honoured).

Shape legend: ``B`` batch, ``W`` windows, ``Q`` queries, ``H`` Q-Former width, ``E`` LLM width, ``Lt`` text
tokens, ``V`` vocabulary.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn
from transformers import AutoModelForCausalLM, PreTrainedModel

from .configuration import FavorConfig
from .generation import AV_INPUT_NAMES, FavorGenerationMixin, cache_length, default_generation_config
from .lora import add_lora
from .media_checks import FROZEN_FEATURE_NAMES, RAW_MEDIA_NAMES
from .media_encoder import FavorMediaEncoder
from .outputs import FavorAVOutput, FavorOutput
from .pretrained import FavorPreTrainedModel

__all__ = ["AV_INPUT_NAMES", "FavorModel", "FavorOutput", "FavorPreTrainedModel"]

logger = logging.getLogger("favor_llm")


class FavorModel(FavorPreTrainedModel, FavorGenerationMixin):
    """The FAVOR audio-visual LLM.

    Submodules (state-dict prefixes are public API; the parts are declared in `favor_llm.components`):
    ``media_encoder`` (`FavorMediaEncoder`: frozen ``vision`` and ``audio_encoders``, trainable
    ``audio_projections``, the ``synchroniser``, the trainable ``causal_qformer``), ``language_projection``
    (trainable), ``language_model`` (the causal LM, frozen, with trainable LoRA adapters when ``config.use_lora``).

    Args:
        config: the model config.
        language_model: an already built / loaded causal LM to use instead of one built from ``config.text_config``
            (LoRA is added to it).
    """

    def __init__(self, config: FavorConfig, language_model: PreTrainedModel | None = None) -> None:
        super().__init__(config)
        self.media_encoder = FavorMediaEncoder(config)
        llm = (
            language_model
            if language_model is not None
            else AutoModelForCausalLM.from_config(config.text_config)
        )
        self.language_projection = nn.Linear(
            config.causal_qformer_config.hidden_size, config.text_config.hidden_size
        )
        for proj in (*self.media_encoder.audio_projections, self.language_projection):
            proj._favor_projection = True
        self.language_model = add_lora(llm, config) if config.use_lora else llm
        self._context_warned: set[int] = set()
        self.freeze_frozen_parts()
        self.generation_config = default_generation_config(config.text_config, language_model)
        if not any(p.is_meta for p in self.parameters()):
            for module in self.modules():  # every part was initialised by its constructor (or loaded)
                module._is_hf_initialized = True
        self.post_init()
        self._rebase_llm_plans()
        requested = getattr(config, "_attn_implementation_internal", None)
        if isinstance(
            requested, str
        ):  # asked for at construction: every sub-model, the audio encoders included
            self.set_attn_implementation(requested)

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
                per encoder).
            audio_lengths: ``(B,)`` audio samples at ``config.audio_sample_rate`` (0: no audio).
            qformer_input_ids: ``(B, Lq)`` instruction tokens for InstructBLIP's Q-Former.
            qformer_attention_mask: ``(B, Lq)`` their mask.
            input_features_1: windows of the 2nd audio encoder (when configured).
            input_features_2: windows of the 3rd audio encoder.
            input_features_3: windows of the 4th audio encoder.
            batch_size: the batch size the inputs must have (checked).

        Returns:
            ``{"visual_features": (B, T, N, Dv)`` frame-encoder tokens over the frames each sample spans (an image
            repeated), ``"frame_lengths": (B,)``, ``"audio_features": (B, S, Da)`` the first audio encoder's output
            before its trainable projection, cut to the longest sample's real steps (zeros past each sample's
            steps), ``"audio_lengths": (B,)`` samples, and ``"audio_features_<k>"`` for further encoders``}``.
        """
        return self.media_encoder.encode_frozen_media(
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

    def get_av_features(self, batch_size: int | None = None, **media: Any) -> FavorAVOutput:
        """Media -> AV tokens projected into the LLM's embedding space (like BLIP-2's ``get_image_features``).

        Args:
            batch_size: the batch size the media must have (checked).
            **media: raw media (``pixel_values``, ``input_features``, ... as `encode_frozen_media` takes) or its
                frozen features (``visual_features``, ``audio_features``, ... with ``frame_lengths`` and
                ``audio_lengths``), not both; ``modality_mask (B, 1 + n_audio)`` overrides the stream mask.
        """
        encoded = self.media_encoder.encode(batch_size=batch_size, **media)
        tokens = encoded.av_tokens.to(self.language_projection.weight.dtype)
        return FavorAVOutput(
            av_embeds=self.language_projection(tokens),
            window_mask=encoded.window_mask,
            av_tokens=encoded.av_tokens,
            diversity_loss=encoded.diversity_loss,
        )

    def encode_media(self, **media: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(av_tokens (B, W, Q, H), window_mask (B, W), diversity_loss)`` of the media (see `get_av_features`)."""
        encoded = self.media_encoder.encode(**media)
        return encoded.av_tokens, encoded.window_mask, encoded.diversity_loss

    def stream(self, processor: Any, **kwargs: Any) -> Any:
        """Start a `favor_llm.streaming.StreamingSession`: feed media as it arrives, ask questions at any time
        (each window encoded once into the KV cache). ``kwargs`` go to the session (``prompt``, ``instruction``,
        ``context_policy``, ...)."""
        from .streaming import StreamingSession

        return StreamingSession(self, processor, **kwargs)

    # ------------------------------------------------------------------------------------------------- forward
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Any = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        return_dict: bool | None = None,
        shift_labels: torch.LongTensor | None = None,
        num_items_in_batch: int | torch.Tensor | None = None,
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
        **kwargs: Any,
    ) -> FavorOutput | tuple:
        """Run the model; see the module docstring for shapes. Returns a `FavorOutput` (a tuple when
        ``return_dict=False``).

        Args:
            input_ids: ``(B, Lt)`` prompt (+ answer) tokens with the AV placeholder expanded (`FavorProcessor`).
            attention_mask: ``(B, Lt)`` 1 for real tokens (left or right padding).
            position_ids: ``(B, Lt)``; default from ``attention_mask`` (padding-invariant positions).
            cache: the KV cache (generation); ``past_key_values`` is accepted too.
            inputs_embeds: ``(B, Lt, E)`` instead of ``input_ids`` (no media then).
            labels: ``(B, Lt)`` answer tokens, -100 elsewhere (shifted inside the loss).
            use_cache: return the KV cache.
            logits_to_keep: compute logits for the last this many positions only (0: all).
            return_dict: ``False`` gives a tuple (default ``config.return_dict``).
            shift_labels: ``(B, Lt)`` labels already shifted (instead of ``labels``; e.g. sequence parallelism).
            num_items_in_batch: the number of answer tokens over a gradient-accumulation batch (the LM loss is a
                sum divided by it).
            pixel_values: media: see `encode_frozen_media` (raw) / `get_av_features`, as are the following.
            pixel_lengths: see ``pixel_values``.
            frame_lengths: see ``pixel_values``.
            input_features: see ``pixel_values``.
            audio_lengths: see ``pixel_values``.
            qformer_input_ids: see ``pixel_values``.
            qformer_attention_mask: see ``pixel_values``.
            modality_mask: see ``pixel_values``.
            input_features_1: see ``pixel_values``.
            input_features_2: see ``pixel_values``.
            input_features_3: see ``pixel_values``.
            visual_features: see ``pixel_values``.
            audio_features: see ``pixel_values``.
            audio_features_1: see ``pixel_values``.
            audio_features_2: see ``pixel_values``.
            audio_features_3: see ``pixel_values``.
            **kwargs: passed to the LLM (``output_hidden_states``, ``output_attentions``, ...).
        """
        media = {k: v for k, v in locals().items() if k in AV_INPUT_NAMES and v is not None}
        cache = cache if cache is not None else kwargs.pop("past_key_values", None)
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        has_media = any(media.get(k) is not None for k in (*RAW_MEDIA_NAMES, *FROZEN_FEATURE_NAMES))
        av = None
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
                av = self.get_av_features(batch_size=input_ids.shape[0], **media)
            inputs_embeds = self._embed(input_ids, av, is_prefill=cache is None or cache_length(cache) == 0)
        position_ids = _check_text_inputs(inputs_embeds, attention_mask, position_ids, labels, cache)
        out = self.causal_lm(
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            use_cache=use_cache,
            logits_to_keep=logits_to_keep,
            return_dict=True,
            **kwargs,
        )
        div = av.diversity_loss if av is not None else None
        loss = lm_loss = None
        if labels is not None or shift_labels is not None:
            lm_loss = self._lm_loss(out.logits, labels, shift_labels, num_items_in_batch)
            loss = lm_loss
            if div is not None and self.config.diversity_loss_weight:
                loss = loss + self.config.diversity_loss_weight * div.to(loss.dtype)
            if div is None:
                div = torch.zeros((), device=out.logits.device)
        output = FavorOutput(
            loss=loss,
            logits=out.logits,
            cache=getattr(out, "cache", None),
            hidden_states=getattr(out, "hidden_states", None),
            attentions=getattr(out, "attentions", None),
            lm_loss=lm_loss,
            diversity_loss=div,
            av_tokens=av.av_tokens if av is not None else None,
            window_mask=av.window_mask if av is not None else None,
        )
        return output if return_dict else output.to_tuple()

    def _lm_loss(
        self,
        logits: torch.Tensor,
        labels: torch.Tensor | None,
        shift_labels: torch.Tensor | None,
        num_items_in_batch: Any,
    ) -> torch.Tensor:
        """The LLM's own causal-LM loss (transformers' ``ForCausalLMLoss``: float32, shift, -100 ignored)."""
        targets = shift_labels if shift_labels is not None else labels[:, 1:]
        if not bool((targets != -100).any()):
            raise ValueError("labels: no answer token (every label is -100 after the first position)")
        return self.causal_lm.loss_function(
            logits=logits,
            labels=None if labels is None else labels.to(logits.device),
            vocab_size=logits.shape[-1],
            shift_labels=None if shift_labels is None else shift_labels.to(logits.device),
            num_items_in_batch=num_items_in_batch,
        )

    def _embed(self, input_ids: torch.Tensor, av: FavorAVOutput | None, is_prefill: bool) -> torch.Tensor:
        """Token embeddings with the projected AV tokens at the placeholders: ``(B, Lt) -> (B, Lt, E)``."""
        placeholder = self.config.av_token_id
        embeddings = self.get_input_embeddings()
        safe_ids = input_ids
        if placeholder is not None and placeholder >= embeddings.num_embeddings:
            safe_ids = input_ids.masked_fill(input_ids == placeholder, 0)
        inputs_embeds = embeddings(safe_ids)
        if is_prefill:
            self._warn_past_context(input_ids)
        if av is None and not is_prefill:
            return inputs_embeds
        return scatter_av(input_ids, inputs_embeds, av, placeholder, self.config.av_token)

    def _warn_past_context(self, input_ids: torch.Tensor) -> None:
        """Warn (once per length) when a prompt is longer than the LLM was trained for: long media fill the context
        fast (384 AV tokens per minute at the released settings, Vicuna's context is 2048 tokens)."""
        limit = getattr(self.config.text_config, "max_position_embeddings", None)
        length = input_ids.shape[1]
        if limit is not None and length > limit and length not in self._context_warned:
            self._context_warned.add(length)
            placeholder = self.config.av_token_id
            av = int((input_ids == placeholder).sum(dim=1).max()) if placeholder is not None else 0
            logger.warning(
                "input_ids: %d tokens (%d of them AV tokens) exceed the LLM's max_position_embeddings=%d; the LLM "
                "was not trained on positions this far, expect degraded answers (cut the media shorter)",
                length,
                av,
                limit,
            )


# ---------------------------------------------------------------------------------------------------- helpers
def scatter_av(
    input_ids: torch.Tensor,
    inputs_embeds: torch.Tensor,
    av: FavorAVOutput | None,
    placeholder: int | None,
    av_token: str,
) -> torch.Tensor:
    """Put the projected AV tokens of real windows where ``input_ids`` holds the placeholder; the counts must match
    exactly (``windows x queries`` per sample). ``(B, Lt, E)`` in, ``(B, Lt, E)`` out."""
    if placeholder is None:
        if av is not None:
            raise ValueError(
                "config.av_token_id: not set; the processor sets it (it is the id of config.av_token)"
            )
        return inputs_embeds
    is_av = input_ids == placeholder  # (B, Lt)
    have = is_av.sum(dim=1)  # (B,)
    if av is None:
        if bool((have > 0).any()):
            raise ValueError(
                f"input_ids: hold {have.tolist()} AV placeholder tokens ({av_token!r}) per sample but no media was "
                "given (pixel_values / input_features)"
            )
        return inputs_embeds
    if av.av_embeds.shape[0] != input_ids.shape[0]:
        raise ValueError(
            f"pixel_values/input_features: batch size {av.av_embeds.shape[0]} differs from input_ids' "
            f"{input_ids.shape[0]}"
        )
    want = av.window_mask.sum(dim=1) * av.av_embeds.shape[2]  # (B,)
    if bool((have != want.to(have.device)).any()):
        raise ValueError(
            f"input_ids: the number of AV placeholder tokens ({av_token!r}) per sample must equal windows x queries "
            f"of its media; got {have.tolist()} placeholders, expected {want.tolist()} (use FavorProcessor, which "
            "expands one placeholder per media item)"
        )
    # (real windows, Q, E) in batch-major order, which is the row-major order of `is_av`.
    projected = av.av_embeds[av.window_mask].reshape(-1, av.av_embeds.shape[-1]).to(inputs_embeds.dtype)
    return inputs_embeds.masked_scatter(is_av[..., None].to(inputs_embeds.device), projected)


def _check_text_inputs(
    inputs_embeds: torch.Tensor,
    attention_mask: torch.Tensor | None,
    position_ids: torch.Tensor | None,
    labels: torch.Tensor | None,
    cache: Any,
) -> torch.Tensor | None:
    """Check the attention mask and labels against ``(B, Lt)``; positions from the mask when not given."""
    batch, length = inputs_embeds.shape[:2]
    if attention_mask is not None and attention_mask.shape[0] != batch:
        raise ValueError(
            f"attention_mask: expected batch size {batch}, got shape {tuple(attention_mask.shape)}"
        )
    no_past = cache is None or cache_length(cache) == 0
    if (
        attention_mask is not None
        and attention_mask.ndim == 2
        and no_past
        and attention_mask.shape[1] != length
    ):
        raise ValueError(
            f"attention_mask: expected shape {(batch, length)} like input_ids, got {tuple(attention_mask.shape)}"
        )
    if position_ids is None and attention_mask is not None and attention_mask.ndim == 2:
        # Positions count real tokens only, so left padding does not shift a sample's positions.
        position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, -length:]
    if labels is not None and labels.shape != (batch, length):
        raise ValueError(
            f"labels: expected shape {(batch, length)} like input_ids, got {tuple(labels.shape)}"
        )
    return position_ids
