"""A disk cache of the frozen encoders' outputs per media file, so training decodes and encodes each clip once.

FAVOR's vision and audio encoders are frozen (paper Sec. 3.4), so their outputs for a clip never change during
training. `FeatureCache` stores them (`FavorModel.encode_frozen_media`: ``visual_features (T, N, Dv)``, the audio
encoders' ``audio_features (S, Da)`` before the trainable projection, the frame and sample counts) as one
safetensors file per clip, and builds training batches from them: later epochs and later runs skip decoding,
frame / mel preprocessing and both encoders.

The key of a clip is a SHA-256 over

- the file's content (not its name or time stamp: a clip copied elsewhere hits, an edited one misses),
- the encoders' identity: their configs and a hash of every frozen weight (computed once per cache object),
- the decoding settings: the processor's fps, sample rate, longest media and image repeat, the image
  processor's and feature extractors' settings, and the file suffix (images are repeated over frames),
- the question, when the frame encoder reads it (InstructBLIP's instruction-aware Q-Former).

Writes go to a temporary file in the same folder and are renamed into place (atomic on POSIX), so concurrent
runs or DDP processes sharing a cache never see half-written entries; two writers of one key write the same bytes.

Layout: ``<dir>/<key[:2]>/<key>.safetensors``.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from transformers import BatchFeature

from .audio import audio_steps

__all__ = ["FeatureCache"]

_COUNTS = ("frame_lengths", "audio_lengths")


def _hash_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _encoder_fingerprint(model: Any) -> str:
    """SHA-256 of the frozen encoders' configs and weights (names, dtypes, shapes, bytes)."""
    config = model.config
    digest = hashlib.sha256()
    described = {
        "vision": config.vision_config.to_dict(),
        "vision_qformer": None
        if config.vision_qformer_config is None
        else config.vision_qformer_config.to_dict(),
        "vision_num_query_tokens": config.vision_num_query_tokens,
        "vision_use_instruction": config.vision_use_instruction,
        "audio": [c.to_dict() for c in config.audio_configs],
        "tokens_per_frame": config.tokens_per_frame,
    }
    digest.update(json.dumps(described, sort_keys=True, default=str).encode())
    for name, module in model.frozen_modules():
        for key, tensor in sorted(module.state_dict().items()):
            digest.update(f"{name}.{key}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
            digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


#: The layout fields that change what is decoded (windows, queries and the synchroniser act after the encoders).
_DECODING_FIELDS = ("fps", "sample_rate", "max_media_seconds", "repeat_image")


def _decoding_settings(processor: Any) -> str:
    layout = processor.layout.to_dict()
    settings = {
        "layout": {name: layout[name] for name in _DECODING_FIELDS},
        "image_processor": processor.image_processor.to_dict(),
        "feature_extractors": [fe.to_dict() for fe in processor.feature_extractors],
    }
    return json.dumps(settings, sort_keys=True, default=str)


class FeatureCache:
    """Frozen-encoder features per media file on disk (see the module docstring).

    Args:
        directory: where the entries live (created if needed); may be shared between runs and processes.
        model: the `FavorModel` whose frozen encoders make the features.
        processor: its `FavorProcessor` (decoding settings, text).

    Attributes:
        hits, misses: lookups answered from disk / computed since construction.
    """

    def __init__(self, directory: str | os.PathLike, model: Any, processor: Any) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        if not os.access(self.directory, os.W_OK | os.X_OK):  # fail before training, not at the first miss
            raise ValueError(
                f"feature_cache: {self.directory} is not writable; give a writable folder or 'off'"
            )
        self.model = model
        self.processor = processor
        self.hits = 0
        self.misses = 0
        self._identity = _encoder_fingerprint(model) + _decoding_settings(processor)
        self._file_hashes: dict[tuple[str, int, int], str] = {}
        config = model.config
        self._reads_question = bool(
            config.vision_use_instruction and getattr(processor, "qformer_tokenizer", None) is not None
        )

    # ------------------------------------------------------------------------------------------------- keys
    def key(self, media: str | os.PathLike, question: str = "") -> str:
        """The cache key of ``media`` (a file path) asked ``question`` (used only by instruction-aware encoders)."""
        path = Path(media)
        if not path.is_file():
            raise ValueError(f"media: no such file {path} (the feature cache needs media files)")
        stat = path.stat()
        memo = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
        if memo not in self._file_hashes:  # hash each file once per run
            self._file_hashes[memo] = _hash_file(path)
        digest = hashlib.sha256()
        for part in (self._file_hashes[memo], self._identity, path.suffix.lower()):
            digest.update(part.encode())
            digest.update(b"\0")
        if self._reads_question:
            digest.update(question.encode())
        return digest.hexdigest()

    def _path(self, key: str) -> Path:
        return self.directory / key[:2] / f"{key}.safetensors"

    # ---------------------------------------------------------------------------------------------- entries
    def features(self, examples: list[dict[str, Any]]) -> list[dict[str, torch.Tensor]]:
        """Per example: ``visual_features (T, N, Dv)``, ``audio_features[_k] (S, Da)``, ``frame_lengths`` and
        ``audio_lengths`` (0-d); read from disk, or computed with the frozen encoders and stored."""
        keys = [self.key(ex["media"], ex.get("text", "")) for ex in examples]
        found: dict[int, dict[str, torch.Tensor]] = {}
        for i, key in enumerate(keys):
            entry = self._load(self._path(key))
            if entry is not None:
                found[i] = entry
                self.hits += 1
        missing = [i for i in range(len(examples)) if i not in found]
        if missing:
            computed = self._compute([examples[i] for i in missing])
            for i, entry in zip(missing, computed):
                self._store(keys[i], entry)
                found[i] = entry
                self.misses += 1
        return [found[i] for i in range(len(examples))]

    @staticmethod
    def _load(path: Path) -> dict[str, torch.Tensor] | None:
        """The entry at ``path``, or ``None`` when there is none or it is unreadable (truncated by a full disk or a
        copy, written by another tool): such an entry is a miss, recomputed and replaced."""
        if not path.is_file():
            return None
        try:
            entry = load_file(str(path))
        except (SafetensorError, OSError):
            return None
        return entry if all(name in entry for name in (*_COUNTS, "visual_features")) else None

    def _compute(self, examples: list[dict[str, Any]]) -> list[dict[str, torch.Tensor]]:
        batch = self.processor(text=[ex["text"] for ex in examples], media=[ex["media"] for ex in examples])
        names = set(self.processor.model_input_names) - {"input_ids", "attention_mask"}
        device = next(self.model.parameters()).device
        media = {k: v.to(device) for k, v in batch.items() if k in names}
        encoded = self.model.encode_frozen_media(**media)
        rates = self.model.config.audio_feature_rates
        sample_rate = self.model.config.audio_sample_rate
        entries = []
        for b in range(len(examples)):
            frames = int(encoded["frame_lengths"][b])
            samples = int(encoded["audio_lengths"][b])
            entry = {
                "frame_lengths": torch.tensor(frames),
                "audio_lengths": torch.tensor(samples),
                "visual_features": encoded["visual_features"][b, :frames].detach().cpu().contiguous(),
            }
            for k, rate in enumerate(rates):
                name = "audio_features" if k == 0 else f"audio_features_{k}"
                if name in encoded:
                    steps = min(int(audio_steps(samples, rate, sample_rate)), encoded[name].shape[1])
                    entry[name] = encoded[name][b, :steps].detach().cpu().contiguous()
            entries.append(entry)
        return entries

    def _store(self, key: str, entry: dict[str, torch.Tensor]) -> None:
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(prefix=f".{key[:8]}-", suffix=".tmp", dir=target.parent)
        os.close(handle)
        try:
            save_file(entry, temporary, metadata={"format": "favor-feature-cache-1"})
            os.replace(temporary, target)  # atomic: readers see the old state or the whole new file
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

    # ---------------------------------------------------------------------------------------------- batches
    def collate(self, examples: list[dict[str, Any]]) -> BatchFeature:
        """Training examples ``{"text", "media", "answer"}`` -> a batch for `FavorModel.forward` with frozen
        features instead of pixels and mel windows (same loss as `FavorProcessor.collate`'s batch)."""
        if any(ex.get("media") is None for ex in examples):
            raise ValueError("examples: the feature cache needs a media file in every example")
        entries = self.features(examples)
        layout = self.processor.layout
        counts = [layout.av_tokens(int(e["frame_lengths"]), int(e["audio_lengths"])) for e in entries]
        answers = [ex.get("answer") for ex in examples]
        data: dict[str, torch.Tensor] = self.processor.text_inputs(  # the processor's own text path
            [ex["text"] for ex in examples], counts, None if any(a is None for a in answers) else answers
        )
        for name in _COUNTS:
            data[name] = torch.stack([e[name] for e in entries]).long()
        for name in sorted({k for e in entries for k in e if k not in _COUNTS}):
            data[name] = _pad([e.get(name) for e in entries])
        return BatchFeature(data)


def _pad(items: list[torch.Tensor | None]) -> torch.Tensor:
    """Stack ``(L_b, ...)`` tensors into ``(B, max L, ...)`` with zeros after each."""
    like = next(t for t in items if t is not None)
    length = max(0 if t is None else t.shape[0] for t in items)
    out = like.new_zeros(len(items), length, *like.shape[1:])
    for b, t in enumerate(items):
        if t is not None:
            out[b, : t.shape[0]] = t
    return out
