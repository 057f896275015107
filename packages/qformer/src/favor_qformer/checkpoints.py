"""Checkpoint I/O of ``CausalQFormer``: foreign checkpoints in, our own format in and out.

``CausalQFormerCheckpointMixin`` gives the model its loaders and savers (as transformers' ``PushToHubMixin`` gives
``PreTrainedModel`` its ``push_to_hub``), so ``model.py`` holds the network alone. The methods are thin: the key
maps live in ``_convert`` (released FAVOR, BLIP-2 / InstructBLIP) and the file format in ``_hub``
(``config.json`` + ``model.safetensors``, saved atomically by ``saving.atomic_save_directory``).

Both are imported inside the methods, as they were when these methods lived in ``model.py``: ``import
favor_qformer`` stays free of safetensors / huggingface_hub until a checkpoint is actually read or written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import torch

from .config import CausalQFormerConfig

ModelT = TypeVar("ModelT", bound="CausalQFormerCheckpointMixin")


class CausalQFormerCheckpointMixin:
    """Loading and saving for an ``nn.Module`` built as ``cls(config)`` with a ``CausalQFormerConfig`` as
    ``config`` (``CausalQFormer``); every loader is strict and returns the model in eval mode."""

    config: CausalQFormerConfig

    # ----- foreign checkpoints -------------------------------------------------------------------------------

    @classmethod
    def from_favor_official(
        cls: type[ModelT],
        state_dict: dict[str, torch.Tensor],
        config: CausalQFormerConfig | None = None,
        **overrides: Any,
    ) -> ModelT:
        """Load the released FAVOR checkpoint layout (``video_Qformer.bert…``, ``video_query_tokens``,
        ``ln_video.*``, ``video_frame_position_embedding.weight``).

        Every tensor must map to a parameter and every parameter must be set (``…embeddings.position_ids`` is
        ignored). With ``config=None`` the sizes come from the tensor shapes; the head count cannot, so it is the
        released 12 (pass ``config`` or ``num_heads=``/``causal_num_heads=`` for other models). The released
        quirks are switched on, also over a given ``config``: input LayerNorm eps 1e-5 and
        ``causal_attends_window_padding=True``; when ``config`` said otherwise a ``UserWarning`` names the fields
        changed. To really run the released weights without a quirk, pass it as a keyword
        (``causal_attends_window_padding=False``): keywords always win. The model is returned in eval mode.

        Args:
            state_dict: The released tensors (other prefixes, e.g. the LLM's, must be removed first).
            config: Full configuration; ``None`` = inferred.
            **overrides: Config fields to set on top (e.g. ``attention_backend="eager"``).

        Raises:
            ValueError: unknown, missing or wrongly shaped tensors (all listed), or sizes that cannot be inferred.
        """
        from ._convert import official_config, official_to_native

        native = official_to_native(state_dict)
        config = official_config(native, config, overrides)
        model = cls(config)
        model.load_native_state_dict(native, source="from_favor_official")
        return model.eval()

    @classmethod
    def from_blip2_qformer(
        cls: type[ModelT],
        model_or_state_dict: Any,
        query_tokens: torch.Tensor | None = None,
        **overrides: Any,
    ) -> ModelT:
        """Start from a BLIP-2 / InstructBLIP Q-Former (transformers or LAVIS weights).

        Accepts a transformers ``Blip2QFormerModel`` / ``InstructBlipQFormerModel``, a full ``Blip2Model`` /
        ``Blip2ForConditionalGeneration`` / ``InstructBlip…`` (its ``qformer`` and ``query_tokens`` are used), or a
        state dict in the transformers (``encoder.layer.i.attention.attention.query``) or LAVIS
        (``Qformer.bert.encoder.layer.i.attention.self.query``) layout. transformers is not imported: a model is
        read through its ``state_dict()`` and ``config``.

        The result has ``causal=False``, no input LayerNorm and no position embedding, and BLIP-2's sizes and
        cross-attention frequency, so with one window covering the input it computes what BLIP-2 computes.
        ``overrides`` set any config field (``window_size=…``, or ``causal=True`` to add freshly initialised
        causal modules). Text-side tensors (word/position embeddings, the text FFN, LM head) are ignored and may
        be absent (LAVIS-style checkpoints).

        Args:
            model_or_state_dict: The model or its state dict.
            query_tokens: (1, Q, H) learned queries; ``None`` = taken from the model/state dict (``query_tokens``),
                else freshly initialised.
            **overrides: Config fields. With a bare state dict, ``num_heads`` defaults to ``hidden_size // 64``.

        Returns:
            The model in eval mode (dropout off); call ``.train()`` to fine-tune.

        Raises:
            ValueError: unexpected or wrongly shaped tensors, or missing Q-Former tensors (all listed).
        """
        from ._convert import blip2_to_native

        native, config = blip2_to_native(model_or_state_dict, query_tokens, overrides)
        model = cls(config)
        fresh = ("causal_attention", "input_layernorm", "position_embedding")
        if "query_tokens" not in native:
            fresh = (*fresh, "query_tokens")
        model.load_native_state_dict(native, source="from_blip2_qformer", allow_missing=fresh)
        return model.eval()  # as every loader here (and transformers): call .train() to fine-tune

    def load_native_state_dict(
        self, state_dict: dict[str, torch.Tensor], source: str = "load", allow_missing: tuple[str, ...] = ()
    ) -> None:
        """Load tensors under this model's own names, refusing missing/unexpected keys and wrong shapes.

        Args:
            state_dict: Tensors keyed like ``self.state_dict()``.
            source: Named in the error message.
            allow_missing: Key fragments whose absence is fine (those parameters keep their current values).

        Raises:
            ValueError: listing every missing key, unexpected key and shape mismatch.
        """
        own = self.state_dict()
        missing = [k for k in own if k not in state_dict and not any(part in k for part in allow_missing)]
        unexpected = sorted(k for k in state_dict if k not in own)
        shapes = [
            f"{k}: expected {tuple(own[k].shape)}, got {tuple(v.shape)}"
            for k, v in state_dict.items()
            if k in own and tuple(v.shape) != tuple(own[k].shape)
        ]
        if missing or unexpected or shapes:
            raise ValueError(
                f"{source}: state dict does not match the model (config {self.config.to_dict()}): "
                f"missing keys {missing}; unexpected keys {unexpected}; wrong shapes {shapes}"
            )
        self.load_state_dict(state_dict, strict=False)

    # ----- save / load -------------------------------------------------------------------------------------

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write ``config.json`` and ``model.safetensors`` into ``directory`` (created); returns it.

        The save is atomic (``favor_qformer.saving.atomic_save_directory``): at every instant ``directory`` holds
        the complete old or the complete new checkpoint, a failed save leaves the old one loadable and removes its
        temporary files, and other files in ``directory`` are kept.
        """
        from ._hub import save_pretrained

        return save_pretrained(self, directory)

    @classmethod
    def from_pretrained(
        cls: type[ModelT],
        directory_or_repo_id: str | Path,
        *,
        revision: str | None = None,
        dtype: torch.dtype | None = None,
        **hub_kwargs: Any,
    ) -> ModelT:
        """Load from a local directory or a Hugging Face Hub repository written by ``save_pretrained``.

        ``hub_kwargs`` go to ``huggingface_hub.hf_hub_download`` for a repository id (``token``, ``cache_dir``,
        ``local_files_only``, ``force_download``, as ``PyTorchModelHubMixin.from_pretrained`` takes them).

        Each parameter and buffer keeps the dtype it was saved in (a mixed-precision model stays mixed) unless
        ``dtype`` is given, which casts every floating tensor. The model is returned in eval mode (dropout off), as
        transformers does; call ``.train()`` to fine-tune.

        Raises:
            ValueError: missing/unexpected keys or wrong shapes (all listed), a missing file, or a corrupt or
                truncated ``config.json`` / ``model.safetensors`` (naming the file).
        """
        from ._hub import from_pretrained

        return from_pretrained(
            cls, directory_or_repo_id, revision=revision, dtype=dtype, hub_kwargs=hub_kwargs
        )

    def push_to_hub(
        self,
        repo_id: str,
        *,
        private: bool | None = None,
        token: str | None = None,
        commit_message: str | None = None,
    ) -> str:
        """Upload ``config.json`` + ``model.safetensors`` to the Hub repository ``repo_id`` (created if needed).

        Returns:
            The commit URL.
        """
        from ._hub import push_to_hub

        return push_to_hub(self, repo_id, private=private, token=token, commit_message=commit_message)
