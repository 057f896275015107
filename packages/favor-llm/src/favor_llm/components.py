"""The parts of a `FavorModel`, declared once: name, module, trainable or frozen, and where the weights come from.

Everything that treats parts differently reads `components` instead of restating names: checkpoint saving and
loading (`favor_llm.checkpoint`), the released-checkpoint converter, parameter counts and ``favor info``.

========================  ===========================================  =========  ===================================
name                      module (in `FavorModel`)                     trainable  weights
========================  ===========================================  =========  ===================================
``vision``                ``media_encoder.vision``                     no         ``source``: component_sources
``audio_<k>``             ``media_encoder.audio_encoders.<k>.encoder`` no         ``source``: component_sources
``audio_projections``     ``media_encoder.audio_projections``          yes        ``checkpoint``: model.safetensors
``synchroniser``          ``media_encoder.synchroniser``               (none)     ``none``: no parameters
``causal_qformer``        ``media_encoder.causal_qformer``             yes        ``checkpoint``: model.safetensors
``audio_qformer``         ``media_encoder.audio_qformer`` (separate)   yes        ``checkpoint``: model.safetensors
``language_projection``   ``language_projection``                      yes        ``checkpoint``: model.safetensors
``text``                  ``language_model`` (base weights)            no         ``source``: component_sources
``lora``                  ``language_model`` (``lora_*`` weights)      yes        ``adapter``: adapter/ (peft)
========================  ===========================================  =========  ===================================
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # `import favor_llm` imports this module: no torch at import time
    from torch import nn

__all__ = ["ADAPTER", "CHECKPOINT", "SOURCE", "Component", "component_of", "components", "resolve"]

#: Weights referenced through ``config.component_sources[name]`` (frozen pretrained parts).
SOURCE = "source"
#: Weights stored in the FAVOR checkpoint's ``model.safetensors`` (trained parts).
CHECKPOINT = "checkpoint"
#: Weights stored as a peft adapter (``adapter/``).
ADAPTER = "adapter"


@dataclass(frozen=True)
class Component:
    """One part of the model.

    Attributes:
        name: the part's name (also its key in ``config.component_sources`` for ``weights == "source"``).
        module: dotted path of its module inside `FavorModel`.
        trainable: whether training updates it.
        weights: ``"source"``, ``"checkpoint"``, ``"adapter"`` or ``"none"`` (no parameters).
        description: what it is, for ``favor info``.
    """

    name: str
    module: str
    trainable: bool
    weights: str
    description: str

    @property
    def prefix(self) -> str:
        """Its state-dict prefix in `FavorModel` (``module + "."``)."""
        return self.module + "."


def components(config: Any) -> list[Component]:
    """The components of the model ``config`` (a `FavorConfig`) describes, in data-flow order."""
    vision = config.vision_config.model_type + (
        f" + {config.vision_qformer_config.model_type}" if config.vision_qformer_config is not None else ""
    )
    parts = [Component("vision", "media_encoder.vision", False, SOURCE, f"frame encoder ({vision})")]
    parts += [
        Component(
            f"audio_{k}",
            f"media_encoder.audio_encoders.{k}.encoder",
            False,
            SOURCE,
            f"audio encoder ({c.model_type})",
        )
        for k, c in enumerate(config.audio_configs)
    ]
    parts += [
        Component(
            "audio_projections", "media_encoder.audio_projections", True, CHECKPOINT, "audio projections"
        ),
        Component("synchroniser", "media_encoder.synchroniser", False, "none", "temporal synchroniser"),
        Component("causal_qformer", "media_encoder.causal_qformer", True, CHECKPOINT, "causal Q-Former"),
    ]
    if getattr(config, "av_fusion", "synchronised") == "separate":  # the no-synchronisation ablation
        parts.append(
            Component(
                "audio_qformer", "media_encoder.audio_qformer", True, CHECKPOINT, "audio Q-Former (separate)"
            )
        )
    parts += [
        Component("language_projection", "language_projection", True, CHECKPOINT, "projection into the LLM"),
        Component("text", "language_model", False, SOURCE, f"LLM ({config.text_config.model_type})"),
    ]
    if config.use_lora:
        parts.append(Component("lora", "language_model", True, ADAPTER, "LoRA adapters of the LLM"))
    return parts


def component_of(parameter_name: str, parts: list[Component]) -> Component:
    """The component a `FavorModel` parameter belongs to (LoRA weights to ``lora``, else the longest module)."""
    if ".lora_" in parameter_name:
        lora = [c for c in parts if c.weights == ADAPTER]
        if lora:
            return lora[0]
    matches = [c for c in parts if parameter_name.startswith(c.prefix) and c.weights != ADAPTER]
    if not matches:
        raise ValueError(f"{parameter_name}: belongs to no declared component")
    return max(matches, key=lambda c: len(c.module))


def resolve(model: nn.Module, component: Component) -> nn.Module:
    """The module of ``component`` in ``model``."""
    return model.get_submodule(component.module)
