"""Saving and loading FAVOR checkpoints: the small "delta" (released style) and the full merged checkpoint.

Delta checkpoint (``FavorModel.save_pretrained(dir)``)::

    dir/config.json               FavorConfig, with ``component_sources`` naming where the frozen parts come from
    dir/generation_config.json    ``model.generation_config`` (restored on load)
    dir/favor_checkpoint.json     {"format": "delta", ...}
    dir/model.safetensors         trainable non-LoRA weights: audio_projections.*, qformer.*, language_projection.*
    dir/adapter/                  the LoRA adapter (peft: adapter_config.json + adapter_model.safetensors)

The frozen parts are referenced, not copied: ``component_sources = {"vision": {"name_or_path": ..., "prefix": ...},
"audio_0": {...}, "text": {"name_or_path": ...}}``. ``vision`` holds the keys of `FrameEncoder`
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
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

if TYPE_CHECKING:
    from .modeling import FavorModel

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
WEIGHTS_NAME = "model.safetensors"
GENERATION_CONFIG_NAME = "generation_config.json"
WEIGHTS_INDEX_NAME = "model.safetensors.index.json"
ADAPTER_DIR = "adapter"
_TRAINABLE_PREFIXES = ("audio_projections.", "qformer.", "language_projection.")
_AUDIO_PREFIX_CANDIDATES = ("", "encoder.", "model.encoder.", "audio_encoders.0.encoder.")


# ------------------------------------------------------------------------------------------------ file helpers
def _local_or_download(name_or_path: str | Path, filenames: Iterable[str] | None = None) -> Path:
    """A local directory, or a snapshot of a Hub repo (only safetensors / json files)."""
    path = Path(name_or_path)
    if path.is_dir():
        return path
    if path.exists():
        raise ValueError(f"name_or_path: {path} is a file; expected a directory or a Hub repo id")
    from huggingface_hub import snapshot_download

    try:
        return Path(
            snapshot_download(
                str(name_or_path), allow_patterns=list(filenames or ["*.json", "*.safetensors"])
            )
        )
    except Exception as err:  # offline, missing repo, ...: one clear error
        raise ValueError(
            f"name_or_path: {name_or_path!r} is not a local directory and could not be fetched ({err})"
        ) from err


def resolve_checkpoint_files(name_or_path: str | Path) -> list[Path]:
    """The safetensors files of a checkpoint (a single ``model.safetensors`` or the shards of an index)."""
    root = _local_or_download(name_or_path)
    index = root / WEIGHTS_INDEX_NAME
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return [root / s for s in shards]
    single = root / WEIGHTS_NAME
    if single.is_file():
        return [single]
    found = sorted(root.glob("*.safetensors"))
    if found:
        return found
    raise ValueError(
        f"name_or_path: no safetensors weights in {root} (expected {WEIGHTS_NAME} or {WEIGHTS_INDEX_NAME})"
    )


def _key_index(files: list[Path]) -> dict[str, Path]:
    index: dict[str, Path] = {}
    for f in files:
        with safe_open(str(f), framework="pt") as handle:
            for key in handle.keys():
                index[key] = f
    return index


def _read(index: dict[str, Path], keys: Iterable[str]) -> dict[str, torch.Tensor]:
    by_file: dict[Path, list[str]] = {}
    for k in keys:
        by_file.setdefault(index[k], []).append(k)
    out = {}
    for f, ks in by_file.items():
        with safe_open(str(f), framework="pt") as handle:
            for k in ks:
                out[k] = handle.get_tensor(k)
    return out


def _assign_strict(module: nn.Module, tensors: dict[str, torch.Tensor], what: str) -> None:
    """Load ``tensors`` into ``module`` requiring exactly its state-dict keys and shapes."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise ValueError(
            f"{what}: weights do not match the model: missing {_short(missing)}, unexpected {_short(unexpected)}"
        )
    wrong = [
        f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(expected[k].shape)}"
        for k, v in tensors.items()
        if tuple(v.shape) != tuple(expected[k].shape)
    ]
    if wrong:
        raise ValueError(f"{what}: shape mismatch for {_short(wrong)}")
    module.load_state_dict(tensors, strict=True, assign=_is_meta(module))


def _is_meta(module: nn.Module) -> bool:
    return any(p.is_meta for p in module.parameters())


def _short(items: list[str], limit: int = 8) -> str:
    if not items:
        return "[]"
    head = ", ".join(items[:limit])
    return f"[{head}{', ...' if len(items) > limit else ''}] ({len(items)})"


def load_module_weights(
    module: nn.Module, name_or_path: str | Path, prefix: str | None = None, what: str = ""
) -> str:
    """Load ``module``'s weights from a (possibly bigger) checkpoint whose keys are ``prefix + module key``.

    With ``prefix=None`` the prefix is found among ``""``, ``"encoder."``, ``"model.encoder."``, ... as the one
    under which every key of the module exists. Extra tensors in the checkpoint are ignored (e.g. the LLM in an
    InstructBLIP checkpoint); a missing or wrongly shaped tensor raises ``ValueError``.

    Returns:
        The prefix used.
    """
    what = what or type(module).__name__
    index = _key_index(resolve_checkpoint_files(name_or_path))
    expected = list(module.state_dict())
    candidates = [prefix] if prefix is not None else list(_AUDIO_PREFIX_CANDIDATES)
    for p in candidates:
        if all(p + k in index for k in expected):
            tensors = _read(index, [p + k for k in expected])
            _assign_strict(
                module, {k[len(p) :]: v for k, v in tensors.items()}, f"{what} from {name_or_path}"
            )
            return p
    best = max(candidates, key=lambda p: sum(p + k in index for k in expected))
    missing = [best + k for k in expected if best + k not in index]
    raise ValueError(
        f"{what}: {name_or_path} lacks {len(missing)} of the {len(expected)} weights it needs "
        f"(prefix {best!r}): {_short(missing)}"
    )


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
    lm_prefix = "language_model.base_model.model."
    deltas: dict[str, torch.Tensor] = {}
    for name, module in model.language_model.base_model.model.named_modules():
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
def _save_sharded(state: dict[str, torch.Tensor], directory: Path, max_shard_size: str | int) -> None:
    from huggingface_hub import split_torch_state_dict_into_shards

    state = {k: v.detach().contiguous().cpu() for k, v in state.items()}
    split = split_torch_state_dict_into_shards(state, max_shard_size=max_shard_size)
    for filename, keys in split.filename_to_tensors.items():
        save_file({k: state[k] for k in keys}, str(directory / filename), metadata={"format": "pt"})
    if split.is_sharded:
        total = sum(v.numel() * v.element_size() for v in state.values())
        index = {"metadata": {"total_size": total}, "weight_map": split.tensor_to_filename}
        (directory / WEIGHTS_INDEX_NAME).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")


def _clear_weights(directory: Path) -> None:
    for stale in [*directory.glob("model*.safetensors"), directory / WEIGHTS_INDEX_NAME]:
        stale.unlink(missing_ok=True)


def _trainable_non_lora(model: FavorModel) -> dict[str, torch.Tensor]:
    state = model.state_dict()
    return {k: v for k, v in state.items() if k.startswith(_TRAINABLE_PREFIXES)}


def _component_names(config: Any) -> list[str]:
    return ["vision", *[f"audio_{k}" for k in range(len(config.audio_configs))], "text"]


def _write_components(model: FavorModel, root: Path, merge_lora: bool, embedded: bool) -> dict[str, dict]:
    """Write vision/, audio_<k>/ and text/ (the LLM, LoRA merged or dropped) under ``root``; their sources."""
    sources: dict[str, dict] = {}

    def where(name: str) -> dict:
        return {"name_or_path": name, "embedded": True} if embedded else {"name_or_path": str(root / name)}

    vision_dir = root / "vision"
    vision_dir.mkdir(parents=True, exist_ok=True)
    _clear_weights(vision_dir)
    _save_sharded(model.vision.state_dict(), vision_dir, "5GB")
    sources["vision"] = {**where("vision"), "prefix": ""}
    for k, enc in enumerate(model.audio_encoders):
        d = root / f"audio_{k}"
        d.mkdir(parents=True, exist_ok=True)
        _clear_weights(d)
        _save_sharded(enc.encoder.state_dict(), d, "5GB")
        sources[f"audio_{k}"] = {**where(f"audio_{k}"), "prefix": ""}
    if merge_lora:
        prefix = "language_model."
        llm_state = {k[len(prefix) :]: v for k, v in merged_state_dict(model).items() if k.startswith(prefix)}
    else:
        llm_state = _base_llm_state_dict(model)
    text_dir = root / "text"
    text_dir.mkdir(parents=True, exist_ok=True)
    _clear_weights(text_dir)
    model.causal_lm.save_pretrained(str(text_dir), state_dict=llm_state)
    sources["text"] = where("text")
    return sources


def save_favor_model(
    model: FavorModel, save_directory: str | Path, merge_lora: bool = False, max_shard_size: str | int = "5GB"
) -> Path:
    """Write a delta (default) or full merged checkpoint of ``model`` to ``save_directory`` (see module doc)."""
    root = Path(save_directory)
    root.mkdir(parents=True, exist_ok=True)
    _clear_weights(root)
    config = model.config.__class__.from_dict(model.config.to_dict())
    if merge_lora:
        config.component_sources = _write_components(model, root, merge_lora=True, embedded=True)
        config.use_lora = False
        info = {"format": "full", "lora_merged": bool(model.config.use_lora)}
    else:
        missing = [
            name for name in _component_names(model.config) if name not in model.config.component_sources
        ]
        if missing:
            raise ValueError(
                f"component_sources: no source for the frozen part(s) {missing}, so a delta checkpoint could not be "
                "loaded again; set model.config.component_sources (names or paths of the original checkpoints), "
                "call model.save_frozen_components(dir) first, or save everything with merge_lora=True"
            )
        if model.config.use_lora:
            model.language_model.save_pretrained(str(root / ADAPTER_DIR))
        info = {"format": "delta"}
    info["trainable_keys"] = sorted(_trainable_non_lora(model))
    _save_sharded(_trainable_non_lora(model), root, max_shard_size)
    config.save_pretrained(root)
    # generation settings (the LLM's, plus the user's changes) travel with the checkpoint, as in transformers
    model.generation_config.save_pretrained(root)
    (root / CHECKPOINT_INFO_NAME).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    return root


def save_frozen_components(model: FavorModel, directory: str | Path) -> dict[str, dict]:
    """Write the frozen parts (vision, each audio encoder, the base LLM without LoRA) as checkpoints under
    ``directory`` and point ``model.config.component_sources`` at them, so delta checkpoints can reference them.

    Returns:
        The new ``component_sources``.
    """
    root = Path(directory).resolve()
    root.mkdir(parents=True, exist_ok=True)
    sources = _write_components(model, root, merge_lora=False, embedded=False)
    model.config.component_sources = sources
    return sources


# ---------------------------------------------------------------------------------------------------- loading
def _source_path(root: Path, source: dict, name: str) -> str | Path:
    if "name_or_path" not in source:
        raise ValueError(f"component_sources[{name!r}]: needs a 'name_or_path', got {source}")
    path = root / source["name_or_path"] if source.get("embedded") else source["name_or_path"]
    text = str(path)
    looks_local = source.get("embedded") or Path(text).is_absolute() or text.startswith((".", "~"))
    if looks_local and not Path(text).expanduser().exists():  # a Hub repo id never looks like this
        raise ValueError(
            f"component_sources[{name!r}]: {text} does not exist (was the directory of the frozen parts moved or "
            "deleted? point config.json's component_sources at it, or pass config=...)"
        )
    return path


def _resolve_dtype(dtype: Any) -> torch.dtype | str | None:
    """``None``, ``"auto"`` or a `torch.dtype` (names such as ``"bfloat16"`` or ``"torch.float16"`` accepted)."""
    if dtype is None or dtype == "auto" or isinstance(dtype, torch.dtype):
        return dtype
    if isinstance(dtype, str):
        found = getattr(torch, dtype.removeprefix("torch."), None)
        if isinstance(found, torch.dtype):
            return found
    raise ValueError(f"dtype: expected a torch.dtype, its name (e.g. 'bfloat16') or 'auto', got {dtype!r}")


def load_favor_model(
    cls: type[FavorModel],
    pretrained_model_name_or_path: str | Path,
    dtype: torch.dtype | None = None,
    device_map: Any = None,
    config: Any = None,
    **llm_kwargs: Any,
) -> FavorModel:
    """Load a checkpoint written by `save_favor_model` (delta or full). See `FavorModel.from_pretrained`."""
    from peft import get_peft_model_state_dict, set_peft_model_state_dict
    from transformers import AutoModelForCausalLM
    from transformers.initialization import no_init_weights

    from .configuration import FavorConfig

    root = _local_or_download(pretrained_model_name_or_path)
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
    missing = [n for n in _component_names(config) if n not in sources]
    if missing:
        raise ValueError(f"component_sources: the checkpoint {root} names no source for {missing}")

    dtype = _resolve_dtype(dtype)
    llm = AutoModelForCausalLM.from_pretrained(
        _source_path(root, sources["text"], "text"), dtype=dtype, device_map=device_map, **llm_kwargs
    )
    if dtype == "auto":  # the dtype the LLM's weights were saved in decides for the whole model
        dtype = None if llm.dtype == torch.float32 else llm.dtype
    with no_init_weights():  # every other weight is loaded below, strictly
        model = cls(config, language_model=llm)
    if device_map is not None:  # the parts around the LLM follow it (to where its input embeddings are)
        target = llm.get_input_embeddings().weight.device
        for name in ("vision", "audio_encoders", "audio_projections", "qformer", "language_projection"):
            getattr(model, name).to(target)
    for name, module in [("vision", model.vision)] + [
        (f"audio_{k}", enc.encoder) for k, enc in enumerate(model.audio_encoders)
    ]:
        src = sources[name]
        load_module_weights(module, _source_path(root, src, name), src.get("prefix"), name)

    index = _key_index(resolve_checkpoint_files(root))
    trainable = _read(index, index.keys())
    expected = {k for k in model.state_dict() if k.startswith(_TRAINABLE_PREFIXES)}
    missing_t = sorted(expected - set(trainable))
    unexpected_t = sorted(set(trainable) - expected)
    if missing_t or unexpected_t:
        raise ValueError(
            f"checkpoint {root}: trainable weights do not match the model: missing {_short(missing_t)}, "
            f"unexpected {_short(unexpected_t)}"
        )
    for prefix in ("audio_projections", "qformer", "language_projection"):
        part = {k[len(prefix) + 1 :]: v for k, v in trainable.items() if k.startswith(prefix + ".")}
        _assign_strict(getattr(model, prefix), part, f"{prefix} from {root}")

    if config.use_lora:
        adapter_file = root / ADAPTER_DIR / "adapter_model.safetensors"
        if not adapter_file.is_file():
            raise ValueError(f"checkpoint {root}: use_lora is set but {adapter_file} is missing")
        from safetensors.torch import load_file

        adapter = load_file(str(adapter_file))
        expected_lora = set(get_peft_model_state_dict(model.language_model))
        if set(adapter) != expected_lora:
            raise ValueError(
                f"checkpoint {root}: LoRA adapter keys do not match the model: missing "
                f"{_short(sorted(expected_lora - set(adapter)))}, unexpected "
                f"{_short(sorted(set(adapter) - expected_lora))}"
            )
        for key, value in adapter.items():
            shape = tuple(get_peft_model_state_dict(model.language_model)[key].shape)
            if tuple(value.shape) != shape:
                raise ValueError(
                    f"checkpoint {root}: LoRA weight {key} has shape {tuple(value.shape)}, model {shape}"
                )
        set_peft_model_state_dict(model.language_model, adapter)
    # Parts embedded in this checkpoint are referenced where they are, so that a delta saved from this model (the
    # default `save_pretrained`, e.g. after fine-tuning a full or converted checkpoint) loads from anywhere.
    model.config.component_sources = {
        name: (
            {k: v for k, v in src.items() if k != "embedded"}
            | {"name_or_path": str(Path(_source_path(root, src, name)).resolve())}
            if src.get("embedded")
            else src
        )
        for name, src in sources.items()
    }
    if (root / GENERATION_CONFIG_NAME).is_file():
        from transformers import GenerationConfig

        model.generation_config = GenerationConfig.from_pretrained(root)
    model._freeze_frozen_parts()
    model.eval()
    if dtype is not None:
        model.to_mixed_precision(dtype)
    return model
