"""`FavorProcessor`: questions + media -> the inputs of `FavorModel` (tokenizer, frame processor, Whisper features).

Call convention as in transformers::

    inputs = processor(text=questions, media=media_list, answers=None, return_tensors="pt")
    out = model.generate(**inputs, max_new_tokens=32)
    answers = processor.batch_decode(out[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)

Each question is wrapped in the prompt template (released: ``"USER: <Img>{media}</Img> {question}\\nASSISTANT:"``)
whose ``{media}`` slot gets the AV placeholder, which is then expanded into ``windows x num_queries`` placeholder
tokens (like LLaVA's image token); `FavorModel` puts the AV tokens there. With ``answers`` the answer (+ EOS)
follows and ``labels`` are -100 everywhere else. Batches are left-padded (generation appends on the right).

Media items: a path or ``bytes`` (decoded with `favor_avsync.load_media`), a `favor_avsync.MediaClip`, a dict
``{"video": frames, "audio": waveform, "image": image, "sample_rate": sr}`` of arrays, a bare array (1-D: a
waveform; 3-D: an image ``(H, W, 3)`` or ``(3, H, W)``; 4-D: frames ``(T, H, W, 3)`` or ``(T, 3, H, W)``, taken
at ``fps``), or ``None`` (text only).

Saving and loading go through `transformers.ProcessorMixin` (so ``AutoProcessor.from_pretrained`` finds the
processor from a local directory or a Hub repo id, and ``push_to_hub`` works)::

    dir/tokenizer.json, tokenizer_config.json   the LLM tokenizer (standard attribute ``tokenizer``)
    dir/processor_config.json                   ``image_processor`` and ``feature_extractor`` (standard attributes,
                                                nested as transformers does), ``extra_feature_extractors`` (one per
                                                further audio encoder), ``layout``, the placeholder, the templates
    dir/qformer_tokenizer/                      InstructBLIP's Q-Former tokenizer, when there is one (the subfolder
                                                transformers uses for a second tokenizer, as InstructBLIP's processor)
    dir/chat_template.jinja                     an optional chat template

ProcessorMixin's attributes are fixed per class and required, so the optional Q-Former tokenizer and the audio
feature extractors after the first are saved and loaded explicitly here (see `FavorProcessor.save_pretrained`).
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import BatchFeature, PreTrainedTokenizerBase, ProcessorMixin

from .configuration import RELEASED_PROMPT_TEMPLATE, RELEASED_TEXT_ONLY_TEMPLATE, FavorConfig
from .layout import AVLayout
from .media_items import PreparedMedia, media_features, num_av_tokens, prepare_media, visual_frames
from .processor_io import PROCESSOR_CONFIG_NAME, QFORMER_TOKENIZER_DIR, FavorProcessorSaving
from .prompts import build_prompt, text_batch

__all__ = ["FavorProcessor", "PreparedMedia"]

__all__ += ["PROCESSOR_CONFIG_NAME", "QFORMER_TOKENIZER_DIR"]


class FavorProcessor(FavorProcessorSaving, ProcessorMixin):
    """Turns questions (and answers) with media into `FavorModel` inputs; a `transformers.ProcessorMixin`.

    Args:
        tokenizer: the LLM tokenizer; must know ``av_token`` (added as a special token if missing) and have a pad
            token (EOS is used when it has none, as released).
        image_processor: a transformers image processor (resize + normalise), applied to every frame.
        feature_extractors: one Whisper feature extractor per audio encoder (its ``n_samples`` is the encoder's
            window; longer audio is split into consecutive windows); a single one for a single encoder. The first
            is also ``processor.feature_extractor``.
        layout: frame / window / token settings (`AVLayout.from_config(model.config)`; a dict of its fields is
            accepted too, as read from ``processor_config.json``).
        qformer_tokenizer: tokenizer of InstructBLIP's Q-Former for the instruction input (optional).
        av_token: the placeholder token (see `FavorConfig`).
        prompt_template: the prompt around a question with media.
        text_only_template: the prompt around a question without media.
        qformer_max_length: instruction tokens kept for the Q-Former (its text position embeddings; BERT: 512).
        chat_template: an optional Jinja chat template (saved as ``chat_template.jinja``, used by
            ``apply_chat_template``); the FAVOR prompt itself comes from ``prompt_template``.
    """

    #: The sub-processors `ProcessorMixin` saves and loads itself (see `get_attributes`).
    _STANDARD_ATTRIBUTES = ("tokenizer", "image_processor", "feature_extractor")

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        image_processor: Any,
        feature_extractors: Any,
        layout: AVLayout | dict | None = None,
        qformer_tokenizer: PreTrainedTokenizerBase | None = None,
        av_token: str = "<AV>",
        prompt_template: str = RELEASED_PROMPT_TEMPLATE,
        text_only_template: str = RELEASED_TEXT_ONLY_TEMPLATE,
        qformer_max_length: int = 512,
        chat_template: str | dict[str, str] | None = None,
    ) -> None:
        if not isinstance(feature_extractors, (list, tuple)):
            feature_extractors = [feature_extractors]
        feature_extractors = list(feature_extractors)
        if not feature_extractors:
            raise ValueError("feature_extractors: expected at least one audio feature extractor, got none")
        if isinstance(layout, dict):
            layout = AVLayout.from_dict(layout)
        if layout is not None and not isinstance(layout, AVLayout):
            raise ValueError(
                f"layout: expected an AVLayout or a dict of its fields, got {type(layout).__name__}"
            )
        if qformer_tokenizer is not None and not isinstance(qformer_tokenizer, PreTrainedTokenizerBase):
            raise ValueError(
                f"qformer_tokenizer: expected a transformers tokenizer or None, got {type(qformer_tokenizer).__name__}"
            )
        # ProcessorMixin checks the classes of the standard sub-processors and sets them as attributes.
        try:
            super().__init__(tokenizer, image_processor, feature_extractors[0], chat_template=chat_template)
        except TypeError as error:  # "Received a str for argument image_processor, but a ... was expected."
            raise ValueError(str(error)) from error
        self.qformer_max_length = int(qformer_max_length)
        self.feature_extractors = feature_extractors
        self.layout = layout or AVLayout()
        self.qformer_tokenizer = qformer_tokenizer
        self.av_token = av_token
        self.prompt_template = prompt_template
        self.text_only_template = text_only_template
        if "{media}" not in prompt_template or "{question}" not in prompt_template:
            raise ValueError(
                f"prompt_template: needs '{{media}}' and '{{question}}', got {prompt_template!r}"
            )
        if av_token not in tokenizer.get_vocab():
            tokenizer.add_special_tokens({"additional_special_tokens": [av_token]})
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token  # released: pad with EOS
        self.av_token_id = int(tokenizer.convert_tokens_to_ids(av_token))
        if len(self.feature_extractors) != len(self.layout.audio_feature_rates):
            raise ValueError(
                f"feature_extractors: expected one per audio encoder ({len(self.layout.audio_feature_rates)}), "
                f"got {len(self.feature_extractors)}"
            )
        for fe in self.feature_extractors:
            if int(fe.sampling_rate) != self.layout.sample_rate:
                raise ValueError(
                    f"feature_extractors: sampling_rate {fe.sampling_rate} differs from the layout's "
                    f"{self.layout.sample_rate}"
                )

    @property
    def feature_extractor(self) -> Any:
        """The first audio feature extractor (ProcessorMixin's standard attribute); all are `feature_extractors`."""
        return self.feature_extractors[0]

    @feature_extractor.setter
    def feature_extractor(self, value: Any) -> None:
        extractors = self.__dict__.get("feature_extractors")
        if extractors:
            extractors[0] = value
        else:
            self.__dict__["feature_extractors"] = [value]

    @classmethod
    def get_attributes(cls) -> list[str]:
        """The standard sub-processors: ``tokenizer``, ``image_processor``, ``feature_extractor`` (the first audio
        one). ProcessorMixin would infer attributes from every ``__init__`` argument whose name holds "tokenizer" or
        "feature_extractor"; the optional ``qformer_tokenizer`` and the list ``feature_extractors`` are handled
        explicitly instead (`save_pretrained`, `_get_arguments_from_pretrained`)."""
        return list(cls._STANDARD_ATTRIBUTES)

    @property
    def model_input_names(self) -> list[str]:
        """The keys `__call__` can return (all of them are `FavorModel.forward` arguments)."""
        names = [
            "input_ids",
            "attention_mask",
            "pixel_values",
            "pixel_lengths",
            "frame_lengths",
            "audio_lengths",
        ]
        names += [
            "input_features" if k == 0 else f"input_features_{k}" for k in range(len(self.feature_extractors))
        ]
        if self.qformer_tokenizer is not None:
            names += ["qformer_input_ids", "qformer_attention_mask"]
        return names

    @classmethod
    def from_config(
        cls,
        config: FavorConfig,
        tokenizer: PreTrainedTokenizerBase,
        image_processor: Any,
        feature_extractors: Any,
        qformer_tokenizer: PreTrainedTokenizerBase | None = None,
    ) -> FavorProcessor:
        """A processor whose layout, placeholder and templates follow ``config``."""
        return cls(
            tokenizer,
            image_processor,
            feature_extractors,
            layout=AVLayout.from_config(config),
            qformer_tokenizer=qformer_tokenizer,
            av_token=config.av_token,
            prompt_template=config.prompt_template,
            text_only_template=config.text_only_template,
        )

    # ------------------------------------------------------------------------------------------------- media
    def load(self, item: Any, index: int = 0) -> PreparedMedia | None:
        """Normalise one media item (see `favor_llm.media_items`) to `PreparedMedia`; checks the length limit."""
        return prepare_media(item, self.layout, index)

    def visual_frames(self, media: PreparedMedia) -> int:
        """Frames the visual stream spans: the video's, an image's repeat count (its audio's frames with audio)."""
        return visual_frames(media, self.layout)

    def num_av_tokens(self, media: PreparedMedia | None) -> int:
        """Placeholder tokens one media item expands into (0 for none)."""
        return num_av_tokens(media, self.layout)

    # -------------------------------------------------------------------------------------------------- text
    def build_prompt(
        self, question: str, has_media: bool, apply_template: bool = True, index: int = 0
    ) -> str:
        """The prompt text with at most one AV placeholder (before expansion)."""
        templates = (self.prompt_template, self.text_only_template) if apply_template else None
        return build_prompt(question, has_media, self.av_token, templates, index)

    def text_inputs(
        self,
        questions: str | list[str],
        av_tokens: int | list[int],
        answers: str | list[str] | None = None,
        apply_template: bool = True,
        padding_side: str = "left",
    ) -> dict[str, torch.Tensor]:
        """`__call__`'s text tensors without the media: ``questions`` whose media expand into ``av_tokens``
        placeholder tokens each (`num_av_tokens`; 0: none) -> ``input_ids``, ``attention_mask`` ``(B, Lt)`` (and
        ``labels`` with ``answers``). The feature cache builds its batches with it (counts from cached features)."""
        templates = (self.prompt_template, self.text_only_template) if apply_template else None
        return text_batch(
            self.tokenizer,
            questions,
            av_tokens,
            answers,
            av_token=self.av_token,
            av_token_id=self.av_token_id,
            templates=templates,
            padding_side=padding_side,
        )

    # -------------------------------------------------------------------------------------------------- call
    def __call__(
        self,
        text: str | list[str] | None = None,
        media: Any = None,
        answers: str | list[str] | None = None,
        return_tensors: str | None = "pt",
        apply_template: bool = True,
        padding_side: str = "left",
        **kwargs: Any,
    ) -> BatchFeature:
        """Questions (+ media, + answers) -> `BatchFeature` for `FavorModel` / `FavorModel.generate`.

        Args:
            text: a question or a list of them (the batch).
            media: one item per question (see the module docstring); a single item for a single question.
            answers: target answers for training (``labels``), one per question.
            return_tensors: ``"pt"`` (torch) or ``None`` (lists; media tensors stay tensors).
            apply_template: wrap questions in the prompt template (else each text must hold one placeholder per
                media item itself).
            padding_side: ``"left"`` (default; what generation needs) or ``"right"``.

        Returns:
            ``input_ids``, ``attention_mask`` ``(B, Lt)``; ``labels`` with answers; with media ``pixel_values
            (B, F, 3, H, W)``, ``pixel_lengths``, ``frame_lengths``, ``input_features (B, K, M, L)``,
            ``audio_lengths`` (samples), and ``qformer_input_ids`` / ``qformer_attention_mask`` when the processor
            has a Q-Former tokenizer.
        """
        if kwargs:
            raise ValueError(f"unexpected arguments {sorted(kwargs)}")
        if text is None:
            raise ValueError("text: required (a question or a list of questions)")
        single = isinstance(text, str)
        texts = [text] if single else list(text)
        if single:
            media_items = [media]
        elif media is None:
            media_items = [None] * len(texts)
        elif isinstance(media, (list, tuple)):
            media_items = list(media)
        else:
            raise ValueError(
                f"media: with a list of {len(texts)} questions give a list of media, got {type(media).__name__}"
            )
        if len(media_items) != len(texts):
            raise ValueError(f"media: expected one item per question ({len(texts)}), got {len(media_items)}")
        if not texts:
            raise ValueError("text: the batch is empty")
        if return_tensors not in ("pt", None):
            raise ValueError(f"return_tensors: only 'pt' or None are supported, got {return_tensors!r}")

        prepared = [self.load(item, i) for i, item in enumerate(media_items)]
        data: dict[str, Any] = self.text_inputs(
            texts, [self.num_av_tokens(p) for p in prepared], answers, apply_template, padding_side
        )
        data.update(media_features(prepared, self.image_processor, self.feature_extractors, self.layout))
        if self.qformer_tokenizer is not None and any(
            p is not None and p.frames is not None for p in prepared
        ):
            enc = self.qformer_tokenizer(
                texts, padding=True, truncation=True, max_length=self.qformer_max_length, return_tensors="pt"
            )
            data["qformer_input_ids"] = enc["input_ids"]
            data["qformer_attention_mask"] = enc["attention_mask"]
        if return_tensors is None:
            data = {
                k: v.tolist() if k in ("input_ids", "attention_mask", "labels") else v
                for k, v in data.items()
            }
            return BatchFeature(data)
        return BatchFeature(data, tensor_type="pt")

    def collate(self, examples: list[dict[str, Any]]) -> BatchFeature:
        """A data collator: ``[{"text": q, "media": m, "answer": a}, ...]`` -> one training batch (``labels`` when
        every example has an answer). Use it as ``DataLoader(dataset, collate_fn=processor.collate)``, or as transformers'
        ``Trainer(data_collator=processor.collate)`` with ``TrainingArguments(remove_unused_columns=False)``."""
        if not examples:
            raise ValueError("examples: the batch is empty")
        for i, ex in enumerate(examples):
            if not isinstance(ex, dict) or "text" not in ex:
                hint = (
                    " (transformers' Trainer removes the keys FavorModel.forward does not take before the collator "
                    "runs: set TrainingArguments(remove_unused_columns=False))"
                    if isinstance(ex, dict) and not ({"media", "answer"} & set(ex))
                    else ""
                )
                raise ValueError(
                    f"examples[{i}]: expected a dict with 'text' (and 'media', 'answer'), got {ex!r}{hint}"
                )
        answers = [ex.get("answer") for ex in examples]
        if any(a is None for a in answers) and not all(a is None for a in answers):
            raise ValueError("examples: give an 'answer' in every example or in none")
        return self(
            text=[ex["text"] for ex in examples],
            media=[ex.get("media") for ex in examples],
            answers=None if answers[0] is None else answers,
        )

    # ------------------------------------------------------------------------------------------------ decode
    def batch_decode(self, ids: Any, skip_special_tokens: bool = True, **kwargs: Any) -> list[str]:
        """Token ids -> strings (AV placeholders are special tokens, so they are skipped too)."""
        return self.tokenizer.batch_decode(ids, skip_special_tokens=skip_special_tokens, **kwargs)

    def decode(self, ids: Any, skip_special_tokens: bool = True, **kwargs: Any) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=skip_special_tokens, **kwargs)

    def decode_answers(self, generated: torch.Tensor, inputs: BatchFeature) -> list[str]:
        """The answers only: ``generated`` from `FavorModel.generate` minus the prompt, decoded and stripped."""
        prompt_length = inputs["input_ids"].shape[1]
        return [s.strip() for s in self.batch_decode(generated[:, prompt_length:], skip_special_tokens=True)]
