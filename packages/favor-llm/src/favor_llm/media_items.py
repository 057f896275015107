"""Media items -> `PreparedMedia`: what `FavorProcessor` accepts, normalised (frames uint8 ``(F, 3, H, W)``, mono
float32 audio at the layout's sample rate), with clear errors for anything else.

Media items: a path or ``bytes`` (decoded with `favor_avsync.load_media`), a `favor_avsync.MediaClip`, a dict
``{"video": frames, "audio": waveform, "image": image, "sample_rate": sr}`` of arrays, a bare array (1-D: a
waveform; 3-D: an image ``(H, W, 3)`` or ``(3, H, W)``; 4-D: frames ``(T, H, W, 3)`` or ``(T, 3, H, W)``, taken
at ``fps``), or ``None`` (text only).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .layout import AVLayout

__all__ = [
    "IMAGE_SUFFIXES",
    "PreparedMedia",
    "is_media_clip",
    "media_features",
    "num_av_tokens",
    "prepare_media",
    "to_frames",
    "to_waveform",
    "visual_frames",
]

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


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


def prepare_media(item: Any, layout: AVLayout, index: int = 0) -> PreparedMedia | None:
    """Normalise one media item (see the module docstring) to `PreparedMedia` for ``layout``; checks the length
    limit ``layout.max_media_seconds``."""
    if item is None:
        return None
    prepared = _load(item, index, layout)
    limit = layout.max_media_seconds
    if limit is not None and prepared.duration > limit + 1e-6:
        raise ValueError(
            f"media[{index}]: {prepared.duration:.2f} s is longer than max_media_seconds={limit} "
            "(set FavorConfig.max_media_seconds / processor.layout.max_media_seconds, or cut it with "
            "favor_avsync.load_media(..., max_seconds=...))"
        )
    return prepared


def _load(item: Any, index: int, layout: AVLayout) -> PreparedMedia:
    name = f"media[{index}]"
    if isinstance(item, (str, Path, bytes, bytearray, memoryview)):
        from favor_avsync import load_media

        limit = layout.max_media_seconds
        # Decode at most a little past the limit: enough to tell that a file is too long (raised in `load`).
        max_seconds = None if limit is None else limit + 2.0 / layout.fps
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*cut.*")
            clip = load_media(item, fps=layout.fps, sample_rate=layout.sample_rate, max_seconds=max_seconds)
        if isinstance(item, (str, Path)):
            is_image = Path(item).suffix.lower() in IMAGE_SUFFIXES
        else:  # bytes: a single frame without audio is taken as a still image
            is_image = clip.frames is not None and clip.frames.shape[0] == 1 and clip.audio is None
        return _from_clip(clip, name, is_image, layout)
    if is_media_clip(item):
        return _from_clip(item, name, False, layout)
    if isinstance(item, dict):
        unknown = set(item) - {"video", "audio", "image", "sample_rate"}
        if unknown:
            raise ValueError(
                f"{name}: unknown keys {sorted(unknown)}; expected video, audio, image, sample_rate"
            )
        if "video" in item and "image" in item:
            raise ValueError(f"{name}: give 'video' or 'image', not both")
        audio = to_waveform(item.get("audio"), item.get("sample_rate", layout.sample_rate), layout, name)
        if item.get("image") is not None:
            frames = to_frames(item["image"], name, image=True)
            is_image = True
        else:
            frames = to_frames(item.get("video"), name, image=False)
            is_image = False
        if frames is None and audio is None:
            raise ValueError(f"{name}: holds neither video, image nor audio")
        return _prepared(frames, is_image, audio, layout)
    if isinstance(item, (np.ndarray, torch.Tensor)):
        array = torch.as_tensor(np.asarray(item)) if isinstance(item, np.ndarray) else item
        if array.ndim == 1:
            return _prepared(None, False, to_waveform(array, layout.sample_rate, layout, name), layout)
        if array.ndim == 3:
            return _prepared(to_frames(array, name, image=True), True, None, layout)
        if array.ndim == 4:
            return _prepared(to_frames(array, name, image=False), False, None, layout)
        raise ValueError(
            f"{name}: an array must be a waveform (S,), an image (H, W, 3) / (3, H, W) or frames (T, H, W, 3) / "
            f"(T, 3, H, W); got shape {tuple(array.shape)}"
        )
    raise ValueError(
        f"{name}: expected a path, bytes, a MediaClip, a dict of arrays, an array or None; got {type(item).__name__}"
    )


def _from_clip(clip: Any, name: str, is_image: bool, layout: AVLayout) -> PreparedMedia:
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
    if frames is not None and fps is not None and abs(float(fps) - layout.fps) > 1e-6:
        # frame t is taken to start at t / layout.fps: other rates would drift against the audio
        raise ValueError(
            f"{name}: MediaClip.fps {float(fps):g} differs from the processor's {layout.fps:g} fps; "
            f"decode with favor_avsync.load_media(..., fps={layout.fps:g}) or pass the path"
        )
    if audio is not None:
        audio = to_waveform(audio, clip.sample_rate, layout, name)
    if frames is None and audio is None:
        raise ValueError(f"{name}: the media has neither frames nor audio")
    is_image = is_image and frames is not None and frames.shape[0] == 1 and audio is None
    duration = float(getattr(clip, "duration", 0.0) or 0.0)
    prepared = _prepared(frames, is_image, audio, layout)
    prepared.duration = max(prepared.duration, duration)
    return prepared


def _prepared(
    frames: torch.Tensor | None, is_image: bool, audio: torch.Tensor | None, layout: AVLayout
) -> PreparedMedia:
    seconds = []
    if frames is not None and not is_image:
        seconds.append(frames.shape[0] / layout.fps)
    if audio is not None:
        seconds.append(audio.shape[0] / layout.sample_rate)
    return PreparedMedia(frames, is_image, audio, max(seconds, default=0.0))


def visual_frames(media: PreparedMedia, layout: AVLayout) -> int:
    """Frames the visual stream spans: the video's, an image's repeat count (its audio's frames with audio)."""
    if media.frames is None:
        return 0
    if not media.is_image:
        return int(media.frames.shape[0])
    if media.audio is not None:
        return max(1, layout.audio_frames(media.audio.shape[0]))
    return int(layout.repeat_image)


def num_av_tokens(media: PreparedMedia | None, layout: AVLayout) -> int:
    """Placeholder tokens one media item expands into (0 for none)."""
    if media is None:
        return 0
    audio_samples = 0 if media.audio is None else int(media.audio.shape[0])
    return layout.av_tokens(visual_frames(media, layout), audio_samples)


def is_media_clip(item: Any) -> bool:
    return all(hasattr(item, a) for a in ("frames", "audio", "sample_rate"))


def to_frames(array: Any, name: str, image: bool) -> torch.Tensor | None:
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


def to_waveform(array: Any, sample_rate: int, layout: AVLayout, name: str) -> torch.Tensor | None:
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


def media_features(
    prepared: list[PreparedMedia | None], image_processor: Any, feature_extractors: list, layout: AVLayout
) -> dict[str, torch.Tensor]:
    """Prepared media of a batch -> ``pixel_values (B, F, 3, h, w)`` (frames through ``image_processor``),
    ``pixel_lengths``, ``frame_lengths``, ``audio_lengths`` (samples) and ``input_features[_k] (B, K, M, L)`` (one
    per feature extractor); keys of absent modalities are left out."""
    from .audio import whisper_windows

    batch = len(prepared)
    out: dict[str, torch.Tensor] = {}
    visual = [p.frames if p is not None else None for p in prepared]
    if any(v is not None for v in visual):
        pixels = [
            image_processor(images=list(v), return_tensors="pt")["pixel_values"] if v is not None else None
            for v in visual
        ]
        shape = next(p for p in pixels if p is not None).shape[1:]
        max_frames = max(p.shape[0] for p in pixels if p is not None)
        pixel_values = torch.zeros(batch, max_frames, *shape)
        for b, p in enumerate(pixels):
            if p is not None:
                pixel_values[b, : p.shape[0]] = p
        out["pixel_values"] = pixel_values
        out["pixel_lengths"] = torch.tensor([0 if p is None else p.shape[0] for p in pixels])
        out["frame_lengths"] = torch.tensor([0 if p is None else visual_frames(p, layout) for p in prepared])
    audio = [p.audio if p is not None else None for p in prepared]
    if any(a is not None for a in audio):
        out["audio_lengths"] = torch.tensor([0 if a is None else a.shape[0] for a in audio])
        for k, fe in enumerate(feature_extractors):
            out["input_features" if k == 0 else f"input_features_{k}"] = whisper_windows(
                fe, audio, layout.audio_chunk_seconds
            )
    return out
