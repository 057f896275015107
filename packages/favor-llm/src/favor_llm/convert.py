"""Convert a released FAVOR checkpoint (BriansIDP/AudioVisualLLM) into a `FavorModel` delta checkpoint.

The released training code saves, with ``torch.save``, the parameters that have ``requires_grad`` set (the
"delta"): the audio projection, the causal Q-Former and its input stage, the projection into the LLM and the LoRA
matrices. The frozen encoders and the base LLM are not in it. Released names (``model/openllama.py``,
``OpenLLAMAPEFTModel`` with ``early_align`` and ``alignmode=2``) and ours:

==========================================================  ==================================================
released key                                                FavorModel key
==========================================================  ==================================================
``speech_pre_qformer_proj.{weight,bias}``                   ``media_encoder.audio_projections.0.{weight,bias}``
``video_query_tokens``                                      ``media_encoder.causal_qformer.query_tokens``
``ln_video.{weight,bias}``                                  ``media_encoder.causal_qformer.input_layernorm.*``
``video_frame_position_embedding.weight``                   ``media_encoder.causal_qformer.position_embedding.*``
``video_Qformer.bert.…`` (embedding LayerNorm, 2 layers)    ``media_encoder.causal_qformer.…`` (key map,
                                                            `CausalQFormer.from_favor_official`)
``llama_proj.{weight,bias}``                                ``language_projection.{weight,bias}``
``llama_model.base_model.model.<path>.lora_{A,B}[.default]   ``language_model.base_model.model.<path>.lora_{A,B}
.weight``                                                   .default.weight``
==========================================================  ==================================================

Unused buffers (``…embeddings.position_ids``, ``…rotary_emb.inv_freq``) and weights of the frozen parts
(``visual_encoder.``, ``ln_vision.``, ``Qformer.``, ``query_tokens``, ``speech_encoder.``, the LLM's base
weights), which a DeepSpeed ZeRO-3 save can include, are skipped and reported. Any other key, a missing key or a
wrong shape is an error that lists every offender. The released quirk of the causal module attending to the
padding of a partial last window is kept (``causal_attends_window_padding=True``), so the converted Q-Former
computes what the released one computes (checked against ``shared/reference`` in the tests).

The frozen parts are referenced, not copied, through ``FavorConfig.component_sources`` (vision: an InstructBLIP
checkpoint, audio: a Whisper checkpoint, text: the base LLM given as ``llm``). Only the LLM's config, generation
config and tokenizer are read during conversion; no large weights are loaded.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .components import components
from .configuration import FavorConfig

__all__ = [
    "CONVERSION_INFO_NAME",
    "DEFAULT_AUDIO_SOURCE",
    "DEFAULT_VISION_SOURCE",
    "RELEASED_RENAMES",
    "ConversionReport",
    "convert_released_checkpoint",
    "convert_released_state_dict",
    "load_released_state_dict",
]

#: Where the released model's frozen parts come from (public Hub repos; override for local copies).
DEFAULT_VISION_SOURCE = "Salesforce/instructblip-vicuna-13b"
DEFAULT_AUDIO_SOURCE = "openai/whisper-large-v2"
#: The conversion report written beside the converted checkpoint (`ConversionReport` + the source file).
CONVERSION_INFO_NAME = "favor_conversion.json"

_PREFIXES = {c.name: c.prefix for c in components(FavorConfig())}  # declared once in favor_llm.components
#: Where the causal Q-Former's weights live in `FavorModel` (its declared component).
QFORMER_PREFIX = _PREFIXES["causal_qformer"]
#: One-to-one renames of released tensors outside the Q-Former and LoRA.
RELEASED_RENAMES: dict[str, str] = {
    "speech_pre_qformer_proj.weight": _PREFIXES["audio_projections"] + "0.weight",
    "speech_pre_qformer_proj.bias": _PREFIXES["audio_projections"] + "0.bias",
    "llama_proj.weight": _PREFIXES["language_projection"] + "weight",
    "llama_proj.bias": _PREFIXES["language_projection"] + "bias",
}
#: Released keys that belong to the causal Q-Former (renamed by `favor_qformer`'s own key map).
_QFORMER_KEY = re.compile(
    r"^(video_Qformer\.|video_query_tokens$|ln_video\.|video_frame_position_embedding\.)"
)
_LORA_KEY = re.compile(
    r"^llama_model\.base_model\.model\.(?P<path>.+)\.(?P<which>lora_[AB])(?:\.(?P<adapter>[A-Za-z0-9_]+))?\.weight$"
)
#: Buffers that carry no learned value.
_IGNORED_BUFFER = re.compile(r"(\.embeddings\.position_ids|\.rotary_emb\.inv_freq)$")
#: Frozen parts of the released model (taken from ``component_sources`` instead).
_FROZEN_PREFIXES = (
    "visual_encoder.",
    "ln_vision.",
    "Qformer.",
    "query_tokens",
    "speech_encoder.",
    "llama_model.",
)
#: Modules of released variants that FavorModel does not implement, with what they are. (``av_fusion="separate"``
#: is the no-synchronisation baseline trained from scratch; released speech Q-Former weights do not convert into it.)
_UNSUPPORTED = {
    "speech_Qformer.": "a separate speech Q-Former (speech_qformer=true)",
    "speech_query_tokens": "a separate speech Q-Former (speech_qformer=true)",
    "ln_speech.": "a separate speech Q-Former (speech_qformer=true)",
    "llama_proj_speech.": "a separate speech Q-Former (speech_qformer=true)",
    "joint_Qformer.": "a third joint Q-Former (alignmode=3)",
    "llama_proj_joint.": "a third joint Q-Former (alignmode=3)",
}


@dataclass
class ConversionReport:
    """What a conversion did (also written to ``favor_conversion.json`` next to the checkpoint).

    Attributes:
        renamed: released key -> FavorModel key, for every converted tensor.
        skipped: released keys left out on purpose (unused buffers, frozen parts), with the reason.
        source_dtypes: dtypes found in the released file (the converted weights are float32).
    """

    renamed: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    source_dtypes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"renamed": self.renamed, "skipped": self.skipped, "source_dtypes": self.source_dtypes}


# ----------------------------------------------------------------------------------------------- reading
def load_released_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a released delta checkpoint (``torch.save`` of a dict of tensors; ``.safetensors`` also accepted).

    Loaded with ``weights_only=True`` (no arbitrary code runs) and memory-mapped when possible.

    Raises:
        ValueError: the file is missing, is not a checkpoint, or does not hold a dict of tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"released: no such file {path}" + (" (it is a directory)" if path.is_dir() else ""))
    with path.open("rb") as handle:
        magic = handle.read(2)
    if path.suffix != ".safetensors" and not (magic == b"PK" or magic[:1] == b"\x80"):
        raise ValueError(
            f"released: {path} is not a readable PyTorch checkpoint (neither torch.save's zip format nor a pickle"
            f"{'; the file is empty' if not magic else ''})"
        )
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            try:
                state = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError as err:
                if "mmap" not in str(err):
                    raise
                state = torch.load(
                    str(path), map_location="cpu", weights_only=True
                )  # legacy (non-zip) format
    except Exception as err:  # corrupt, truncated, not a torch file, unsafe pickle: one clear error
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if "Weights only load failed" in first_line:
            first_line = (
                "it holds Python objects other than tensors; only plain tensor dicts are loaded, for safety"
            )
        raise ValueError(f"released: {path} is not a readable PyTorch checkpoint ({first_line})") from err
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]  # LAVIS-style wrapper
    if not isinstance(state, dict) or not state:
        raise ValueError(
            f"released: {path} holds {type(state).__name__}{' (empty)' if not state else ''}; "
            "expected a non-empty dict of tensors (the released delta state dict)"
        )
    bad = [k for k, v in state.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise ValueError(f"released: {path}: entries that are not named tensors: {_short(bad)}")
    return dict(state)


# ---------------------------------------------------------------------------------------------- mapping
def _expected_trainable(config: FavorConfig) -> dict[str, tuple[int, ...]]:
    """Trainable FavorModel keys and shapes for ``config`` (built on the meta device: no memory, no weights)."""
    from .modeling import FavorModel

    with torch.device("meta"):
        model = FavorModel(config)
    return {name: tuple(p.shape) for name, p in model.named_parameters() if p.requires_grad}


def _released_qformer_config(config: FavorConfig) -> Any:
    from favor_qformer import CausalQFormerConfig

    return CausalQFormerConfig(**config.causal_qformer_config.to_dict())


def convert_released_state_dict(
    released: dict[str, torch.Tensor], config: FavorConfig
) -> tuple[dict[str, torch.Tensor], ConversionReport]:
    """Rename a released delta state dict to `FavorModel`'s trainable keys, strictly.

    Args:
        released: the released tensors (``torch.load`` of the released ``pytorch_model*.pt``).
        config: the `FavorConfig` the tensors must fit (shapes are checked against it).

    Returns:
        ``(state_dict, report)``: float32 tensors under FavorModel keys, covering every trainable parameter.

    Raises:
        ValueError: listing every unknown released key, every missing FavorModel key and every shape mismatch.
    """
    from favor_qformer import CausalQFormer

    report = ConversionReport(
        source_dtypes=sorted({str(v.dtype).removeprefix("torch.") for v in released.values()})
    )
    out: dict[str, torch.Tensor] = {}
    problems: list[str] = []
    unknown: list[str] = []
    qformer_part: dict[str, torch.Tensor] = {}
    for key, value in released.items():
        if _IGNORED_BUFFER.search(key):
            report.skipped[key] = "unused buffer"
        elif key in RELEASED_RENAMES:
            out[RELEASED_RENAMES[key]] = value
            report.renamed[key] = RELEASED_RENAMES[key]
        elif _QFORMER_KEY.match(key):
            qformer_part[key] = value
        elif (lora := _LORA_KEY.match(key)) is not None:
            ours = f"language_model.base_model.model.{lora['path']}.{lora['which']}.default.weight"
            out[ours] = value
            report.renamed[key] = ours
        elif key.startswith(_FROZEN_PREFIXES):
            report.skipped[key] = "frozen part (taken from component_sources)"
        else:
            unknown.append(key)
    hints = sorted(
        {what for key in unknown for prefix, what in _UNSUPPORTED.items() if key.startswith(prefix)}
    )
    if unknown:
        problems.append(
            f"unknown released keys {_short(sorted(unknown))}"
            + (f" (from {', '.join(hints)}, which FavorModel does not implement)" if hints else "")
        )

    qformer_config = _released_qformer_config(config)
    qformer_failed = not qformer_part
    if qformer_part:
        try:
            # Only the tensors are kept here (the config's quirks are set by `convert_released_checkpoint`), so
            # the config's values are passed as keywords: from_favor_official would otherwise warn that they differ.
            qformer = CausalQFormer.from_favor_official(
                qformer_part,
                qformer_config,
                causal_attends_window_padding=qformer_config.causal_attends_window_padding,
                input_layer_norm_eps=qformer_config.input_layer_norm_eps,
            )
        except ValueError as err:
            problems.append(f"Q-Former: {_qformer_mismatch(qformer_part, qformer_config, err)}")
            qformer_failed = True
        else:
            for key, value in qformer.state_dict().items():
                out[f"{QFORMER_PREFIX}{key}"] = value
            for key in qformer_part:
                report.renamed[key] = f"{QFORMER_PREFIX}* (favor_qformer.CausalQFormer.from_favor_official)"
    else:
        problems.append("no Q-Former tensors (video_Qformer.*, video_query_tokens, ln_video.*, ...)")

    expected = _expected_trainable(config)
    # When the Q-Former part failed, its keys are reported above rather than as missing.
    missing = sorted(
        k for k in expected if k not in out and not (qformer_failed and k.startswith(QFORMER_PREFIX))
    )
    extra = sorted(k for k in out if k not in expected)
    if missing:
        problems.append(f"missing (the model needs them, the checkpoint lacks them) {_short(missing)}")
    if extra:
        problems.append(
            f"tensors the model has no place for {_short(extra)}"
            + (" (is use_lora off in the config?)" if any(".lora_" in k for k in extra) else "")
        )
    wrong = [
        f"{k}: checkpoint {tuple(v.shape)} vs model {expected[k]}"
        for k, v in out.items()
        if k in expected and tuple(v.shape) != expected[k]
    ]
    if wrong:
        problems.append(f"shape mismatches {_short(wrong, 6)}")
    if problems:
        raise ValueError("released checkpoint does not fit the FavorConfig: " + "; ".join(problems))
    return {k: v.detach().to(torch.float32).contiguous() for k, v in out.items()}, report


def _qformer_mismatch(part: dict[str, torch.Tensor], config: Any, err: ValueError) -> str:
    """A short account of why the released Q-Former tensors do not fit ``config``: the sizes they imply against the
    config's, when they can be read from the tensors (else the loader's own, complete message)."""
    from favor_qformer import CausalQFormer

    try:
        # One head divides any width; head counts do not change tensor shapes, so sizes are all this reads.
        found = CausalQFormer.from_favor_official(part, num_heads=1, causal_num_heads=1).config
    except ValueError:
        return str(err)
    fields = ("hidden_size", "encoder_hidden_size", "num_queries", "num_layers", "intermediate_size")
    fields += ("max_position_embeddings", "causal")
    diffs = [
        f"{f}={getattr(found, f)} (config: {getattr(config, f)})"
        for f in fields
        if getattr(found, f) != getattr(config, f)
    ]
    if not diffs:
        return str(err)
    return "the checkpoint's Q-Former has " + ", ".join(diffs)


# -------------------------------------------------------------------------------------------- the whole job
def _local_dir(name_or_path: str | Path) -> Path | None:
    path = Path(name_or_path)
    return path if path.is_dir() else None


def _config_for(
    llm: str | Path, config: FavorConfig | None, released: dict[str, torch.Tensor]
) -> FavorConfig:
    """The target config: ``config`` (copied) or the released one with the LLM's own ``text_config``."""
    from transformers import AutoConfig

    llm_dir = _local_dir(llm)
    if llm_dir is None and Path(llm).exists():
        raise ValueError(f"llm: {llm} is a file; expected the base LLM's directory or a Hub repo id")
    if llm_dir is not None and not (llm_dir / "config.json").is_file():
        raise ValueError(f"llm: {llm_dir} has no config.json; expected a transformers causal LM directory")
    try:
        text_config = AutoConfig.from_pretrained(str(llm))
    except (OSError, ValueError) as err:
        raise ValueError(
            f"llm: cannot read the LLM config from {llm!r} ({str(err).splitlines()[0]})"
        ) from err
    if config is None:
        lora_a = next((v for k, v in released.items() if _LORA_KEY.match(k) and ".lora_A" in k), None)
        lora = {"use_lora": lora_a is not None}
        if lora_a is not None:
            lora["lora_r"] = int(
                lora_a.shape[0]
            )  # released: 32 (alpha can't be read from tensors: released 32)
        return FavorConfig(text_config=text_config, **lora)
    config = copy.deepcopy(config)
    for name in ("hidden_size", "vocab_size", "num_hidden_layers"):
        ours, theirs = getattr(config.text_config, name, None), getattr(text_config, name, None)
        if ours != theirs:
            raise ValueError(
                f"llm: {llm} has {name}={theirs} but config.text_config has {name}={ours}; "
                "pass the LLM the checkpoint was trained on"
            )
    return config


def _find_tokenizer(candidates: list[str | Path]) -> Any:
    from transformers import AutoTokenizer

    errors = []
    for candidate in candidates:
        local = _local_dir(candidate)
        if local is not None and not any(
            (local / f).is_file() for f in ("tokenizer_config.json", "tokenizer.json", "tokenizer.model")
        ):
            errors.append(f"{candidate} (no tokenizer files)")
            continue
        try:
            return AutoTokenizer.from_pretrained(str(candidate))
        except (OSError, ValueError) as err:
            errors.append(f"{candidate} ({str(err).splitlines()[0] if str(err) else type(err).__name__})")
    raise ValueError(
        "tokenizer: none found; looked in "
        + "; ".join(errors)
        + ". Pass tokenizer= (--tokenizer) the LLM's tokenizer"
    )


def _build_processor(config: FavorConfig, tokenizer: Any, qformer_tokenizer: Any) -> Any:
    """The processor of the released pipeline: BLIP frames at the ViT's size, Whisper log-mels in its windows."""
    from transformers import BlipImageProcessorPil, WhisperFeatureExtractor

    from .processing import FavorProcessor

    size = int(config.vision_config.image_size)
    image_processor = BlipImageProcessorPil(size={"height": size, "width": size})  # CLIP mean/std, as BLIP's
    extractors = []
    for audio in config.audio_configs:
        window_seconds = audio.max_source_positions * 2 * 160 // config.audio_sample_rate  # Whisper: 30 s
        extractors.append(
            WhisperFeatureExtractor(feature_size=audio.num_mel_bins, chunk_length=window_seconds)
        )
    return FavorProcessor.from_config(config, tokenizer, image_processor, extractors, qformer_tokenizer)


def convert_released_checkpoint(
    released: str | Path | dict[str, torch.Tensor],
    llm: str | Path,
    out: str | Path,
    config: FavorConfig | None = None,
    *,
    vision: str | Path | None = None,
    audio: str | Path | None = None,
    tokenizer: str | Path | None = None,
    qformer_tokenizer: str | Path | None = None,
) -> Path:
    """Convert a released FAVOR delta checkpoint into a `FavorModel` checkpoint directory (+ its processor).

    Args:
        released: path of the released ``pytorch_model*.pt`` (or its loaded state dict).
        llm: the base LLM the checkpoint was trained on (local directory or Hub id; released: Vicuna-13B). Only
            its config is read here; `FavorModel.from_pretrained` loads its weights later.
        out: output directory (created).
        config: the `FavorConfig` to convert into (default: the released one, with ``llm``'s ``text_config``
            and the LoRA rank read from the checkpoint). Its ``component_sources`` are kept unless overridden.
        vision: checkpoint of the frozen frame encoder (default: the config's source, else
            `DEFAULT_VISION_SOURCE`).
        audio: checkpoint of the frozen Whisper encoder (default: the config's source, else `DEFAULT_AUDIO_SOURCE`).
        tokenizer: the LLM tokenizer (default: next to the released file, as the released trainer saves it, else
            ``llm``).
        qformer_tokenizer: tokenizer of the InstructBLIP Q-Former (default: ``<vision>/qformer_tokenizer`` when
            that is a local directory; none otherwise, so frames are encoded without the instruction).

    Returns:
        ``out``, holding the delta checkpoint (`FavorModel.save_pretrained`), the processor and
        ``favor_conversion.json`` (the key map used): one atomic save, so an earlier conversion there stays whole
        if this one fails or is killed.

    Raises:
        ValueError: unreadable input, unknown / missing / wrongly shaped tensors (all listed), no tokenizer.
    """
    from .modeling import FavorModel

    source_file = None if isinstance(released, dict) else Path(released)
    state = released if isinstance(released, dict) else load_released_state_dict(released)
    config = _config_for(llm, config, state)
    # released behaviour (see module docstring)
    config.causal_qformer_config = dataclasses.replace(
        config.causal_qformer_config, causal_attends_window_padding=True
    )
    converted, report = convert_released_state_dict(state, config)

    sources = copy.deepcopy(config.component_sources or {})
    sources["text"] = {"name_or_path": str(Path(llm).resolve()) if _local_dir(llm) else str(llm)}
    if vision is not None or "vision" not in sources:
        sources["vision"] = {"name_or_path": _source_name(vision or DEFAULT_VISION_SOURCE), "prefix": ""}
    for k in range(len(config.audio_configs)):
        if (audio is not None and k == 0) or f"audio_{k}" not in sources:
            sources[f"audio_{k}"] = {"name_or_path": _source_name(audio or DEFAULT_AUDIO_SOURCE)}
    config.component_sources = sources

    tokenizer_candidates: list[str | Path] = []
    if tokenizer is not None:
        tokenizer_candidates.append(tokenizer)
    else:
        if source_file is not None:
            tokenizer_candidates.append(source_file.parent)
        tokenizer_candidates.append(llm)
    tok = _find_tokenizer(tokenizer_candidates)
    qtok = None
    qformer_candidate = qformer_tokenizer
    vision_dir = _local_dir(sources["vision"]["name_or_path"])
    if qformer_candidate is None and vision_dir is not None and (vision_dir / "qformer_tokenizer").is_dir():
        qformer_candidate = vision_dir / "qformer_tokenizer"
    if qformer_candidate is not None and config.vision_qformer_config is not None:
        qtok = _find_tokenizer([qformer_candidate])
    processor = _build_processor(config, tok, qtok)
    config.av_token_id = processor.av_token_id

    with torch.device("meta"):
        model = FavorModel(config)
    result = model.load_state_dict(converted, strict=False, assign=True)
    if result.unexpected_keys:  # convert_released_state_dict already checked; this guards the two in sync
        raise ValueError(f"internal key map error: unexpected {_short(list(result.unexpected_keys))}")
    still_meta = [n for n, p in model.named_parameters() if p.requires_grad and p.is_meta]
    if still_meta:
        raise ValueError(f"internal key map error: trainable weights not converted {_short(still_meta)}")

    try:  # the LLM's generation defaults (e.g. a chat model's end-of-turn ids) are the model's
        from transformers import GenerationConfig

        model.generation_config = GenerationConfig.from_pretrained(llm)
    except OSError:  # no generation_config.json: the ids of its config
        pass
    from favor_qformer.saving import atomic_save_directory

    info = {"source": str(source_file) if source_file else "<state dict>", **report.to_dict()}
    # one atomic save (issue 10; the model's and the processor's nest in it): all three land, or none
    with atomic_save_directory(out, owned=[CONVERSION_INFO_NAME]) as staging:
        model.save_pretrained(staging)
        processor.save_pretrained(staging)
        (staging / CONVERSION_INFO_NAME).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    return Path(out)


def _source_name(name_or_path: str | Path) -> str:
    return str(Path(name_or_path).resolve()) if _local_dir(name_or_path) else str(name_or_path)


def _short(items: list[str], limit: int = 8) -> str:
    head = ", ".join(items[:limit])
    return f"[{head}{', ...' if len(items) > limit else ''}] ({len(items)})"
