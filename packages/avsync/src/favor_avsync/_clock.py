"""Exact rational arithmetic for frame and step indices.

Rates such as 29.97 fps (30000/1001) or 50 Hz audio against 2 fps frames put audio-step centres on or next
to frame boundaries. Floating-point ``floor(t * fps)`` can land one frame off at such a boundary, so every
index computation here uses integers: a rate is turned into an exact fraction once (denominator at most
``MAX_DENOMINATOR``, which represents 30000/1001 exactly), and indices are integer floor divisions.
"""

from __future__ import annotations

import math
from fractions import Fraction

import torch

#: Largest denominator used to turn a float rate into an exact fraction (30000/1001 needs 1001).
MAX_DENOMINATOR = 10_000
#: Largest rate (per second) accepted for frames or audio steps: far above any frame rate or audio-feature rate,
#: and it keeps the exact index arithmetic below inside int64 for any tensor that fits in memory.
MAX_RATE = 1_000_000
#: Index arithmetic runs in int64 tensors: products must stay below this.
_INT64_LIMIT = 2**63


def as_fraction(value: float | int | Fraction, name: str, maximum: float = MAX_RATE) -> Fraction:
    """A positive finite rate as an exact fraction.

    Args:
        value: The rate (frames or steps per second).
        name: The argument name, for the error message.
        maximum: The largest rate accepted.

    Returns:
        The closest fraction with a denominator of at most ``MAX_DENOMINATOR``.

    Raises:
        ValueError: If ``value`` is not a positive finite number, or is above ``maximum``.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float, Fraction)):
        raise ValueError(f"{name} must be a positive number, got {value!r} ({type(value).__name__})")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    if value <= 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")
    if value > maximum:
        raise ValueError(f"{name} must be at most {maximum:g} per second, got {value!r}")
    frac = Fraction(value).limit_denominator(MAX_DENOMINATOR)
    if frac <= 0:
        raise ValueError(f"{name} is too small to represent, got {value!r}")
    return frac


def step_frames(
    num_steps: int, fps: Fraction, rate: Fraction, device: torch.device | None = None
) -> torch.Tensor:
    """The frame that each audio step belongs to, by the centre rule.

    Step ``j`` at ``rate`` covers ``[j / rate, (j + 1) / rate)``; its centre ``(j + 1/2) / rate`` lies in frame
    ``floor((j + 1/2) * fps / rate) = floor((2j + 1) * fps / (2 * rate))``. A centre exactly on a boundary
    belongs to the later frame, because frame ``t`` covers ``[t / fps, (t + 1) / fps)``.

    Args:
        num_steps: Number of steps ``S``.
        fps: Frame rate as a fraction.
        rate: Step rate as a fraction.
        device: Where to build the result.

    Returns:
        ``(S,)`` int64, non-decreasing.
    """
    num, den = _centre_ratio(num_steps, fps, rate)
    j = torch.arange(num_steps, dtype=torch.int64, device=device)
    return torch.div((2 * j + 1) * num, den, rounding_mode="floor")


def frames_needed(num_steps: int, fps: Fraction, rate: Fraction) -> int:
    """How many frames hold ``num_steps`` steps (the last step's frame + 1; 0 for no steps)."""
    if num_steps <= 0:
        return 0
    num, den = _centre_ratio(num_steps, fps, rate)
    return (2 * (num_steps - 1) + 1) * num // den + 1


def frames_for_seconds(seconds: float, fps: Fraction) -> int:
    """Frames whose interval starts before ``seconds``: ``ceil(seconds * fps)``, robust to float noise.

    A tolerance of 1 microsecond keeps ``10.000000001 s`` at 2 fps at 20 frames, not 21.
    """
    if seconds <= 0:
        return 0
    exact = Fraction(seconds).limit_denominator(1_000_000) * fps
    count = math.ceil(exact)
    # Float noise just above a boundary (e.g. 10.0000000004 s) is not a new frame.
    if count - 1 >= 0 and (exact - (count - 1)) / fps < Fraction(1, 1_000_000):
        count -= 1
    return max(count, 0)


def _centre_ratio(num_steps: int, fps: Fraction, rate: Fraction) -> tuple[int, int]:
    """``fps / (2 * rate)`` in lowest terms, checked so that ``(2 * num_steps - 1) * numerator`` fits in int64.

    (int64 tensor products wrap around silently: past the limit frames would be wrong, not an error.)
    """
    ratio = fps / (2 * rate)
    if (2 * max(num_steps, 1) - 1) * ratio.numerator >= _INT64_LIMIT:
        raise ValueError(
            f"{num_steps} audio steps at {float(rate):g} per second against fps={float(fps):g} are past the exact "
            "64-bit index arithmetic; use rates with smaller denominators (e.g. 50.0 rather than 50.0001) or "
            "shorter audio"
        )
    return ratio.numerator, ratio.denominator
