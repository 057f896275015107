"""Argument checks of `TemporalSynchroniser`: every mistake becomes a ValueError naming the argument.

The synchroniser (synchroniser.py) keeps the time rule; this module only says what it accepts. Shape legend as in
synchroniser.py: ``B`` batch, ``Tv`` visual frames, ``N`` tokens per frame, ``Dv``/``Da`` widths, ``S`` steps.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from fractions import Fraction

import torch

from favor_avsync._clock import as_fraction

MODES = ("time", "released")
OVERFLOWS = ("error", "pool")
TIMELINES = ("longest", "visual")

#: Largest length an int64 tensor holds; a larger Python int would raise torch's "Overflow when unpacking long".
_INT64_MAX = 2**63 - 1


def check_config(
    fps: object,
    audio_rates: object,
    tokens_per_frame: object,
    mode: object,
    overflow: object,
    repeat_image: object,
    timeline: object,
) -> tuple[Fraction, tuple[Fraction, ...]]:
    """Check the synchroniser's constructor arguments; return ``fps`` and ``audio_rates`` as exact fractions."""
    fps_frac = as_fraction(fps, "fps")
    if isinstance(audio_rates, (int, float)) or not isinstance(audio_rates, Sequence):
        raise ValueError(f"audio_rates must be a sequence of rates, e.g. (50.0,), got {audio_rates!r}")
    if len(audio_rates) == 0:
        raise ValueError("audio_rates must name at least one audio stream, got an empty sequence")
    rates = tuple(as_fraction(r, f"audio_rates[{i}]") for i, r in enumerate(audio_rates))
    if isinstance(tokens_per_frame, bool) or not isinstance(tokens_per_frame, int) or tokens_per_frame < 1:
        raise ValueError(f"tokens_per_frame must be an int >= 1, got {tokens_per_frame!r}")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if overflow not in OVERFLOWS:
        raise ValueError(f"overflow must be one of {OVERFLOWS}, got {overflow!r}")
    if isinstance(repeat_image, bool) or not isinstance(repeat_image, int) or repeat_image < 1:
        raise ValueError(f"repeat_image must be an int >= 1, got {repeat_image!r}")
    if timeline not in TIMELINES:
        raise ValueError(f"timeline must be one of {TIMELINES}, got {timeline!r}")
    if mode == "released":
        if timeline != "longest":
            raise ValueError(f"timeline must be 'longest' with mode='released', got {timeline!r}")
        for i, rate in enumerate(rates):
            per_frame = rate / fps_frac
            if per_frame.denominator != 1 or per_frame > tokens_per_frame:
                raise ValueError(
                    f"mode='released' needs audio_rates[{i}] / fps to be a whole number of steps per frame "
                    f"<= tokens_per_frame={tokens_per_frame}; got audio_rates[{i}]={float(rate)!r}, "
                    f"fps={float(fps_frac)!r} ({float(per_frame):g} steps per frame)"
                )
    return fps_frac, rates


def check_inputs(
    visual: object, audio: object, tokens_per_frame: int, audio_rates: tuple[float, ...]
) -> list[torch.Tensor]:
    """Check ``visual (B, Tv, N, Dv)`` and ``audio`` (one ``(B, S, Da)`` per rate); return the audio streams."""
    if not isinstance(visual, torch.Tensor):
        raise ValueError(
            f"visual must be a torch.Tensor of shape (B, Tv, N, Dv), got {type(visual).__name__}; for audio "
            "only, pass a tensor with zero frames, shape (B, 0, N, Dv)"
        )
    if visual.ndim != 4:
        raise ValueError(f"visual must have shape (B, Tv, N, Dv) (4 dims), got {tuple(visual.shape)}")
    if visual.shape[2] != tokens_per_frame:
        raise ValueError(
            f"visual must have tokens_per_frame={tokens_per_frame} tokens per frame (dim 2), got "
            f"shape {tuple(visual.shape)}"
        )
    if not visual.is_floating_point():
        raise ValueError(f"visual must be a floating-point tensor, got dtype {visual.dtype}")
    if isinstance(audio, torch.Tensor):
        streams = [audio]
    elif isinstance(audio, Sequence) and all(isinstance(a, torch.Tensor) for a in audio):
        streams = list(audio)
    else:
        raise ValueError(
            f"audio must be a tensor (B, S, Da) or a list of them, got {type(audio).__name__}; for video only, "
            "pass a tensor with zero steps, shape (B, 0, Da)"
        )
    if len(streams) != len(audio_rates):
        raise ValueError(
            f"audio must have one tensor per entry of audio_rates={audio_rates} ({len(audio_rates)}), "
            f"got {len(streams)}"
        )
    for k, s in enumerate(streams):
        name = "audio" if len(audio_rates) == 1 else f"audio[{k}]"
        if s.ndim != 3:
            raise ValueError(f"{name} must have shape (B, S, Da) (3 dims), got {tuple(s.shape)}")
        if s.shape[0] != visual.shape[0]:
            raise ValueError(
                f"{name} has batch size {s.shape[0]} but visual has {visual.shape[0]} "
                f"(shapes {tuple(s.shape)} and {tuple(visual.shape)})"
            )
        if s.dtype != visual.dtype:
            raise ValueError(f"{name} has dtype {s.dtype} but visual has {visual.dtype}; cast one of them")
        if s.device != visual.device:
            raise ValueError(f"{name} is on {s.device} but visual is on {visual.device}")
    return streams


def check_image(image: object, tokens_per_frame: int) -> torch.Tensor:
    """Check one image's visual tokens, ``(B, N, Dv)`` or ``(B, 1, N, Dv)``; return them as ``(B, 1, N, Dv)``."""
    if not isinstance(image, torch.Tensor):
        raise ValueError(f"image must be a torch.Tensor, got {type(image).__name__}")
    if image.ndim == 3:
        image = image.unsqueeze(1)
    if image.ndim != 4 or image.shape[1] != 1:
        raise ValueError(f"image must have shape (B, N, Dv) or (B, 1, N, Dv), got {tuple(image.shape)}")
    if image.shape[2] != tokens_per_frame:
        raise ValueError(
            f"image must have tokens_per_frame={tokens_per_frame} tokens (dim 2), got shape {tuple(image.shape)}"
        )
    return image


def check_lengths(
    lengths: torch.Tensor | Sequence[int] | None, batch: int, size: int, name: str, device: torch.device
) -> torch.Tensor:
    """``lengths`` as a ``(B,)`` int64 tensor in ``[0, size]`` (None: all ``size``)."""
    if lengths is None:
        return torch.full((batch,), size, dtype=torch.int64, device=device)
    if isinstance(lengths, torch.Tensor):
        if lengths.is_floating_point() or lengths.is_complex() or lengths.dtype == torch.bool:
            raise ValueError(f"{name} must hold integers, got dtype {lengths.dtype}")
        t = lengths.to(device=device, dtype=torch.int64)
    else:
        try:
            values = list(lengths)
        except TypeError as err:
            raise ValueError(f"{name} must be a (B,) sequence of ints, got {lengths!r}") from err
        # as_tensor(..., dtype=int64) would truncate 1.5 to 1 silently: only integers are lengths.
        if not all(_is_integer(v) for v in values):
            raise ValueError(f"{name} must hold integers, got {values!r}")
        # A Python int past int64 is out of range, not torch's "Overflow when unpacking long".
        if any(not isinstance(v, torch.Tensor) and not -_INT64_MAX <= int(v) <= _INT64_MAX for v in values):
            raise ValueError(f"{name} must be in [0, {size}] (the tensor's length), got {values!r}")
        t = torch.as_tensor(values, dtype=torch.int64, device=device)
    if t.shape != (batch,):
        raise ValueError(f"{name} must have shape ({batch},) (one length per sample), got {tuple(t.shape)}")
    if batch and (int(t.min()) < 0 or int(t.max()) > size):
        raise ValueError(f"{name} must be in [0, {size}] (the tensor's length), got {t.tolist()}")
    return t


def check_audio_lengths(
    lengths: torch.Tensor | Sequence[int] | Sequence[torch.Tensor | Sequence[int]] | None,
    streams: list[torch.Tensor],
    device: torch.device,
) -> list[torch.Tensor]:
    """Per-stream ``(B,)`` lengths from ``(B,)`` (one stream), a list of ``K`` ``(B,)`` or a ``(B, K)`` tensor."""
    batch = streams[0].shape[0]
    if lengths is None:
        per_stream: list = [None] * len(streams)
    elif len(streams) == 1 and not _is_nested(lengths):
        per_stream = [lengths]
    elif isinstance(lengths, torch.Tensor):
        if lengths.ndim != 2 or lengths.shape[1] != len(streams):
            raise ValueError(
                f"audio_lengths must be a list of {len(streams)} (B,) lengths or a (B, {len(streams)}) tensor, "
                f"got shape {tuple(lengths.shape)}"
            )
        per_stream = list(lengths.unbind(1))
    else:
        per_stream = list(lengths)
        if len(per_stream) != len(streams):
            raise ValueError(
                f"audio_lengths must hold one (B,) length per audio stream ({len(streams)}), "
                f"got {len(per_stream)} entries"
            )
    out = []
    for k, (s, lk) in enumerate(zip(streams, per_stream)):
        name = "audio_lengths" if len(streams) == 1 else f"audio_lengths[{k}]"
        out.append(check_lengths(lk, batch, s.shape[1], name, device))
    return out


def check_modality_mask(mask: object, batch: int, num_streams: int, device: torch.device) -> torch.Tensor:
    """``(B, 1 + K)`` modality mask (default all ones)."""
    width = 1 + num_streams
    if mask is None:
        return torch.ones(batch, width, dtype=torch.int64, device=device)
    if not isinstance(mask, torch.Tensor):
        try:
            mask = torch.as_tensor(mask)
        except (TypeError, ValueError, RuntimeError) as err:
            raise ValueError(f"modality_mask must be a ({batch}, {width}) tensor, got {mask!r}") from err
    if mask.shape != (batch, width):
        raise ValueError(
            f"modality_mask must have shape (B, 1 + n_audio_streams) = ({batch}, {width}) "
            f"(columns: visual, then each audio stream), got {tuple(mask.shape)}"
        )
    return mask.to(device)


def _is_integer(value: object) -> bool:
    """An int (Python, NumPy, or a 0-dim integer tensor), not a bool or a float."""
    if isinstance(value, torch.Tensor):
        return value.ndim == 0 and not (
            value.is_floating_point() or value.is_complex() or value.dtype == torch.bool
        )
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_nested(lengths: object) -> bool:
    """True for per-stream lengths: a 2-D tensor or a sequence of sequences/tensors."""
    if isinstance(lengths, torch.Tensor):
        return lengths.ndim == 2
    return isinstance(lengths, Sequence) and any(isinstance(x, (Sequence, torch.Tensor)) for x in lengths)


__all__ = [
    "MODES",
    "OVERFLOWS",
    "TIMELINES",
    "check_audio_lengths",
    "check_config",
    "check_image",
    "check_inputs",
    "check_lengths",
    "check_modality_mask",
]
