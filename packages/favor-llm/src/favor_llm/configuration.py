"""`FavorConfig`: the composite configuration of a FAVOR audio-visual LLM (Sun et al., 2023, arXiv 2310.05863, Sec. 3).

Like LLaVA's config it nests the configs of the parts it composes:

- ``vision_config``: any transformers vision model. The released stack is InstructBLIP's ViT (EVA ViT-g) whose
  patch tokens go through InstructBLIP's Q-Former (``vision_qformer_config``), giving ``vision_num_query_tokens``
  (32) tokens of width 768 per frame. Without ``vision_qformer_config`` (CLIP, SigLIP, ...) the patch tokens are
  average-pooled to ``tokens_per_frame`` tokens.
- ``audio_configs``: one or more audio encoders (Whisper's encoder first), each with its feature rate in
  ``audio_feature_rates`` (Hz). Audio longer than an encoder's window (30 s for Whisper) is encoded in consecutive
  chunks whose features are concatenated, never cut.
- synchroniser settings (``fps``, ``sync_mode``, ``sync_overflow``, ``repeat_image``, ``max_media_seconds``),
- ``av_fusion``: ``"synchronised"`` (FAVOR) or ``"separate"`` (the no-synchronisation ablation: a video Q-Former and
  an audio Q-Former, their tokens as two blocks, as the released code does without ``early_align``),
- ``causal_qformer_config``: a `favor_qformer.CausalQFormerConfig` (given as the dataclass or a dict of its fields,
  filled with the released values; ``encoder_hidden_size`` and ``tokens_per_frame`` are derived from the encoders;
  saved as a dict without the run-time switches ``gradient_checkpointing`` / ``check_finite``),
- ``text_config``: any ``AutoModelForCausalLM`` config (Llama, Qwen2, ...),
- LoRA settings, ``diversity_loss_weight``, the AV placeholder token and the prompt template.

``FavorConfig()`` with no arguments is the released FAVOR model (EVA ViT-g + InstructBLIP Q-Former, Whisper
large-v2 encoder, 2-layer causal Q-Former with 32 queries over windows of 10 frames at 2 fps, Vicuna-13B, LoRA
r=32 on q/k/v/o).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import Any, ClassVar

from transformers import AutoConfig, PretrainedConfig
from transformers.configuration_utils import SubConfigSpec

from favor_qformer import CausalQFormerConfig

__all__ = [
    "AV_FUSIONS",
    "RELEASED_PROMPT_TEMPLATE",
    "RELEASED_TEXT_ONLY_TEMPLATE",
    "RUNTIME_QFORMER_FIELDS",
    "FavorConfig",
    "token_blocks",
]

logger = logging.getLogger("favor_llm")

#: The released prompt (``openllama.py``: ``PROMPT_START = 'USER: <Img>'`` + AV tokens + ``'</Img> ' + question +
#: '\nASSISTANT:'``); ``{media}`` marks where the AV placeholder goes, ``{question}`` the user's text.
RELEASED_PROMPT_TEMPLATE = "USER: <Img>{media}</Img> {question}\nASSISTANT:"
#: The same conversation without media (text-only questions).
RELEASED_TEXT_ONLY_TEMPLATE = "USER: {question}\nASSISTANT:"

# Released component sizes (public model cards).
_EVA_VIT_G = {  # InstructBLIP's vision tower (transformers' InstructBlipVisionConfig defaults are EVA ViT-g)
    "hidden_size": 1408,
    "intermediate_size": 6144,
    "num_hidden_layers": 39,
    "num_attention_heads": 16,
    "image_size": 224,
    "patch_size": 14,
}
_INSTRUCTBLIP_QFORMER = {
    "vocab_size": 30523,  # bert-base-uncased + the [DEC] token
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "cross_attention_frequency": 2,
    "encoder_hidden_size": 1408,
}
_WHISPER_LARGE_V2 = {
    "d_model": 1280,
    "encoder_layers": 32,
    "encoder_attention_heads": 20,
    "encoder_ffn_dim": 5120,
    "decoder_layers": 32,
    "decoder_attention_heads": 20,
    "decoder_ffn_dim": 5120,
    "num_mel_bins": 80,
    "vocab_size": 51865,
    "max_source_positions": 1500,
}
_VICUNA_13B = {
    "vocab_size": 32000,
    "hidden_size": 5120,
    "intermediate_size": 13824,
    "num_hidden_layers": 40,
    "num_attention_heads": 40,
    "num_key_value_heads": 40,
    "max_position_embeddings": 2048,
    "rms_norm_eps": 1e-6,
}
#: `CausalQFormerConfig` fields that are run-time switches of a model instance, not part of what a checkpoint is:
#: never saved (set them on ``model.causal_qformer.config`` or with `FavorModel.gradient_checkpointing_enable`).
RUNTIME_QFORMER_FIELDS = ("gradient_checkpointing", "check_finite")
#: Names a config.json written before the renames may use (old -> new; see CHANGELOG.md).
_RENAMED_FIELDS = {"qformer_config": "causal_qformer_config", "image_repeat": "repeat_image"}

_SERIALISED_LIST_OF_CONFIGS = ("audio_configs",)

#: How the audio and visual streams reach the LLM (`FavorConfig.av_fusion`):
#: ``"synchronised"``: FAVOR (Sec. 3.2): the synchroniser joins them frame by frame and one causal Q-Former reads the
#: joint frames, so each window's tokens carry both streams of the same instants.
#: ``"separate"``: no synchronisation (the paper's ablation; the released code with ``early_align`` off, as in
#: Video-LLaMA): a video Q-Former reads the visual frames and an audio Q-Former the audio frames (same windows),
#: and the LLM gets the video tokens of all windows, then the audio tokens of all windows, as two blocks.
AV_FUSIONS = ("synchronised", "separate")


def token_blocks(av_fusion: str) -> int:
    """AV token blocks per media item for ``av_fusion``: 1 (synchronised) or 2 (separate: video, then audio)."""
    return 2 if av_fusion == "separate" else 1


#: Scalar fields and the JSON types they accept (issue 10: a hand-edited ``"false"`` must not read as true).
_FIELD_TYPES: dict[str, tuple[tuple[type, ...], bool]] = {  # name -> (accepted types, None allowed)
    **dict.fromkeys(
        ("vision_use_instruction", "use_lora", "qformer_fp32", "tie_word_embeddings"), ((bool,), False)
    ),
    **dict.fromkeys(
        ("vision_num_query_tokens", "audio_sample_rate", "repeat_image", "lora_r", "lora_alpha"),
        ((int,), False),
    ),
    **dict.fromkeys(("audio_hidden_size", "av_token_id"), ((int,), True)),
    **dict.fromkeys(("fps", "lora_dropout", "diversity_loss_weight"), ((int, float), False)),
    **dict.fromkeys(("max_media_seconds", "audio_chunk_seconds"), ((int, float), True)),
    **dict.fromkeys(
        ("av_token", "prompt_template", "text_only_template", "sync_mode", "sync_overflow", "av_fusion"),
        ((str,), False),
    ),
}


def _check_field_types(config: Any) -> None:
    """Refuse a scalar field of the wrong JSON type (a bool is not a number here, nor a string a bool)."""
    for name, (types, optional) in _FIELD_TYPES.items():
        value = getattr(config, name, None)
        if value is None and optional:
            continue
        is_bool = isinstance(value, bool)
        if isinstance(value, types) and (is_bool == (types == (bool,))):
            continue
        expected = " or ".join(t.__name__ for t in types) + (" or None" if optional else "")
        raise ValueError(
            f"FavorConfig.{name}: expected {expected}, got {value!r} ({type(value).__name__}); fix the value in the "
            "config (JSON true/false for flags, numbers without quotes)"
        )


def _as_config(value: dict | PretrainedConfig, name: str) -> PretrainedConfig:
    """A sub-config from a config object or a dict carrying ``model_type``."""
    if isinstance(value, PretrainedConfig):
        return value
    if isinstance(value, dict):
        if "model_type" not in value:
            raise ValueError(
                f"{name}: a dict needs a 'model_type' key (e.g. 'whisper'); got keys {sorted(value)}"
            )
        kwargs = {k: v for k, v in value.items() if k != "model_type"}
        return AutoConfig.for_model(value["model_type"], **kwargs)
    raise ValueError(f"{name}: expected a transformers config or a dict, got {type(value).__name__}")


class FavorConfig(PretrainedConfig):
    r"""Configuration of `FavorModel`; defaults are the released FAVOR model.

    Attributes:
        vision_config: config of the frame encoder (default: InstructBLIP's EVA ViT-g).
        vision_qformer_config: config of an InstructBLIP/BLIP-2 Q-Former applied per frame (default with the
            default vision: InstructBLIP's, 12 layers). ``None`` with a custom ``vision_config``: pooled patch tokens.
        vision_num_query_tokens: query tokens of that Q-Former (tokens per frame), 32 as released.
        vision_use_instruction: feed the question to the InstructBLIP Q-Former (``qformer_input_ids``) when given.
        audio_configs: list of 1 to 4 audio encoder configs (default: ``[Whisper large-v2]``).
        audio_feature_rates: feature rate of each audio encoder in Hz (Whisper: 50).
        audio_sample_rate: sample rate of the waveforms the audio encoders read (Whisper: 16 kHz).
        audio_chunk_seconds: encode audio in independent chunks of this many seconds, each padded to the encoder's
            window (``None``: chunks of the whole window, 30 s for Whisper, as released). Streaming
            (`favor_llm.streaming`) encodes audio per Q-Former window so that it needs no later audio; set this to
            the window's duration (``window_stride / fps``) to make offline inference use the same chunking.
        audio_hidden_size: width each audio stream is projected to before synchronisation (released: 768, the
            visual token width; ``None`` = the visual token width).
        fps: frames per second sampled from videos (2 as released).
        sync_mode: `favor_avsync.TemporalSynchroniser` mode; only ``"time"``: the model batches media of different
            lengths, which ``"released"`` (the research code's rule, for equal-length streams) cannot. At 2 fps and
            50 Hz with equal lengths the two agree exactly (tested in favor-avsync).
        sync_overflow: what the synchroniser does when a frame has more audio steps than slots.
        av_fusion: ``"synchronised"`` (FAVOR) or ``"separate"`` (no synchronisation; see `AV_FUSIONS`). With
            ``"separate"``, ``causal_qformer_config`` describes the video Q-Former (visual width) and
            `audio_qformer_config` the audio Q-Former (same sizes, the audio streams' width); every media item
            gives twice the AV tokens.
        repeat_image: frames an image spans when there is no audio (60 as released; favor_avsync's name).
        max_media_seconds: longest media accepted (``None``: no limit).
        causal_qformer_config: the `favor_qformer.CausalQFormerConfig` (a dict of its fields is accepted).
        text_config: config of the causal LM (default: Vicuna-13B).
        use_lora: add LoRA adapters to the LLM (released: yes).
        lora_r: LoRA rank (32).
        lora_alpha: LoRA scaling numerator (32).
        lora_dropout: LoRA dropout (0.1).
        lora_target_modules: LLM modules that get adapters (q/k/v/o projections).
        diversity_loss_weight: weight of the Q-Former diversity loss in the training loss (0.01 as released).
        av_token: the placeholder the processor expands into ``windows x num_queries`` copies.
        av_token_id: its id in the tokenizer (set by the processor / builder).
        prompt_template: the conversation around a question with media (``{media}``, ``{question}``).
        text_only_template: the same without media (``{question}``).
        qformer_fp32: keep the causal Q-Former and the audio projections in float32 under mixed precision
            (transformers' ``_keep_in_fp32_modules`` policy for BLIP-2's Q-Former).
        component_sources: where the frozen parts' weights come from when a delta checkpoint is loaded:
            ``{"vision": {"name_or_path": ..., "prefix": ...}, "audio_0": {...}, "text": {...}}``.
        tie_word_embeddings: whether the LLM ties its input and output embeddings (the LLM's own config decides).
    """

    model_type = "favor"
    sub_configs_defaults: ClassVar[dict[str, SubConfigSpec]] = {
        "vision_config": SubConfigSpec(
            config_class=AutoConfig, model_type="instructblip_vision_model", optional=True
        ),
        "vision_qformer_config": SubConfigSpec(
            config_class=AutoConfig, model_type="instructblip_qformer", optional=True
        ),
        "text_config": SubConfigSpec(config_class=AutoConfig, model_type="llama", optional=True),
    }

    vision_config: dict | PretrainedConfig | None = None
    vision_qformer_config: dict | PretrainedConfig | None = None
    vision_num_query_tokens: int = 32
    vision_use_instruction: bool = True
    audio_configs: list | None = None
    audio_feature_rates: list | None = None
    audio_hidden_size: int | None = None
    audio_chunk_seconds: float | None = None
    audio_sample_rate: int = 16000
    fps: float = 2.0
    sync_mode: str = "time"
    sync_overflow: str = "error"
    av_fusion: str = "synchronised"
    repeat_image: int = 60
    max_media_seconds: float | None = 300.0
    causal_qformer_config: dict | CausalQFormerConfig | None = None
    text_config: dict | PretrainedConfig | None = None
    use_lora: bool = True
    lora_r: int = 32
    lora_alpha: int = 32
    lora_dropout: float = 0.1
    lora_target_modules: list | None = None
    diversity_loss_weight: float = 0.01
    av_token: str = "<AV>"
    av_token_id: int | None = None
    prompt_template: str = RELEASED_PROMPT_TEMPLATE
    text_only_template: str = RELEASED_TEXT_ONLY_TEMPLATE
    qformer_fp32: bool = True
    component_sources: dict | None = None
    tie_word_embeddings: bool = False

    def __post_init__(self, **kwargs: Any) -> None:
        for old, new in _RENAMED_FIELDS.items():  # config.json files written before the renames
            if old in kwargs:
                setattr(self, new, kwargs.pop(old))
        _check_field_types(self)
        released_vision = self.vision_config is None
        if released_vision:
            self.vision_config = AutoConfig.for_model("instructblip_vision_model", **_EVA_VIT_G)
            if self.vision_qformer_config is None:
                self.vision_qformer_config = AutoConfig.for_model(
                    "instructblip_qformer", **_INSTRUCTBLIP_QFORMER
                )
        if self.text_config is None:
            self.text_config = AutoConfig.for_model("llama", **_VICUNA_13B)
        super().__post_init__(**kwargs)
        self.vision_config = _as_config(self.vision_config, "vision_config")
        if self.vision_qformer_config is not None:
            self.vision_qformer_config = _as_config(self.vision_qformer_config, "vision_qformer_config")
        self.text_config = _as_config(self.text_config, "text_config")

        if self.audio_configs is None:
            self.audio_configs = [AutoConfig.for_model("whisper", **_WHISPER_LARGE_V2)]
        if not isinstance(self.audio_configs, (list, tuple)):
            raise ValueError(
                f"audio_configs: expected a list of configs, got {type(self.audio_configs).__name__}"
            )
        if not 1 <= len(self.audio_configs) <= 4:
            raise ValueError(f"audio_configs: expected 1 to 4 audio encoders, got {len(self.audio_configs)}")
        self.audio_configs = [_as_config(c, f"audio_configs[{i}]") for i, c in enumerate(self.audio_configs)]
        if self.audio_feature_rates is None:
            self.audio_feature_rates = [_default_feature_rate(c) for c in self.audio_configs]
        self.audio_feature_rates = [float(r) for r in self.audio_feature_rates]
        if len(self.audio_feature_rates) != len(self.audio_configs):
            raise ValueError(
                f"audio_feature_rates: expected one rate per audio encoder ({len(self.audio_configs)}), "
                f"got {self.audio_feature_rates}"
            )
        if any(r <= 0 for r in self.audio_feature_rates):
            raise ValueError(f"audio_feature_rates: rates must be > 0 Hz, got {self.audio_feature_rates}")
        if self.audio_chunk_seconds is not None:
            from .audio import chunk_samples

            for c in self.audio_configs:  # a multiple of one encoder step, at most the window (ValueError)
                chunk_samples(c, self.audio_sample_rate, self.audio_chunk_seconds)
            self.audio_chunk_seconds = float(self.audio_chunk_seconds)
        if self.fps <= 0:
            raise ValueError(f"fps: expected > 0, got {self.fps}")
        weight = self.diversity_loss_weight
        if not 0 <= weight < math.inf:  # its type is checked with the other fields (_check_field_types)
            raise ValueError(f"diversity_loss_weight: expected a finite number >= 0, got {weight!r}")
        if self.sync_mode != "time":
            raise ValueError(
                f"sync_mode: expected 'time', got {self.sync_mode!r}; FavorModel batches media of different "
                "lengths, which the released rule (favor_avsync mode='released', for equal-length streams) cannot "
                "do. 'time' gives the released result whenever the released rule applies (2 fps, 50 Hz, equal lengths)"
            )
        if self.av_fusion not in AV_FUSIONS:
            raise ValueError(f"av_fusion: expected one of {list(AV_FUSIONS)}, got {self.av_fusion!r}")
        if self.lora_target_modules is None:
            self.lora_target_modules = ["q_proj", "k_proj", "v_proj", "o_proj"]
        self.lora_target_modules = list(self.lora_target_modules)

        qformer = self.causal_qformer_config
        if isinstance(qformer, CausalQFormerConfig):
            qformer = qformer.to_dict()
        if qformer is not None and not isinstance(qformer, dict):
            raise ValueError(
                "causal_qformer_config: expected a favor_qformer.CausalQFormerConfig or a dict of its fields, got "
                f"{type(qformer).__name__}"
            )
        fields = {f.name for f in dataclasses.fields(CausalQFormerConfig)}
        unknown = sorted(set(qformer or {}) - fields)
        if unknown:
            raise ValueError(
                f"causal_qformer_config: unknown fields {unknown}; expected some of {sorted(fields)}"
            )
        # Derived from the encoders: N tokens per frame, the visual width plus each projected audio stream's (only
        # the visual width when the streams are not fused: the audio has its own Q-Former).
        width = self.visual_hidden_size
        if self.av_fusion == "synchronised":
            width += self.audio_width
        derived = {
            "tokens_per_frame": self.tokens_per_frame_from(qformer or {}),
            "encoder_hidden_size": width,
        }
        self.causal_qformer_config = CausalQFormerConfig(**{**(qformer or {}), **derived})
        if self.component_sources is None:
            self.component_sources = {}

    # ----------------------------------------------------------------------------------------------------- derived
    @property
    def visual_hidden_size(self) -> int:
        """Width of one visual token after the frame encoder (768 released: the InstructBLIP Q-Former width)."""
        if self.vision_qformer_config is not None:
            return int(self.vision_qformer_config.hidden_size)
        return int(self.vision_config.hidden_size)

    def tokens_per_frame_from(self, causal_qformer: dict) -> int:
        """``N``: the vision Q-Former's query tokens, else the causal Q-Former's ``tokens_per_frame`` (32)."""
        if self.vision_qformer_config is not None:
            return int(self.vision_num_query_tokens)
        return int(causal_qformer.get("tokens_per_frame", 32))

    @property
    def tokens_per_frame(self) -> int:
        """Visual tokens per frame (``N``), which is also the number of audio slots per frame."""
        return int(self.causal_qformer_config.tokens_per_frame)

    @property
    def audio_stream_width(self) -> int:
        """Width of each audio stream after its trainable projection."""
        return int(self.audio_hidden_size) if self.audio_hidden_size is not None else self.visual_hidden_size

    @property
    def audio_width(self) -> int:
        """Width of all projected audio streams together (each `audio_stream_width`)."""
        return self.audio_stream_width * len(self.audio_configs)

    @property
    def audio_qformer_config(self) -> CausalQFormerConfig | None:
        """With ``av_fusion="separate"``: the audio Q-Former's config (the causal Q-Former's, over the audio
        streams' width); else ``None``."""
        if self.av_fusion != "separate":
            return None
        return dataclasses.replace(self.causal_qformer_config, encoder_hidden_size=self.audio_width)

    @property
    def av_blocks(self) -> int:
        """Token blocks per media item: 1 (synchronised) or 2 (separate: video tokens, then audio tokens)."""
        return token_blocks(self.av_fusion)

    @property
    def num_queries(self) -> int:
        """AV tokens the LLM receives per window."""
        return int(self.causal_qformer_config.num_queries)

    @property
    def qformer_config(self) -> CausalQFormerConfig:
        """The earlier name of `causal_qformer_config`."""
        return self.causal_qformer_config

    @qformer_config.setter
    def qformer_config(self, value: dict | CausalQFormerConfig) -> None:
        self.causal_qformer_config = (
            value if isinstance(value, CausalQFormerConfig) else CausalQFormerConfig(**value)
        )

    @property
    def image_repeat(self) -> int:
        """The earlier name of `repeat_image`."""
        return self.repeat_image

    @image_repeat.setter
    def image_repeat(self, value: int) -> None:
        self.repeat_image = value

    # ------------------------------------------------------------------------------------------------ serialising
    def to_dict(self) -> dict[str, Any]:
        """Like `PretrainedConfig.to_dict`, also serialising the list of audio configs."""
        lists = {k: getattr(self, k) for k in _SERIALISED_LIST_OF_CONFIGS}
        try:
            for k in lists:
                self.__dict__[k] = None
            output = super().to_dict()
        finally:
            for k, v in lists.items():
                self.__dict__[k] = v
        for k, configs in lists.items():
            items = []
            for c in configs or []:
                d = c.to_dict()
                d.pop("transformers_version", None)
                items.append(d)
            output[k] = items
        output["causal_qformer_config"] = _qformer_dict(self.causal_qformer_config)
        return output

    def to_diff_dict(self) -> dict[str, Any]:
        """Diff dict with the audio configs always present (they are a list, which the base class can't diff)."""
        lists = {k: getattr(self, k) for k in _SERIALISED_LIST_OF_CONFIGS}
        try:
            for k in lists:
                self.__dict__[k] = None
            output = super().to_diff_dict()
        finally:
            for k, v in lists.items():
                self.__dict__[k] = v
        full = self.to_dict()
        for k in (*_SERIALISED_LIST_OF_CONFIGS, "causal_qformer_config"):
            output[k] = full[k]
        return output


def _qformer_dict(config: CausalQFormerConfig) -> dict[str, Any]:
    """The saved form of the causal Q-Former config: its fields without the run-time switches."""
    return {k: v for k, v in config.to_dict().items() if k not in RUNTIME_QFORMER_FIELDS}


def _default_feature_rate(config: PretrainedConfig) -> float:
    """Feature rate (Hz) of a known audio encoder; Whisper: 100 mel frames/s halved by its stride-2 conv = 50 Hz."""
    if config.model_type == "whisper":
        return 50.0
    raise ValueError(
        f"audio_feature_rates: no default rate for audio encoder type {config.model_type!r}; pass its rate in Hz"
    )
