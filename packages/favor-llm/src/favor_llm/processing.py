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
Directories written by the earlier layout (``favor_processor_config.json``, ``image_processor/``,
``feature_extractor_<k>/``) still load.
"""

from __future__ import annotations

import enum
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import AutoTokenizer, BatchFeature, PreTrainedTokenizerBase, ProcessorMixin

from .configuration import RELEASED_PROMPT_TEMPLATE, RELEASED_TEXT_ONLY_TEMPLATE, FavorConfig
from .layout import AVLayout

__all__ = ["FavorProcessor", "PreparedMedia"]

#: The file of the earlier (pre-ProcessorMixin) layout; such directories still load.
LEGACY_PROCESSOR_CONFIG_NAME = "favor_processor_config.json"
#: transformers' processor file (``transformers.utils.PROCESSOR_NAME``).
PROCESSOR_CONFIG_NAME = "processor_config.json"
QFORMER_TOKENIZER_DIR = "qformer_tokenizer"
_IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


@dataclass
class PreparedMedia:
    """One media item ready for the model.

    Attributes:
        frames: ``(F, 3, H, W)`` uint8 frames (``F = 1`` for an image) or ``None``.
        is_image: the single frame is a still image (repeated over frames).
        audio: ``(S,)`` float32 mono waveform at the processor's sample rate, or ``None``.
        duration: seconds.
    """

    frames: torch.Tensor | None
    is_image: bool
    audio: torch.Tensor | None
    duration: float


class FavorProcessor(ProcessorMixin):
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
            layout = AVLayout(**layout)
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
        """Normalise one media item (see the module docstring) to `PreparedMedia`; checks the length limit."""
        if item is None:
            return None
        prepared = self._load(item, index)
        limit = self.layout.max_media_seconds
        if limit is not None and prepared.duration > limit + 1e-6:
            raise ValueError(
                f"media[{index}]: {prepared.duration:.2f} s is longer than max_media_seconds={limit} "
                "(set FavorConfig.max_media_seconds / processor.layout.max_media_seconds, or cut it with "
                "favor_avsync.load_media(..., max_seconds=...))"
            )
        return prepared

    def _load(self, item: Any, index: int) -> PreparedMedia:
        name = f"media[{index}]"
        if isinstance(item, (str, Path, bytes, bytearray, memoryview)):
            from favor_avsync import load_media

            limit = self.layout.max_media_seconds
            # Decode at most a little past the limit: enough to tell that a file is too long (raised in `load`).
            max_seconds = None if limit is None else limit + 2.0 / self.layout.fps
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*cut.*")
                clip = load_media(
                    item, fps=self.layout.fps, sample_rate=self.layout.sample_rate, max_seconds=max_seconds
                )
            if isinstance(item, (str, Path)):
                is_image = Path(item).suffix.lower() in _IMAGE_SUFFIXES
            else:  # bytes: a single frame without audio is taken as a still image
                is_image = clip.frames is not None and clip.frames.shape[0] == 1 and clip.audio is None
            return self._from_clip(clip, name, is_image=is_image)
        if _is_media_clip(item):
            return self._from_clip(item, name, is_image=False)
        if isinstance(item, dict):
            unknown = set(item) - {"video", "audio", "image", "sample_rate"}
            if unknown:
                raise ValueError(
                    f"{name}: unknown keys {sorted(unknown)}; expected video, audio, image, sample_rate"
                )
            if "video" in item and "image" in item:
                raise ValueError(f"{name}: give 'video' or 'image', not both")
            audio = _waveform(
                item.get("audio"), item.get("sample_rate", self.layout.sample_rate), self.layout, name
            )
            if item.get("image") is not None:
                frames = _frames(item["image"], name, image=True)
                is_image = True
            else:
                frames = _frames(item.get("video"), name, image=False)
                is_image = False
            if frames is None and audio is None:
                raise ValueError(f"{name}: holds neither video, image nor audio")
            return self._prepared(frames, is_image, audio)
        if isinstance(item, (np.ndarray, torch.Tensor)):
            array = torch.as_tensor(np.asarray(item)) if isinstance(item, np.ndarray) else item
            if array.ndim == 1:
                return self._prepared(
                    None, False, _waveform(array, self.layout.sample_rate, self.layout, name)
                )
            if array.ndim == 3:
                return self._prepared(_frames(array, name, image=True), True, None)
            if array.ndim == 4:
                return self._prepared(_frames(array, name, image=False), False, None)
            raise ValueError(
                f"{name}: an array must be a waveform (S,), an image (H, W, 3) / (3, H, W) or frames (T, H, W, 3) / "
                f"(T, 3, H, W); got shape {tuple(array.shape)}"
            )
        raise ValueError(
            f"{name}: expected a path, bytes, a MediaClip, a dict of arrays, an array or None; got {type(item).__name__}"
        )

    def _from_clip(self, clip: Any, name: str, is_image: bool) -> PreparedMedia:
        frames = clip.frames
        audio = clip.audio
        if frames is not None:
            frames = torch.as_tensor(frames)
            if frames.ndim != 4 or frames.shape[1] != 3:
                raise ValueError(
                    f"{name}: MediaClip.frames must be (T, 3, H, W) uint8, got {tuple(frames.shape)}"
                )
            if frames.shape[0] == 0:
                frames = None
        fps = getattr(clip, "fps", None)
        if frames is not None and fps is not None and abs(float(fps) - self.layout.fps) > 1e-6:
            # frame t is taken to start at t / layout.fps: other rates would drift against the audio
            raise ValueError(
                f"{name}: MediaClip.fps {float(fps):g} differs from the processor's {self.layout.fps:g} fps; "
                f"decode with favor_avsync.load_media(..., fps={self.layout.fps:g}) or pass the path"
            )
        if audio is not None:
            audio = _waveform(audio, clip.sample_rate, self.layout, name)
        if frames is None and audio is None:
            raise ValueError(f"{name}: the media has neither frames nor audio")
        is_image = is_image and frames is not None and frames.shape[0] == 1 and audio is None
        duration = float(getattr(clip, "duration", 0.0) or 0.0)
        prepared = self._prepared(frames, is_image, audio)
        prepared.duration = max(prepared.duration, duration)
        return prepared

    def _prepared(
        self, frames: torch.Tensor | None, is_image: bool, audio: torch.Tensor | None
    ) -> PreparedMedia:
        seconds = []
        if frames is not None and not is_image:
            seconds.append(frames.shape[0] / self.layout.fps)
        if audio is not None:
            seconds.append(audio.shape[0] / self.layout.sample_rate)
        return PreparedMedia(frames, is_image, audio, max(seconds, default=0.0))

    def visual_frames(self, media: PreparedMedia) -> int:
        """Frames the visual stream spans: the video's, an image's repeat count (its audio's frames with audio)."""
        if media.frames is None:
            return 0
        if not media.is_image:
            return int(media.frames.shape[0])
        if media.audio is not None:
            return max(1, self.layout.audio_frames(media.audio.shape[0]))
        return int(self.layout.image_repeat)

    def num_av_tokens(self, media: PreparedMedia | None) -> int:
        """Placeholder tokens one media item expands into (0 for none)."""
        if media is None:
            return 0
        audio_samples = 0 if media.audio is None else int(media.audio.shape[0])
        return self.layout.av_tokens(self.visual_frames(media), audio_samples)

    # -------------------------------------------------------------------------------------------------- text
    def build_prompt(
        self, question: str, has_media: bool, apply_template: bool = True, index: int = 0
    ) -> str:
        """The prompt text with at most one AV placeholder (before expansion)."""
        if not isinstance(question, str):
            raise ValueError(f"text[{index}]: expected a string, got {type(question).__name__}")
        count = question.count(self.av_token)
        if apply_template:
            if count:
                raise ValueError(
                    f"text[{index}]: contains the AV placeholder {self.av_token!r} {count} time(s), but the prompt "
                    "template already places it; remove it from the question or pass apply_template=False"
                )
            template = self.prompt_template if has_media else self.text_only_template
            return (
                template.format(media=self.av_token, question=question)
                if has_media
                else template.format(question=question)
            )
        expected = 1 if has_media else 0
        if count != expected:
            raise ValueError(
                f"text[{index}]: expected exactly {expected} AV placeholder {self.av_token!r} "
                f"({'one media item' if has_media else 'no media'}), got {count} in {question!r}"
            )
        return question

    def _encode_prompt(self, prompt: str, num_av: int) -> list[int]:
        """BOS + prompt tokens, the placeholder expanded to ``num_av`` copies (tokenised piecewise)."""
        before, sep, after = prompt.partition(self.av_token)
        ids = [] if self.tokenizer.bos_token_id is None else [self.tokenizer.bos_token_id]
        ids += self.tokenizer(before, add_special_tokens=False)["input_ids"] if before else []
        if sep:
            ids += [self.av_token_id] * num_av
            ids += self.tokenizer(after, add_special_tokens=False)["input_ids"] if after else []
        return ids

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
        answer_list = None
        if answers is not None:
            answer_list = [answers] if isinstance(answers, str) else list(answers)
            if len(answer_list) != len(texts):
                raise ValueError(f"answers: expected one per question ({len(texts)}), got {len(answer_list)}")
        if padding_side not in ("left", "right"):
            raise ValueError(f"padding_side: expected 'left' or 'right', got {padding_side!r}")
        if not texts:
            raise ValueError("text: the batch is empty")

        prepared = [self.load(item, i) for i, item in enumerate(media_items)]
        rows, label_rows = [], []
        for i, (question, item) in enumerate(zip(texts, prepared)):
            prompt = self.build_prompt(question, item is not None, apply_template, i)
            ids = self._encode_prompt(prompt, self.num_av_tokens(item))
            labels = [-100] * len(ids)
            if answer_list is not None:
                answer_ids = self.tokenizer(answer_list[i], add_special_tokens=False)["input_ids"]
                answer_ids = [*answer_ids, self.tokenizer.eos_token_id]
                ids, labels = ids + answer_ids, labels + answer_ids
            rows.append(ids)
            label_rows.append(labels)

        data: dict[str, Any] = _pad_text(
            rows, label_rows if answer_list is not None else None, self.tokenizer.pad_token_id, padding_side
        )
        data.update(self._media_features(prepared))
        if self.qformer_tokenizer is not None and any(
            p is not None and p.frames is not None for p in prepared
        ):
            enc = self.qformer_tokenizer(
                texts, padding=True, truncation=True, max_length=self.qformer_max_length, return_tensors="pt"
            )
            data["qformer_input_ids"] = enc["input_ids"]
            data["qformer_attention_mask"] = enc["attention_mask"]
        if return_tensors not in ("pt", None):
            raise ValueError(f"return_tensors: only 'pt' or None are supported, got {return_tensors!r}")
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

    def _media_features(self, prepared: list[PreparedMedia | None]) -> dict[str, torch.Tensor]:
        batch = len(prepared)
        out: dict[str, torch.Tensor] = {}
        visual = [p.frames if p is not None else None for p in prepared]
        if any(v is not None for v in visual):
            pixels = [self._pixels(v) if v is not None else None for v in visual]
            shape = next(p for p in pixels if p is not None).shape[1:]
            max_frames = max(p.shape[0] for p in pixels if p is not None)
            pixel_values = torch.zeros(batch, max_frames, *shape)
            for b, p in enumerate(pixels):
                if p is not None:
                    pixel_values[b, : p.shape[0]] = p
            out["pixel_values"] = pixel_values
            out["pixel_lengths"] = torch.tensor([0 if p is None else p.shape[0] for p in pixels])
            out["frame_lengths"] = torch.tensor([0 if p is None else self.visual_frames(p) for p in prepared])
        audio = [p.audio if p is not None else None for p in prepared]
        if any(a is not None for a in audio):
            out["audio_lengths"] = torch.tensor([0 if a is None else a.shape[0] for a in audio])
            for k, fe in enumerate(self.feature_extractors):
                out["input_features" if k == 0 else f"input_features_{k}"] = self._audio_windows(
                    fe, audio, self.layout.audio_chunk_seconds
                )
        return out

    def _pixels(self, frames: torch.Tensor) -> torch.Tensor:
        """``(F, 3, H, W)`` uint8 -> ``(F, 3, h, w)`` float, via the image processor."""
        result = self.image_processor(images=list(frames), return_tensors="pt")
        return result["pixel_values"]

    @staticmethod
    def _audio_windows(
        fe: Any, audio: list[torch.Tensor | None], chunk_seconds: float | None = None
    ) -> torch.Tensor:
        """Waveforms -> ``(B, K, M, L)`` log-mel windows of ``fe.n_samples`` samples each (the last zero-padded), or
        of ``chunk_seconds`` of audio each (padded to the window; `FavorConfig.audio_chunk_seconds`)."""
        per_window = int(fe.n_samples)
        if chunk_seconds is not None:
            per_window = min(per_window, round(chunk_seconds * int(fe.sampling_rate)))
        windows, counts = [], []
        for a in audio:
            if a is None:
                counts.append(0)
                continue
            pieces = [a[s : s + per_window].numpy() for s in range(0, a.shape[0], per_window)]
            counts.append(len(pieces))
            windows.extend(pieces)
        feats = fe(windows, sampling_rate=fe.sampling_rate, return_tensors="pt")[
            "input_features"
        ]  # (sum K, M, L)
        out = feats.new_zeros(len(audio), max(counts), *feats.shape[1:])
        start = 0
        for b, c in enumerate(counts):
            out[b, :c] = feats[start : start + c]
            start += c
        return out

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

    # -------------------------------------------------------------------------------------------- save / load
    def to_dict(self) -> dict[str, Any]:
        """The contents of ``processor_config.json``: the image processor and the feature extractors as nested
        dicts (transformers' layout for ``image_processor`` / ``feature_extractor``), the layout, placeholder,
        templates and which optional parts exist. Tokenizers and the chat template live in their own files."""
        out: dict[str, Any] = {
            "processor_class": type(self).__name__,
            "image_processor": self.image_processor.to_dict(),
            # The exact class: AutoImageProcessor picks a PIL or torchvision backend by what is installed.
            "image_processor_class": type(self.image_processor).__name__,
            "feature_extractor": self.feature_extractors[0].to_dict(),
            "extra_feature_extractors": [fe.to_dict() for fe in self.feature_extractors[1:]],
            "has_qformer_tokenizer": self.qformer_tokenizer is not None,
            "layout": self.layout.to_dict(),
            "av_token": self.av_token,
            "prompt_template": self.prompt_template,
            "text_only_template": self.text_only_template,
            "qformer_max_length": self.qformer_max_length,
        }
        if "auto_map" in self.__dict__:
            out["auto_map"] = self.__dict__["auto_map"]
        return json.loads(json.dumps(out, default=_json_default))

    def save_pretrained(
        self, save_directory: str | os.PathLike, push_to_hub: bool = False, **kwargs: Any
    ) -> list[str]:
        """Write the processor so that ``FavorProcessor.from_pretrained`` / ``AutoProcessor.from_pretrained`` load it.

        `ProcessorMixin.save_pretrained` writes the tokenizer (top level), ``processor_config.json`` (`to_dict`)
        and the chat template; the Q-Former tokenizer, when there is one, goes to ``qformer_tokenizer/``.
        ``push_to_hub=True`` then uploads the directory (``repo_id``, ``commit_message``, ``token``, ... as in
        `transformers.utils.PushToHubMixin.push_to_hub`).

        Returns:
            the paths of the files written (``processor_config.json`` first).
        """
        root = Path(save_directory)
        files = list(super().save_pretrained(str(root)))
        if self.qformer_tokenizer is not None:
            self.qformer_tokenizer.save_pretrained(str(root / QFORMER_TOKENIZER_DIR))
        if push_to_hub:
            repo_id = kwargs.pop("repo_id", root.name)
            kwargs.pop("max_shard_size", None)
            self.push_to_hub(repo_id, **kwargs)
        return files

    @classmethod
    def from_pretrained(
        cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs: Any
    ) -> FavorProcessor:
        """Load a processor from a local directory or a Hub repo id (``revision``, ``token``, ``cache_dir``,
        ``local_files_only``, ``subfolder`` as in transformers); ``kwargs`` that are ``__init__`` arguments (e.g.
        ``qformer_max_length``) override the saved values. Directories of the earlier layout load too."""
        path = Path(pretrained_model_name_or_path)
        local = path / kwargs.get("subfolder", "")
        if not path.exists() and (
            path.is_absolute() or str(pretrained_model_name_or_path).startswith((".", "~"))
        ):
            raise ValueError(f"pretrained_model_name_or_path: the directory {path} does not exist")
        if local.is_dir() and not (local / PROCESSOR_CONFIG_NAME).is_file():
            if (local / LEGACY_PROCESSOR_CONFIG_NAME).is_file():
                return cls._from_legacy_directory(local, **kwargs)
            raise ValueError(
                f"pretrained_model_name_or_path: {local} has no {PROCESSOR_CONFIG_NAME} (nor the earlier "
                f"{LEGACY_PROCESSOR_CONFIG_NAME}); is it a directory written by FavorProcessor.save_pretrained?"
            )
        return super().from_pretrained(pretrained_model_name_or_path, **kwargs)

    @classmethod
    def _get_arguments_from_pretrained(
        cls, pretrained_model_name_or_path: Any, processor_dict: dict | None = None, **kwargs: Any
    ) -> list[Any]:
        """ProcessorMixin loads the standard sub-processors (``tokenizer``, ``image_processor``,
        ``feature_extractor``); this adds the extra feature extractors (from their nested dicts in
        ``processor_config.json``, as transformers builds non-primary sub-processors) and the Q-Former tokenizer
        (from ``qformer_tokenizer/``). The Q-Former tokenizer reaches ``__init__`` through ``processor_dict``,
        whose entries that are ``__init__`` arguments ``from_args_and_dict`` passes on."""
        processor_dict = {} if processor_dict is None else processor_dict
        tokenizer, image_processor, feature_extractor = super()._get_arguments_from_pretrained(
            pretrained_model_name_or_path, processor_dict, **kwargs
        )
        wanted = processor_dict.get("image_processor_class")
        if wanted and type(image_processor).__name__ != wanted:
            image_processor = cls.get_possibly_dynamic_module(wanted).from_pretrained(
                pretrained_model_name_or_path, **kwargs
            )
        extractors = [feature_extractor]
        for k, config in enumerate(processor_dict.get("extra_feature_extractors", []), start=1):
            if not isinstance(config, dict) or "feature_extractor_type" not in config:
                raise ValueError(
                    f"extra_feature_extractors[{k - 1}] in {PROCESSOR_CONFIG_NAME}: expected a dict with "
                    f"'feature_extractor_type', got {config!r}"
                )
            fe_class = cls.get_possibly_dynamic_module(config["feature_extractor_type"])
            extractors.append(
                fe_class(**{k2: v for k2, v in config.items() if k2 != "feature_extractor_type"})
            )
        if processor_dict.get("has_qformer_tokenizer"):
            subfolder = kwargs.pop("subfolder", "")
            processor_dict["qformer_tokenizer"] = cls._load_tokenizer_from_pretrained(
                "qformer_tokenizer", pretrained_model_name_or_path, subfolder=subfolder, **kwargs
            )
        return [tokenizer, image_processor, extractors]

    @classmethod
    def _from_legacy_directory(cls, root: Path, **kwargs: Any) -> FavorProcessor:
        """Load the earlier layout: ``favor_processor_config.json``, the tokenizer at the top level,
        ``image_processor/``, ``feature_extractor_<k>/`` and ``qformer_tokenizer/``."""
        import transformers
        from transformers import WhisperFeatureExtractor

        settings = json.loads((root / LEGACY_PROCESSOR_CONFIG_NAME).read_text())
        tokenizer = AutoTokenizer.from_pretrained(root)
        image_cls = getattr(transformers, settings["image_processor_class"])
        image_processor = image_cls.from_pretrained(root / "image_processor")
        fes = [
            WhisperFeatureExtractor.from_pretrained(root / f"feature_extractor_{k}")
            for k in range(settings["num_feature_extractors"])
        ]
        qtok = (
            AutoTokenizer.from_pretrained(root / QFORMER_TOKENIZER_DIR)
            if settings["has_qformer_tokenizer"]
            else None
        )
        init = {
            "layout": AVLayout(**settings["layout"]),
            "qformer_tokenizer": qtok,
            "av_token": settings["av_token"],
            "prompt_template": settings["prompt_template"],
            "text_only_template": settings["text_only_template"],
            "qformer_max_length": settings.get("qformer_max_length", 512),
        }
        init.update({k: v for k, v in kwargs.items() if k in init or k == "chat_template"})
        return cls(tokenizer, image_processor, fes, **init)


# ---------------------------------------------------------------------------------------------------- helpers
def _json_default(value: Any) -> Any:
    """JSON for what sub-processor dicts may hold: numpy arrays and scalars, enums (PIL resampling), tuples."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, enum.Enum):  # e.g. PIL's Resampling
        return value.value
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _is_media_clip(item: Any) -> bool:
    return all(hasattr(item, a) for a in ("frames", "audio", "sample_rate"))


def _frames(array: Any, name: str, image: bool) -> torch.Tensor | None:
    """An image ``(H, W, 3)`` / ``(3, H, W)`` or frames ``(T, H, W, 3)`` / ``(T, 3, H, W)`` -> uint8 ``(T, 3, H, W)``."""
    if array is None:
        return None
    t = torch.as_tensor(np.asarray(array)) if not isinstance(array, torch.Tensor) else array
    if image:
        if t.ndim != 3:
            raise ValueError(f"{name}: an image must be (H, W, 3) or (3, H, W), got shape {tuple(t.shape)}")
        t = t[None]
    if t.ndim != 4:
        raise ValueError(
            f"{name}: video frames must be (T, H, W, 3) or (T, 3, H, W), got shape {tuple(t.shape)}"
        )
    if t.shape[1] != 3 and t.shape[-1] == 3:
        t = t.permute(0, 3, 1, 2)
    if t.shape[1] != 3:
        raise ValueError(f"{name}: frames need 3 colour channels, got shape {tuple(t.shape)}")
    if t.shape[0] == 0:
        raise ValueError(f"{name}: the video has no frames")
    if t.is_floating_point():
        if not bool(torch.isfinite(t).all()):
            raise ValueError(f"{name}: frames hold NaN or inf")
        t = (t.clamp(0, 1) * 255).round() if float(t.max()) <= 1.0 else t.clamp(0, 255).round()
    return t.to(torch.uint8)


def _waveform(array: Any, sample_rate: int, layout: AVLayout, name: str) -> torch.Tensor | None:
    """A mono waveform at the layout's sample rate as float32 ``(S,)``."""
    if array is None:
        return None
    t = torch.as_tensor(np.asarray(array)) if not isinstance(array, torch.Tensor) else array
    if t.ndim == 2 and 1 in t.shape:
        t = t.reshape(-1)
    if t.ndim != 1:
        raise ValueError(f"{name}: audio must be a mono waveform (S,), got shape {tuple(t.shape)}")
    if int(sample_rate) != layout.sample_rate:
        raise ValueError(
            f"{name}: audio sample_rate {sample_rate} Hz differs from the processor's {layout.sample_rate} Hz; "
            "resample it (favor_avsync.load_media does this for files)"
        )
    if not t.is_floating_point():
        # integer PCM (WAV readers): full scale is +-1, as in float audio and Whisper's feature extractor
        if t.dtype == torch.uint8:  # 8-bit WAV is unsigned, centred on 128
            t = (t.to(torch.float32) - 128.0) / 128.0
        elif t.dtype in (torch.int8, torch.int16, torch.int32):
            t = t.to(torch.float32) / float(-torch.iinfo(t.dtype).min)
        else:
            raise ValueError(
                f"{name}: audio must be float (-1..1) or integer PCM (int8, int16, int32, uint8), got {t.dtype}"
            )
    t = t.to(torch.float32)
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name}: audio holds NaN or inf")
    if t.shape[0] == 0:
        return None
    return t


def _pad_text(
    rows: list[list[int]], label_rows: list[list[int]] | None, pad_id: int, side: str
) -> dict[str, torch.Tensor]:
    length = max(len(r) for r in rows)
    ids = torch.full((len(rows), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), length), dtype=torch.long)
    labels = torch.full((len(rows), length), -100, dtype=torch.long)
    for b, r in enumerate(rows):
        sl = slice(length - len(r), length) if side == "left" else slice(0, len(r))
        ids[b, sl] = torch.tensor(r, dtype=torch.long)
        mask[b, sl] = 1
        if label_rows is not None:
            labels[b, sl] = torch.tensor(label_rows[b], dtype=torch.long)
    out = {"input_ids": ids, "attention_mask": mask}
    if label_rows is not None:
        out["labels"] = labels
    return out
