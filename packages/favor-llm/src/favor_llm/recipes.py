"""Trainable tiny FAVOR configurations: the whole released structure, sized to learn AVEB-mini on 2 CPU cores.

`aveb_tiny_config` builds a `FavorConfig` from real transformers classes: a 1-layer InstructBLIP ViT on 32x32
frames whose patch tokens are pooled to ``tokens_per_frame`` visual tokens per frame, a 2-layer Whisper encoder
with 5 s windows, the temporal synchroniser, a 2-layer causal Q-Former and a 2-layer Llama with LoRA. As in the
paper (Sec. 3.4) the encoders and the LLM are frozen; the audio projection, the causal Q-Former, the LLM
projection and the LoRA adapters train.

Nothing is downloaded, so the frozen parts are random. Two things make random frozen parts usable, both found by
experiment (features of six colours / two tones on AVEB-like clips):

- initialisation scale. transformers' BLIP vision config initialises with ``initializer_range=1e-10`` (it expects
  pretrained weights), which leaves a random tower blind: the frame features of a red and a blue frame differed by
  1e-8 of their size. The ViT here uses 0.02, and Whisper's encoder ``init_std=0.3``: at its default 0.02 the
  sinusoidal positions swamp the content (a high and a low tone differed by 1e-4 of the feature size; at 0.3 by
  0.1 to 0.3). The frozen Llama uses ``initializer_range=0.2``: with 0.02 its output layer cannot produce a logit
  above about 1.3 from an RMS-normalised state of width 64, so no adapter could make an answer confident.
- no per-frame InstructBLIP Q-Former: a random one averages the patches into near-constant query outputs (colour
  differences of 0.5 % of the feature size); pooled ViT patch tokens keep them (80 %). `FrameEncoder` pools patch
  tokens for any vision tower without a Q-Former.

Sizes (LLM width 64, Q-Former width 64, 4 queries per window of 4 frames at 2 fps, 8 tokens per frame, audio steps
pooled into the 8 slots of their frame) and the learning rate in `AVEB_TINY_TRAINING` were picked by training
runs on 2 CPU cores; see docs/training.md.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

import torch
from transformers import AutoConfig, PreTrainedTokenizerFast

from .configuration import FavorConfig
from .modeling import FavorModel
from .processing import FavorProcessor
from .special_tokens import SPECIAL_TOKENS, as_favor_tokenizer
from .testing import tiny_text_config, tiny_whisper_config

__all__ = [
    "AVEB_TINY_TRAINING",
    "RECIPES",
    "aveb_tiny_config",
    "build_model",
    "recipe_processor",
    "word_tokenizer",
]

#: The words of the released prompt template (``"USER: <Img>{media}</Img> {question}\nASSISTANT:"``).
TEMPLATE_WORDS = ("USER:", "<Img>", "</Img>", "ASSISTANT:")

#: Training settings that go with `aveb_tiny_config` (the defaults of ``favor train`` for ``recipe: aveb-tiny``).
AVEB_TINY_TRAINING: dict[str, Any] = {
    "learning_rate": 3e-3,
    "warmup_ratio": 0.05,
    "weight_decay": 0.0,
    "per_device_train_batch_size": 16,
}


def word_tokenizer(texts: Iterable[str], extra_words: Iterable[str] = ()) -> PreTrainedTokenizerFast:
    """A word-level tokenizer (``tokenizers.models.WordLevel``) whose vocabulary is every whitespace-separated word
    of ``texts`` and ``extra_words`` plus the prompt template's words and the specials ``<unk> <s> </s> <pad> <AV>``.

    Words are sorted, so the same texts give the same ids in any order. Unknown words become ``<unk>``.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    words = set(extra_words)
    for text in texts:
        words.update(text.split())
    words -= set(SPECIAL_TOKENS)
    vocab = list(SPECIAL_TOKENS) + list(TEMPLATE_WORDS)
    vocab += sorted(words - set(vocab))
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(vocab)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##")  # joins words with single spaces
    return as_favor_tokenizer(tok)


def aveb_tiny_config(tokenizer: PreTrainedTokenizerFast, **overrides: Any) -> FavorConfig:
    """The trainable tiny FAVOR for AVEB-mini (see the module docstring); ``overrides`` replace `FavorConfig`
    fields (unknown ones are a ``ValueError``), and ``causal_qformer_config`` (or its old name ``qformer_config``)
    entries are merged into the recipe's (e.g. ``causal_qformer_config={"window_size": 1}``).

    Shapes for a 4 s clip: 8 frames x 8 visual tokens of width 32, Whisper 200 steps of width 32 projected to 32,
    synchronised to ``(8, 8, 64)``, 2 windows x 4 queries = 8 AV tokens of width 64 in the LLM.
    """
    vision = AutoConfig.for_model(
        "instructblip_vision_model",
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=32,
        patch_size=16,
        initializer_range=0.02,
    )
    # The test suite's tiny Whisper and Llama, initialised at scales where a random frozen encoder keeps beeps
    # apart (init_std 0.3) and the frozen LLM's output layer can give a confident answer (0.2; 0.02 cannot).
    whisper = tiny_whisper_config(d_model=32, init_std=0.3)
    width = 64
    text = tiny_text_config(
        tokenizer, num_key_value_heads=4, max_position_embeddings=512, initializer_range=0.2
    )
    qformer = {
        "tokens_per_frame": 8,
        "hidden_size": width,
        "num_layers": 2,
        "num_heads": 4,
        "intermediate_size": 2 * width,
        "num_queries": 4,
        "causal_num_heads": 4,
        "window_size": 4,
        "window_stride": 4,
        "max_position_embeddings": 64,
        "dropout": 0.0,
    }
    known = {f.name for f in dataclasses.fields(FavorConfig)} | {"qformer_config"}
    unknown = sorted(set(overrides) - known)
    if unknown:  # FavorConfig keeps unknown keys as attributes: a typo would change nothing, silently
        raise ValueError(
            f"model_overrides: unknown FavorConfig field(s) {unknown}; expected some of {sorted(known)}"
        )
    for name in ("qformer_config", "causal_qformer_config"):  # the field, and its name before the rename
        qformer.update(overrides.pop(name, None) or {})
    kwargs: dict[str, Any] = dict(
        vision_config=vision,
        vision_qformer_config=None,
        vision_use_instruction=False,
        audio_configs=[whisper],
        audio_feature_rates=[50.0],
        audio_hidden_size=32,
        sync_overflow="pool",  # 25 Whisper steps per frame at 2 fps, 8 slots: averaged in order
        repeat_image=8,
        max_media_seconds=30.0,
        causal_qformer_config=qformer,
        text_config=text,
        lora_r=8,
        lora_alpha=16,
        lora_dropout=0.0,
        av_token="<AV>",
        av_token_id=tokenizer.convert_tokens_to_ids("<AV>"),
    )
    kwargs.update(overrides)
    return FavorConfig(**kwargs)


def recipe_processor(config: FavorConfig, tokenizer: PreTrainedTokenizerFast) -> FavorProcessor:
    """The processor for a recipe config: BLIP image processor at the ViT's size, Whisper features in its windows."""
    from .testing import tiny_processor

    return tiny_processor(config, tokenizer)


def build_model(config: FavorConfig, seed: int = 0) -> FavorModel:
    """A `FavorModel` with weights drawn from ``seed`` (same seed and config, same weights), in train mode."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = FavorModel(config)
    return model.train()


#: Recipes by name (``recipe:`` in a ``favor train`` config).
RECIPES = {"aveb-tiny": aveb_tiny_config}
