"""Saving and loading FAVOR checkpoints: the small "delta" (released style) and the full merged checkpoint.

Which parts go where is read from the model's component declaration (`favor_llm.components`): ``checkpoint``
parts in ``model.safetensors``, the ``adapter`` part (LoRA) in ``adapter/``, ``source`` parts (the frozen
encoders and the base LLM) referenced through ``config.component_sources``.

Delta checkpoint (``FavorModel.save_pretrained(dir)``)::

    dir/config.json               FavorConfig, with ``component_sources`` naming where the frozen parts come from
    dir/generation_config.json    ``model.generation_config`` (restored on load)
    dir/favor_checkpoint.json     {"format": "delta", ...}
    dir/model.safetensors         trainable non-LoRA weights: media_encoder.audio_projections.*,
                                  media_encoder.causal_qformer.*, language_projection.* (sharded past
                                  ``max_shard_size`` with ``huggingface_hub.save_torch_state_dict``)
    dir/adapter/                  the LoRA adapter (peft: adapter_config.json + adapter_model.safetensors)

The frozen parts are referenced, not copied: ``component_sources = {"vision": {"name_or_path": ..., "prefix": ...},
"audio_0": {...}, "text": {"name_or_path": ...}}``; a local folder also relative to the checkpoint (tried first,
so a run folder moved whole still loads; see `favor_llm.sources`). A frozen part without a source (a model built
from a config) is written into the checkpoint instead (``vision/``, ``audio_<k>/``, ``text/``, entries
``"embedded": true``), with one log line saying so, so `save_pretrained` always works. ``vision`` holds the keys of `FrameEncoder`
(``vision_model.*``, ``qformer.*``, ``query_tokens``: the key layout of transformers' InstructBLIP checkpoints, so
``Salesforce/instructblip-vicuna-13b`` works with prefix ``""``), ``audio_<k>`` a ``WhisperEncoder``
(``openai/whisper-large-v2`` keys start with ``model.encoder.``; the prefix is found automatically), ``text`` any
``AutoModelForCausalLM`` checkpoint (loaded with ``from_pretrained``, so ``device_map`` / ``low_cpu_mem_usage`` work).

Full checkpoint (``save_pretrained(dir, merge_lora=True)``): everything inside the directory, the LoRA deltas
merged into the LLM (``config.use_lora = False``): ``vision/``, ``audio_<k>/`` (safetensors), ``text/`` (a plain
transformers causal-LM checkpoint), ``model.safetensors`` (trainable weights); ``component_sources`` entries carry
``"embedded": true`` (paths relative to the checkpoint).

Loading checks everything: a missing, unexpected or wrongly shaped tensor raises ``ValueError`` naming it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from .components import ADAPTER, CHECKPOINT, SOURCE, Component, components
from .configuration import FavorConfig
from .sources import loaded_source, referenced_from, resolve_source
from .weights import (
    PART_ID_NAME,
    WEIGHTS_INDEX_NAME,
    assign_strict,
    key_index,
    load_module_weights,
    local_or_download,
    part_fingerprint,
    part_id,
    read_tensors,
    resolve_checkpoint_files,
    short_list,
)

logger = logging.getLogger("favor_llm")
#: A `FavorModel` (typed loosely: this module is imported by `favor_llm.modeling`, never the other way round).
FavorModel = Any

__all__ = [
    "CHECKPOINT_INFO_NAME",
    "load_favor_model",
    "load_module_weights",
    "merged_state_dict",
    "resolve_checkpoint_files",
    "save_favor_model",
    "save_frozen_components",
]

CHECKPOINT_INFO_NAME = "favor_checkpoint.json"
GENERATION_CONFIG_NAME = "generation_config.json"
ADAPTER_DIR = "adapter"


# --------------------------------------------------------------------------------------------------- LoRA merge
def merged_state_dict(model: FavorModel) -> dict[str, torch.Tensor]:
    """Every weight of ``model`` with the LoRA deltas merged into the LLM, under the keys of a model without LoRA.

    ``language_model.base_model.model.<path>.base_layer.weight`` + scale * B @ A -> ``language_model.<path>.weight``.
    The model itself is not modified.
    """
    state = model.state_dict()
    if not model.config.use_lora:
        return dict(state)
    out: dict[str, torch.Tensor] = {}
    lm_prefix = model.llm_prefix
    deltas: dict[str, torch.Tensor] = {}
    for name, module in model.causal_lm.named_modules():
        if hasattr(module, "get_delta_weight") and hasattr(module, "base_layer"):
            for adapter in getattr(module, "active_adapters", ["default"]):
                if adapter in getattr(module, "lora_A", {}):
                    delta = module.get_delta_weight(adapter).detach()
                    key = f"language_model.{name}.weight"
                    deltas[key] = deltas[key] + delta if key in deltas else delta
    for key, value in state.items():
        if not key.startswith(lm_prefix):
            out[key] = value
            continue
        if ".lora_" in key:
            continue
        plain = "language_model." + key[len(lm_prefix) :].replace(".base_layer.", ".")
        if plain in deltas:
            value = (value.float() + deltas[plain].float()).to(value.dtype)
        out[plain] = value
    return out


def _base_llm_state_dict(model: FavorModel) -> dict[str, torch.Tensor]:
    """The LLM's base weights (LoRA dropped), under the causal LM's own keys."""
    state = model.causal_lm.state_dict()
    return {k.replace(".base_layer.", "."): v for k, v in state.items() if ".lora_" not in k}


# ----------------------------------------------------------------------------------------------------- saving
def _save_weights(state: dict[str, torch.Tensor], directory: Path, max_shard_size: str | int = "5GB") -> None:
    """``model.safetensors`` (or shards + index) with huggingface_hub, stale weight files removed first."""
    from huggingface_hub import save_torch_state_dict

    directory.mkdir(parents=True, exist_ok=True)
    _clear_weights(directory)
    state = {k: v.detach().contiguous().cpu() for k, v in state.items()}
    save_torch_state_dict(state, directory, max_shard_size=max_shard_size, metadata={"format": "pt"})


def _clear_weights(directory: Path) -> None:
    for stale in [*directory.glob("model*.safetensors"), directory / WEIGHTS_INDEX_NAME]:
        stale.unlink(missing_ok=True)


def _parts(model: FavorModel, weights: str) -> list[Component]:
    return [c for c in components(model.config) if c.weights == weights]


def _checkpoint_state(model: FavorModel) -> dict[str, torch.Tensor]:
    """The weights stored in ``model.safetensors``: those of the declared ``checkpoint`` parts."""
    prefixes = tuple(c.prefix for c in _parts(model, CHECKPOINT))
    return {k: v for k, v in model.state_dict().items() if k.startswith(prefixes)}


def _write_sources(
    model: FavorModel, root: Path, names: Iterable[str], merge_lora: bool, embedded: bool
) -> dict[str, dict]:
    """Write the named ``source`` parts under ``root/<name>/`` (the LLM LoRA-merged or without LoRA); their
    ``component_sources`` entries."""
    sources: dict[str, dict] = {}
    for part in _parts(model, SOURCE):
        if part.name not in names:
            continue
        directory = root / part.name
        directory.mkdir(parents=True, exist_ok=True)
        if (
            part.name == "text"
        ):  # a plain transformers checkpoint, so from_pretrained(device_map=...) loads it
            _clear_weights(directory)
            if merge_lora:
                prefix = "language_model."
                llm_state = {
                    k[len(prefix) :]: v for k, v in merged_state_dict(model).items() if k.startswith(prefix)
                }
            else:
                llm_state = _base_llm_state_dict(model)
            content = part_id(llm_state)  # before the save, which may empty the dict
            model.causal_lm.save_pretrained(str(directory), state_dict=llm_state)
            entry: dict[str, Any] = {}
        else:
            state = model.get_submodule(part.module).state_dict()
            content = part_id(state)
            _save_weights(state, directory)
            entry = {"prefix": ""}
        (directory / PART_ID_NAME).write_text(content + "\n")
        where = (
            {"name_or_path": part.name, "embedded": True}
            if embedded
            else {"name_or_path": str(directory), "fingerprint": part_fingerprint(directory)}
        )
        sources[part.name] = {**where, **entry}
    return sources


def save_favor_model(
    model: FavorModel, save_directory: str | Path, merge_lora: bool = False, max_shard_size: str | int = "5GB"
) -> Path:
    """Write a delta (default) or full merged checkpoint of ``model`` to ``save_directory`` (see module doc).

    A delta whose frozen parts have no ``component_sources`` entry writes those parts into the checkpoint (one log
    line says so); it loads like any other.

    The save is atomic (issue 10): everything is written into a staging folder beside ``save_directory`` and
    swapped in whole (`favor_qformer.saving.atomic_save_directory`), so a full disk, Ctrl-C or a killed process
    leaves the complete previous checkpoint; other files in the folder (a processor saved there, the user's notes)
    are kept, and the old checkpoint's files that the new one does not write are dropped.
    """
    from favor_qformer.saving import atomic_save_directory, final_directory

    root = Path(save_directory)
    frozen = [c.name for c in _parts(model, SOURCE)]
    owned = [
        "model*.safetensors",
        WEIGHTS_INDEX_NAME,
        "config.json",
        GENERATION_CONFIG_NAME,
        CHECKPOINT_INFO_NAME,
        ADAPTER_DIR,
        *frozen,  # embedded frozen parts of an earlier save
    ]
    # where the files end up: `root`, or the target of an enclosing atomic save whose staging folder `root` is
    target = final_directory(root)
    with atomic_save_directory(root, owned=owned) as staging:
        _write_checkpoint(model, staging, frozen, merge_lora, max_shard_size, target=target)
    return root


def _write_checkpoint(
    model: FavorModel,
    root: Path,
    frozen: list[str],
    merge_lora: bool,
    max_shard_size: str | int,
    target: Path,
) -> None:
    """Every file of the checkpoint, written into the (staging) folder ``root`` that becomes ``target``."""
    config = FavorConfig.from_dict(model.config.to_dict())
    if merge_lora:
        config.component_sources = _write_sources(model, root, frozen, merge_lora=True, embedded=True)
        config.use_lora = False
        info: dict[str, Any] = {"format": "full", "lora_merged": bool(model.config.use_lora)}
    else:
        known = model.config.component_sources or {}
        missing = [name for name in frozen if name not in known]
        if missing:
            logger.warning(
                "save_pretrained: no component_sources for the frozen part(s) %s; writing them into %s (set "
                "config.component_sources or call save_frozen_components(dir) once for small delta checkpoints)",
                ", ".join(missing),
                target,
            )
        # A part referenced inside this very folder (a model loaded from a checkpoint that embedded it, saved back
        # in place) is embedded again: an absolute path to itself would break when the folder is moved.
        inside = [name for name in frozen if name in known and _inside(known[name], target)]
        config.component_sources = {
            **{k: referenced_from(v, target) for k, v in known.items() if k in frozen and k not in inside},
            **_write_sources(model, root, [*missing, *inside], merge_lora=False, embedded=True),
        }
        if _parts(model, ADAPTER):
            model.language_model.save_pretrained(str(root / ADAPTER_DIR))
        info = {"format": "delta", "embedded": missing}
    state = _checkpoint_state(model)
    info["trainable_keys"] = sorted(state)
    _save_weights(state, root, max_shard_size)
    config.save_pretrained(root)
    # generation settings (the LLM's, plus the user's changes) travel with the checkpoint, as in transformers
    model.generation_config.save_pretrained(root)
    (root / CHECKPOINT_INFO_NAME).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")


def _inside(source: dict, root: Path) -> bool:
    """Whether a (non-embedded, local) ``component_sources`` entry points into the folder ``root``."""
    path = Path(str(source.get("name_or_path", ""))).expanduser()
    if source.get("embedded") or not path.is_absolute():
        return False
    return path.resolve().is_relative_to(root.resolve())


def save_frozen_components(model: FavorModel, directory: str | Path) -> dict[str, dict]:
    """Write the frozen parts (vision, each audio encoder, the base LLM without LoRA) as checkpoints under
    ``directory`` and point ``model.config.component_sources`` at them, so delta checkpoints can reference them.

    Returns:
        The new ``component_sources``.
    """
    root = Path(directory).resolve()
    root.mkdir(parents=True, exist_ok=True)
    names = [c.name for c in _parts(model, SOURCE)]
    model.config.component_sources = _write_sources(model, root, names, merge_lora=False, embedded=False)
    return model.config.component_sources


# ---------------------------------------------------------------------------------------------------- loading
def _resolve_dtype(dtype: Any) -> torch.dtype | str | None:
    """``None``, ``"auto"`` or a `torch.dtype` (names such as ``"bfloat16"`` or ``"torch.float16"`` accepted)."""
    if dtype is None or dtype == "auto" or isinstance(dtype, torch.dtype):
        return dtype
    if isinstance(dtype, str):
        found = getattr(torch, dtype.removeprefix("torch."), None)
        if isinstance(found, torch.dtype):
            return found
    raise ValueError(f"dtype: expected a torch.dtype, its name (e.g. 'bfloat16') or 'auto', got {dtype!r}")


#: State-dict prefixes of checkpoints written before the restructuring (issue 9) -> today's.
_PRE_RENAME_KEYS = {
    "vision.": "media_encoder.vision.",
    "audio_encoders.": "media_encoder.audio_encoders.",
    "audio_projections.": "media_encoder.audio_projections.",
    "qformer.": "media_encoder.causal_qformer.",
}


def _load_checkpoint_parts(model: FavorModel, root: Path) -> None:
    """The ``checkpoint`` parts from ``model.safetensors`` (or its shards), strictly."""
    index = key_index(resolve_checkpoint_files(root))
    stored = read_tensors(index, index.keys())
    parts = _parts(model, CHECKPOINT)
    expected = {k for k in model.state_dict() if k.startswith(tuple(c.prefix for c in parts))}
    missing, unexpected = sorted(expected - set(stored)), sorted(set(stored) - expected)
    if missing or unexpected:
        renamed = sorted({old for key in unexpected for old in _PRE_RENAME_KEYS if key.startswith(old)})
        hint = (
            "; it was saved before the media parts moved under media_encoder ("
            + ", ".join(f"{old}* -> {_PRE_RENAME_KEYS[old]}*" for old in renamed)
            + ", see CHANGELOG.md): save it again from the code that wrote it after renaming, or convert the "
            "released checkpoint again with `favor convert`"
            if renamed
            else ""
        )
        raise ValueError(
            f"checkpoint {root}: trainable weights do not match the model: missing {short_list(missing)}, "
            f"unexpected {short_list(unexpected)}{hint}"
        )
    for part in parts:
        tensors = {k[len(part.prefix) :]: v for k, v in stored.items() if k.startswith(part.prefix)}
        assign_strict(model.get_submodule(part.module), tensors, f"{part.name} from {root}")


def _load_adapter(model: FavorModel, root: Path) -> None:
    """The LoRA adapter from ``adapter/``, strictly (keys and shapes)."""
    from peft import get_peft_model_state_dict, set_peft_model_state_dict
    from safetensors.torch import load_file

    adapter_file = root / ADAPTER_DIR / "adapter_model.safetensors"
    if not adapter_file.is_file():
        raise ValueError(f"checkpoint {root}: use_lora is set but {adapter_file} is missing")
    adapter = load_file(str(adapter_file))
    expected = get_peft_model_state_dict(model.language_model)
    if set(adapter) != set(expected):
        raise ValueError(
            f"checkpoint {root}: LoRA adapter keys do not match the model: missing "
            f"{short_list(sorted(set(expected) - set(adapter)))}, unexpected {short_list(sorted(set(adapter) - set(expected)))}"
        )
    for key, value in adapter.items():
        if tuple(value.shape) != tuple(expected[key].shape):
            raise ValueError(
                f"checkpoint {root}: LoRA weight {key} has shape {tuple(value.shape)}, model {tuple(expected[key].shape)}"
            )
    set_peft_model_state_dict(model.language_model, adapter)


def load_favor_model(
    cls: type,
    pretrained_model_name_or_path: str | Path,
    config: FavorConfig | None = None,
    dtype: torch.dtype | str | None = None,
    device_map: Any = None,
    attn_implementation: str | dict | None = None,
    output_loading_info: bool = False,
    **llm_kwargs: Any,
) -> Any:
    """Load a checkpoint written by `save_favor_model` (delta or full).

    Args:
        cls: `FavorModel` (or a subclass).
        pretrained_model_name_or_path: the checkpoint directory or Hub repo id.
        config: a config to use instead of the checkpoint's.
        dtype: load the LLM in this dtype and cast the rest with `FavorModel.to_mixed_precision` (a `torch.dtype`,
            its name such as ``"bfloat16"``, or ``"auto"``: the dtype the LLM's weights were saved in).
        device_map: passed to the LLM's ``from_pretrained``; the other parts follow its input embeddings.
        attn_implementation: ``"eager"`` / ``"sdpa"`` / ...: set on every sub-model.
        output_loading_info: also return ``{"missing_keys": [], "unexpected_keys": [], "mismatched_keys": [],
            "error_msgs": []}`` (always empty: any mismatch is a ``ValueError``), as transformers does.
        **llm_kwargs: passed to the LLM's ``AutoModelForCausalLM.from_pretrained``.
    """
    from transformers import AutoModelForCausalLM, GenerationConfig
    from transformers.initialization import no_init_weights

    dtype = _resolve_dtype(llm_kwargs.pop("torch_dtype", dtype))
    for ignored in ("trust_remote_code", "_from_auto", "adapter_kwargs", "_commit_hash", "name_or_path"):
        llm_kwargs.pop(ignored, None)
    root = local_or_download(pretrained_model_name_or_path)
    info_file = root / CHECKPOINT_INFO_NAME
    if not info_file.is_file():
        raise ValueError(
            f"pretrained_model_name_or_path: {root} has no {CHECKPOINT_INFO_NAME}; it is not a FAVOR checkpoint "
            "(convert released checkpoints with `favor convert`)"
        )
    info = json.loads(info_file.read_text())
    if info.get("format") not in ("delta", "full"):
        raise ValueError(f"{info_file}: unknown format {info.get('format')!r} (expected 'delta' or 'full')")
    config = config if config is not None else FavorConfig.from_pretrained(root)
    sources = config.component_sources or {}
    frozen = [c for c in components(config) if c.weights == SOURCE]
    missing = [c.name for c in frozen if c.name not in sources]
    if missing:
        raise ValueError(f"component_sources: the checkpoint {root} names no source for {missing}")

    if attn_implementation is not None:
        llm_kwargs["attn_implementation"] = attn_implementation
    from safetensors import SafetensorError

    text_path = resolve_source(root, sources["text"], "text")
    try:
        llm = AutoModelForCausalLM.from_pretrained(
            text_path, dtype=dtype, device_map=device_map, **llm_kwargs
        )
    except SafetensorError as err:  # its message names no file
        raise ValueError(
            f"component_sources['text']: the language model's weights in {text_path} are not readable "
            f"safetensors ({err}); they are truncated or damaged: save or download them again"
        ) from err
    if dtype == "auto":  # the dtype the LLM's weights were saved in decides for the whole model
        dtype = None if llm.dtype == torch.float32 else llm.dtype
    with no_init_weights():  # every other weight is loaded below, strictly
        model = cls(config, language_model=llm)
    if device_map is not None:  # the parts around the LLM follow it (to where its input embeddings are)
        target = llm.get_input_embeddings().weight.device
        model.media_encoder.to(target)
        model.language_projection.to(target)
    for part in frozen:
        if part.name != "text":
            src = sources[part.name]
            module = model.get_submodule(part.module)
            load_module_weights(module, resolve_source(root, src, part.name), src.get("prefix"), part.name)
    _load_checkpoint_parts(model, root)
    if any(c.weights == ADAPTER for c in components(config)):
        _load_adapter(model, root)
    # Local parts are referenced where they were loaded from (embedded ones too), so that a delta saved from this
    # model (the default `save_pretrained`, e.g. after fine-tuning a full or converted checkpoint) loads from anywhere.
    model.config.component_sources = {name: loaded_source(root, src, name) for name, src in sources.items()}
    if (root / GENERATION_CONFIG_NAME).is_file():
        model.generation_config = GenerationConfig.from_pretrained(root)
    model.freeze_frozen_parts()
    model.eval()
    if dtype is not None:
        model.to_mixed_precision(dtype)
    if attn_implementation is not None:
        model.set_attn_implementation(attn_implementation)
    if output_loading_info:
        return model, {"missing_keys": [], "unexpected_keys": [], "mismatched_keys": [], "error_msgs": []}
    return model
