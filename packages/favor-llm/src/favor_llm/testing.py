"""A complete tiny FAVOR built offline from configs of real transformers classes, for tests, docs and demos.

`tiny_model_and_processor` returns a `FavorModel` (2-layer InstructBLIP ViT + 2-layer InstructBLIP Q-Former per
frame, 2-layer Whisper encoder with 5 s windows, 2-layer causal Q-Former, 2-layer Llama with LoRA) and its
`FavorProcessor` (a byte-level BPE tokenizer trained with the ``tokenizers`` library on an embedded corpus, a BLIP
image processor at 32x32, a Whisper feature extractor). Nothing is downloaded; weights are random (seeded), and the
LoRA ``B`` matrices are randomised too so that the adapter changes the outputs (as a trained one would).
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import (
    AutoConfig,
    BlipImageProcessorPil,
    PretrainedConfig,
    PreTrainedTokenizerFast,
    WhisperFeatureExtractor,
)

from .configuration import FavorConfig
from .modeling import FavorModel
from .processing import FavorProcessor
from .special_tokens import SPECIAL_TOKENS, as_favor_tokenizer

__all__ = [
    "TINY_CORPUS",
    "tiny_config",
    "tiny_model_and_processor",
    "tiny_processor",
    "tiny_text_config",
    "tiny_tokenizer",
    "tiny_whisper_config",
]

#: Text the tiny tokenizer is trained on (so prompts and answers tokenise into a handful of tokens).
TINY_CORPUS = [
    "USER: <Img></Img> What is happening in the video?\nASSISTANT: A person is speaking.",
    "USER: What sound do you hear?\nASSISTANT: A dog barks twice and a car passes by.",
    "Describe the video in detail. The red square turns blue after one second.",
    "Is there speech in the audio? Yes, a man says hello and then music plays.",
    "How many people are in the scene? There are two people talking near a window.",
    "What colour is the screen at the start? It is red, then green, then blue.",
    "When does the tone start? The tone starts at one and a half seconds.",
    "the a an and or of in on at to is are was were be been it this that what which who when where why how",
    "video audio image frame sound speech music voice noise silence colour color red green blue white black",
    "yes no one two three four five six seven eight nine ten first second third last before after then",
    "Hello world. Good morning. Thank you. Please answer the question briefly.",
    "0 1 2 3 4 5 6 7 8 9 . , ? ! : ; ' \" ( ) - _ / \n",
]


def tiny_tokenizer(vocab_size: int = 384) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained on `TINY_CORPUS` (deterministic; specials ``<s> </s> <pad> <unk> <AV>``)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(TINY_CORPUS, trainer=trainer)
    return as_favor_tokenizer(tok)


def tiny_whisper_config(d_model: int = 32, **overrides: Any) -> PretrainedConfig:
    """A 2-layer Whisper config (width ``d_model``, 5 s windows: 250 encoder positions at 50 Hz); ``overrides``
    replace its fields (e.g. ``init_std``)."""
    fields: dict[str, Any] = dict(
        d_model=d_model,
        encoder_layers=2,
        encoder_attention_heads=4,
        encoder_ffn_dim=64,
        decoder_layers=1,
        decoder_attention_heads=4,
        decoder_ffn_dim=64,
        num_mel_bins=80,
        max_source_positions=250,
        vocab_size=64,
        pad_token_id=0,
        bos_token_id=0,
        eos_token_id=0,
        decoder_start_token_id=0,
        begin_suppress_tokens=None,
    )
    return AutoConfig.for_model("whisper", **{**fields, **overrides})


def tiny_text_config(
    tokenizer: PreTrainedTokenizerFast, model_type: str = "llama", **overrides: Any
) -> PretrainedConfig:
    """A 2-layer causal-LM config (``"llama"``, ``"qwen2"``, ...) sized for ``tokenizer``'s vocabulary;
    ``overrides`` replace its fields."""
    fields: dict[str, Any] = dict(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    return AutoConfig.for_model(model_type, **{**fields, **overrides})


def tiny_config(tokenizer: PreTrainedTokenizerFast | None = None, **overrides) -> FavorConfig:
    """The tiny `FavorConfig` (same structure as the released model, every size shrunk; 5 s Whisper windows).

    ``overrides`` replace any `FavorConfig` field (e.g. ``causal_qformer_config={...}``, ``repeat_image=60``).
    """
    tokenizer = tokenizer or tiny_tokenizer()
    vocab = len(tokenizer)
    vision = AutoConfig.for_model(
        "instructblip_vision_model",
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=32,
        patch_size=8,
    )
    vision_qformer = AutoConfig.for_model(
        "instructblip_qformer",
        vocab_size=vocab,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        encoder_hidden_size=32,
        cross_attention_frequency=1,
        max_position_embeddings=128,
        pad_token_id=tokenizer.pad_token_id,
    )
    whisper = tiny_whisper_config()
    text = tiny_text_config(tokenizer)
    kwargs = dict(
        vision_config=vision,
        vision_qformer_config=vision_qformer,
        vision_num_query_tokens=32,
        audio_configs=[whisper],
        audio_feature_rates=[50.0],
        audio_hidden_size=32,
        repeat_image=8,
        max_media_seconds=60.0,
        causal_qformer_config={
            "hidden_size": 32,
            "num_layers": 2,
            "num_heads": 4,
            "intermediate_size": 64,
            "num_queries": 4,
            "causal_num_heads": 4,
            "window_size": 4,
            "window_stride": 4,
            "max_position_embeddings": 128,
        },
        text_config=text,
        lora_r=4,
        lora_alpha=8,
        av_token="<AV>",
        av_token_id=tokenizer.convert_tokens_to_ids("<AV>"),
    )
    kwargs.update(overrides)
    return FavorConfig(**kwargs)


def tiny_processor(config: FavorConfig, tokenizer: PreTrainedTokenizerFast | None = None) -> FavorProcessor:
    """The processor for a tiny config: BLIP image processor at the ViT's size, Whisper features in its windows."""
    tokenizer = tokenizer or tiny_tokenizer()
    size = int(config.vision_config.image_size)
    image_processor = BlipImageProcessorPil(size={"height": size, "width": size})
    feature_extractors = []
    for audio in config.audio_configs:
        window_seconds = audio.max_source_positions * 2 * 160 // config.audio_sample_rate
        feature_extractors.append(
            WhisperFeatureExtractor(feature_size=audio.num_mel_bins, chunk_length=window_seconds)
        )
    qformer = config.vision_qformer_config
    instruction_aware = qformer is not None and qformer.model_type == "instructblip_qformer"
    processor = FavorProcessor.from_config(
        config,
        tokenizer,
        image_processor,
        feature_extractors,
        qformer_tokenizer=tokenizer if instruction_aware else None,
    )
    if instruction_aware:
        processor.qformer_max_length = int(qformer.max_position_embeddings)
    return processor


def tiny_model_and_processor(
    seed: int = 0, dtype: torch.dtype | None = None, **config_overrides
) -> tuple[FavorModel, FavorProcessor]:
    """A complete tiny FAVOR (random weights from ``seed``) and its processor, built offline in about a second.

    Args:
        seed: seeds every weight (same seed, same model).
        dtype: cast with `FavorModel.to_mixed_precision` (the causal Q-Former stays float32).
        config_overrides: `FavorConfig` fields to change (see `tiny_config`).

    Returns:
        ``(model, processor)``; the model is in eval mode.
    """
    tokenizer = tiny_tokenizer()
    config = tiny_config(tokenizer, **config_overrides)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = FavorModel(config)
        generator = torch.Generator().manual_seed(seed + 1)
        with torch.no_grad():
            for name, param in model.named_parameters():
                if "lora_B" in name:
                    param.copy_(torch.randn(param.shape, generator=generator) * 0.05)
    model.eval()
    if dtype is not None:
        model.to_mixed_precision(dtype)
    return model, tiny_processor(config, tokenizer)
