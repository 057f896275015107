"""`FavorPreTrainedModel`: how a FAVOR model plugs into transformers (weight initialisation, embeddings, attention
implementation, mixed precision, activation checkpointing, saving and loading), apart from its data flow
(`favor_llm.modeling.FavorModel`).

Subclasses hold ``media_encoder`` (`favor_llm.media_encoder.FavorMediaEncoder`), ``language_projection`` and
``language_model`` (the causal LM, wrapped by peft when LoRA is on); which of their parts are trainable, frozen, and
where their weights come from is declared in `favor_llm.components`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from typing import Any, ClassVar

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init

from favor_qformer import CausalQFormer

from . import checkpoint
from .components import ADAPTER, SOURCE, Component, components
from .configuration import FavorConfig
from .vision import FrameEncoder

__all__ = ["FavorPreTrainedModel"]


class FavorPreTrainedModel(PreTrainedModel):
    """Base class wiring `FavorConfig` into transformers (AutoModel, generation, weight initialisation)."""

    config_class = FavorConfig
    base_model_prefix = "favor"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    # The loss is a mean over the batch (answer tokens + the diversity term) unless `forward` is given
    # ``num_items_in_batch``; the Trainer scales it for gradient accumulation itself (the diversity term is a
    # per-batch mean, which the Trainer's own division keeps right).
    accepts_loss_kwargs = False
    # Mixed precision: like transformers' BLIP-2 (which keeps its Q-Former in fp32), the causal Q-Former and the
    # small trainable audio projections stay in float32 (not the frame encoder's own, frozen, Q-Former).
    _keep_in_fp32_modules: ClassVar[list[str]] = [
        "media_encoder.causal_qformer",
        "media_encoder.audio_qformer",
        "media_encoder.audio_projections",
    ]
    _keep_in_fp32_modules_strict: ClassVar[list[str]] = _keep_in_fp32_modules
    _no_split_modules: ClassVar[list[str]] = [
        "WhisperEncoderLayer",
        "InstructBlipEncoderLayer",
        "CausalQFormerLayer",
    ]

    def _init_weights(self, module: nn.Module) -> None:
        """Initialise the parts FAVOR itself builds as their constructors do (the sub-models use their own)."""
        if isinstance(module, (CausalQFormer, FrameEncoder)) and hasattr(module, "query_tokens"):
            init.normal_(module.query_tokens, std=0.02)
        elif isinstance(module, nn.Linear) and getattr(module, "_favor_projection", False):
            module.reset_parameters()  # PyTorch's Linear init, as at construction
        else:
            super()._init_weights(module)

    @torch.no_grad()
    def initialize_weights(self) -> None:
        """transformers' initialisation, then fresh LoRA adapters (A random, B zero) where it reached them: the LLM's
        own `_init_weights` would treat ``lora_A`` / ``lora_B`` as plain linear layers."""
        fresh = [m for m in self.modules() if hasattr(m, "reset_lora_parameters") and not _initialised(m)]
        super().initialize_weights()
        for layer in fresh:
            for adapter in list(layer.lora_A):
                layer.reset_lora_parameters(adapter, init_lora_weights=True)

    def tie_weights(self, *args: Any, **kwargs: Any) -> None:
        """The LLM ties its own weights (under LoRA its modules sit below ``language_model.base_model.model``,
        where transformers' composite tying, which prefixes the child's keys with ``language_model.``, looks in
        vain)."""
        self._rebase_llm_plans()
        self.causal_lm.tie_weights(*args, **kwargs)

    def _rebase_llm_plans(self) -> None:
        """Tied-weight keys and the tensor-parallel plan under the LLM's real path (LoRA moves it); only the
        no-split layer classes this model has."""
        present = {type(m).__name__ for m in self.modules()}
        self._no_split_modules = {name for name in self._no_split_modules if name in present}
        prefix = self.llm_prefix
        tied = getattr(self.causal_lm, "all_tied_weights_keys", None) or {}
        self.all_tied_weights_keys = {prefix + k: prefix + v for k, v in tied.items()}
        self._tp_plan = {prefix + k: v for k, v in (getattr(self.causal_lm, "_tp_plan", None) or {}).items()}

    # ------------------------------------------------------------------------------------------------ structure
    @property
    def causal_lm(self) -> PreTrainedModel:
        """The causal LM itself (LoRA layers injected in place when LoRA is on)."""
        lm = self.language_model
        return lm.get_base_model() if hasattr(lm, "get_base_model") else lm

    @property
    def llm_prefix(self) -> str:
        """State-dict prefix of the causal LM's own keys (``language_model.base_model.model.`` under LoRA)."""
        return (
            "language_model.base_model.model."
            if self.causal_lm is not self.language_model
            else "language_model."
        )

    vision = property(lambda self: self.media_encoder.vision, doc="The frozen frame encoder.")
    audio_encoders = property(
        lambda self: self.media_encoder.audio_encoders, doc="The frozen audio encoders."
    )
    audio_projections = property(lambda self: self.media_encoder.audio_projections, doc="Audio projections.")
    synchroniser = property(lambda self: self.media_encoder.synchroniser, doc="The temporal synchroniser.")
    causal_qformer = property(lambda self: self.media_encoder.causal_qformer, doc="The causal Q-Former.")
    qformer = property(
        lambda self: self.media_encoder.causal_qformer, doc="The earlier name of `causal_qformer`."
    )

    def components(self) -> list[Component]:
        """The declared parts of this model (`favor_llm.components.components`)."""
        return components(self.config)

    def frozen_modules(self) -> Iterator[tuple[str, nn.Module]]:
        """The frozen encoders (always in eval mode, never receive gradients), by component name."""
        for part in self.components():
            if part.weights == SOURCE and part.name != "text":
                yield part.name, self.get_submodule(part.module)

    def freeze_frozen_parts(self) -> None:
        """``requires_grad`` exactly on the declared trainable parts; frozen encoders in eval mode."""
        for part in self.components():
            if part.weights != ADAPTER and part.weights != "none":
                self.get_submodule(part.module).requires_grad_(part.trainable)
        for _, module in self.frozen_modules():
            module.eval()
        if self.config.use_lora:
            for name, p in self.language_model.named_parameters():
                p.requires_grad_("lora_" in name)

    def train(self, mode: bool = True) -> FavorPreTrainedModel:
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

    def set_output_embeddings(self, value: nn.Module) -> None:
        self.causal_lm.set_output_embeddings(value)

    def resize_token_embeddings(
        self, new_num_tokens: int | None = None, *args: Any, **kwargs: Any
    ) -> nn.Embedding:
        """Resize the LLM's input and output embeddings together (e.g. after adding special tokens), LoRA or not;
        ``config.text_config.vocab_size`` follows. Arguments as `PreTrainedModel.resize_token_embeddings`.

        The LLM no longer matches its ``component_sources["text"]`` checkpoint, so that source is dropped: the next
        `save_pretrained` writes the resized LLM into the checkpoint."""
        before = self.get_input_embeddings().weight.shape[0]
        embeddings = self.causal_lm.resize_token_embeddings(new_num_tokens, *args, **kwargs)
        self.config.text_config.vocab_size = embeddings.weight.shape[0]
        self.causal_lm.config.vocab_size = embeddings.weight.shape[0]
        sources = self.config.component_sources or {}
        if embeddings.weight.shape[0] != before and "text" in sources:
            self.config.component_sources = {k: v for k, v in sources.items() if k != "text"}
        self.freeze_frozen_parts()
        return embeddings

    def set_attn_implementation(self, attn_implementation: str | dict, **kwargs: Any) -> None:
        """Set the attention implementation (``"eager"``, ``"sdpa"``, ...) of every sub-model: the LLM, the frame
        encoder and its Q-Former, the audio encoders, and the causal Q-Former's attention backend."""
        super().set_attn_implementation(attn_implementation, **kwargs)
        impl = (
            attn_implementation if isinstance(attn_implementation, str) else attn_implementation.get("", None)
        )
        if impl in ("eager", "sdpa"):
            for qformer in self.media_encoder.qformers:
                qformer.set_attention_backend(impl)

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """Every parameter that training changes (projections, Q-Former, LoRA), under `state_dict` names."""
        names = {n for n, p in self.named_parameters() if p.requires_grad}
        return {k: v for k, v in self.state_dict().items() if k in names}

    def fp32_parameter_names(self) -> list[str]:
        """Parameters `to_mixed_precision` keeps in float32: those under a ``_keep_in_fp32_modules`` module."""
        if not self.config.qformer_fp32:
            return []
        pattern = re.compile(
            "|".join(rf"(^|\.){re.escape(m)}(\.|$)" for m in sorted(self._keep_in_fp32_modules))
        )
        return [n for n, _ in self.named_parameters() if pattern.search(n)]

    def to_mixed_precision(self, dtype: torch.dtype = torch.bfloat16) -> FavorPreTrainedModel:
        """Cast to ``dtype`` except `fp32_parameter_names` (the causal Q-Former and audio projections).

        The causal Q-Former's LayerNorms over 1536-wide features and its softmaxes over 320-token windows are
        where half precision loses most; it is small (tens of millions of parameters), so, as transformers does
        for BLIP-2's Q-Former, it stays in float32 and its output is cast to the LLM's dtype.
        """
        self.to(dtype)
        keep = set(self.fp32_parameter_names())
        for name, param in self.named_parameters():
            if name in keep:
                param.data = param.data.float()
        return self

    def activation_checkpointing_enable(
        self, activation_checkpointing_kwargs: dict | None = None, **kwargs: Any
    ) -> None:
        """Recompute activations in the backward pass of the causal Q-Former and the LLM (the frozen encoders run
        without gradients anyway). Non-reentrant checkpointing by default, so frozen embeddings need no grads.
        A run-time switch: it is not saved with the model."""
        ckpt_kwargs = {"use_reentrant": False, **(activation_checkpointing_kwargs or {})}
        self.causal_lm.activation_checkpointing_enable(activation_checkpointing_kwargs=ckpt_kwargs, **kwargs)
        for qformer in self.media_encoder.qformers:
            qformer.gradient_checkpointing_enable()

    def activation_checkpointing_disable(self) -> None:
        """Undo `activation_checkpointing_enable`."""
        self.causal_lm.activation_checkpointing_disable()
        for qformer in self.media_encoder.qformers:
            qformer.gradient_checkpointing_disable()

    def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs: dict | None = None) -> None:
        """The transformers v4 name of `activation_checkpointing_enable`."""
        self.activation_checkpointing_enable(gradient_checkpointing_kwargs)

    def gradient_checkpointing_disable(self) -> None:
        """The transformers v4 name of `activation_checkpointing_disable`."""
        self.activation_checkpointing_disable()

    # ------------------------------------------------------------------------------------------- save / load
    def save_pretrained(
        self, save_directory: str | os.PathLike, merge_lora: bool = False, **kwargs: Any
    ) -> None:
        """Save the model; see `favor_llm.checkpoint.save_favor_model` (delta by default, frozen parts without a
        source embedded; ``merge_lora=True``: everything, LoRA merged). ``push_to_hub=True`` uploads the directory
        to ``repo_id``; ``max_shard_size`` shards the weights; ``is_main_process=False`` (other ranks of a
        distributed run, as transformers' Trainer passes it) writes nothing. The weights always come from the model
        itself (a ``state_dict`` argument is not used) and are always safetensors."""
        push = kwargs.pop("push_to_hub", False)
        repo_id = kwargs.pop("repo_id", None)
        if not kwargs.pop("is_main_process", True):
            return
        checkpoint.save_favor_model(self, save_directory, merge_lora, kwargs.pop("max_shard_size", "5GB"))
        if push:
            from huggingface_hub import upload_folder

            kwargs = {k: v for k, v in kwargs.items() if k not in ("safe_serialization", "state_dict")}
            upload_folder(
                repo_id=repo_id or os.path.basename(save_directory), folder_path=str(save_directory), **kwargs
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
        """Write the frozen parts under ``directory`` and reference them in ``config.component_sources``, so that
        later `save_pretrained` calls write small deltas."""
        return checkpoint.save_frozen_components(self, directory)

    @classmethod
    def from_pretrained(
        cls, pretrained_model_name_or_path: str | os.PathLike, *model_args: Any, **kwargs: Any
    ) -> Any:
        """Load a FAVOR checkpoint (delta or full; local directory or Hub repo); see
        `favor_llm.checkpoint.load_favor_model` for the arguments (``config``, ``dtype`` incl. ``"auto"``,
        ``device_map``, ``attn_implementation``, ``output_loading_info``; the rest go to the LLM's
        ``from_pretrained``).

        Raises:
            ValueError: a missing, unexpected or wrongly shaped weight, or a checkpoint that is not FAVOR's.
        """
        if model_args:
            raise ValueError(
                f"model_args: FavorModel.from_pretrained takes no positional arguments, got {model_args}"
            )
        return checkpoint.load_favor_model(cls, pretrained_model_name_or_path, **kwargs)


def _initialised(module: nn.Module) -> bool:
    return bool(getattr(module, "_is_hf_initialized", False))
