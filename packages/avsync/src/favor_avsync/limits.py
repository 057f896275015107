"""Limits on what `favor_avsync.load_media` decodes, and the checks of its arguments.

Without limits a small hostile or damaged file becomes a huge allocation: a 446 KB PNG declaring 16000 x 16000
pixels decodes to 768 MB, a 10 s clip sampled at ``fps=1e6`` asks for 10 million frames, timestamps that jump by
a day pad a day of silence. Every limit is checked before the memory is taken (declared sizes first, then the
timestamps as they are decoded), and a refusal is a `favor_avsync.MediaError` naming the file, the limit and how
to raise it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

from favor_avsync._clock import as_fraction
from favor_avsync.errors import MediaError

#: Lowest ``sample_rate`` accepted: below it the resampler's filters return (almost) nothing.
MIN_SAMPLE_RATE = 1000


@dataclass(frozen=True)
class MediaLimits:
    """What `favor_avsync.load_media` refuses to decode (pass ``limits=MediaLimits(...)`` to change one).

    Attributes:
        max_pixels: Largest picture (width x height) of an image or video stream, checked on the declared size
            before decoding and on every decoded frame. 40 megapixels (8K video is 33 MP).
        max_fps: Largest ``fps`` argument (frames sampled per second).
        max_sample_rate: Largest ``sample_rate`` argument (samples per second).
        max_duration: Longest clip in seconds (after ``start``/``end``/``max_seconds``), checked on the declared
            duration before decoding and on the timestamps while decoding. 6 hours (1.4 GB of 16 kHz audio).
        max_frame_bytes: Largest size of the decoded frames, ``T * 3 * H * W`` bytes (8 GiB: 1400 frames of
            1080p, 12 minutes at 2 fps); pass ``max_seconds`` or a lower ``fps`` for longer high-resolution video.
    """

    max_pixels: int = 40_000_000
    max_fps: float = 240.0
    max_sample_rate: int = 384_000
    max_duration: float = 6 * 3600.0
    max_frame_bytes: int = 8 * 2**30

    def __post_init__(self) -> None:
        for name in ("max_pixels", "max_sample_rate", "max_frame_bytes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"MediaLimits.{name} must be an int > 0, got {value!r}")
        for name in ("max_fps", "max_duration"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"MediaLimits.{name} must be a number > 0, got {value!r}")

    def check_timestamp(self, name: str, stream: str, offset: float) -> None:
        """Refuse a decoded ``stream`` (``"audio"`` / ``"video"``) timestamp ``offset`` seconds into the clip that
        is past ``max_duration`` (damaged timestamps would otherwise pad or hold frames up to it)."""
        if offset > self.max_duration:
            raise MediaError(
                f"{name}: its {stream} timestamps reach {offset:.6g} s into the clip, over limits.max_duration="
                f"{self.max_duration:g} s (damaged timestamps, or a very long file); pass max_seconds= or "
                "end= for a part, or limits=favor_avsync.MediaLimits(max_duration=...)"
            )


def check_arguments(
    fps: object,
    sample_rate: object,
    max_seconds: object,
    start: object,
    end: object,
    limits: object,
) -> tuple[Fraction, MediaLimits]:
    """Check `favor_avsync.load_media`'s arguments; return ``fps`` as an exact fraction and the limits."""
    if limits is None:
        limits = MediaLimits()
    if not isinstance(limits, MediaLimits):
        raise ValueError(f"limits must be a favor_avsync.MediaLimits or None, got {type(limits).__name__}")
    fps_frac = as_fraction(fps, "fps", maximum=math.inf)
    if fps_frac > Fraction(limits.max_fps):
        raise ValueError(
            f"fps must be at most limits.max_fps={limits.max_fps:g} frames per second, got {fps!r} "
            "(FAVOR samples 2 fps; raise it with limits=MediaLimits(max_fps=...))"
        )
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, int) or sample_rate <= 0:
        raise ValueError(f"sample_rate must be an int > 0, got {sample_rate!r}")
    if not MIN_SAMPLE_RATE <= sample_rate <= limits.max_sample_rate:
        raise ValueError(
            f"sample_rate must be in [{MIN_SAMPLE_RATE}, limits.max_sample_rate={limits.max_sample_rate}] samples "
            f"per second, got {sample_rate!r} (Whisper needs 16000; raise the limit with "
            "limits=MediaLimits(max_sample_rate=...))"
        )
    for arg, value in (("max_seconds", max_seconds), ("start", start), ("end", end)):
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
        ):
            raise ValueError(f"{arg} must be a finite number of seconds or None, got {value!r}")
    if max_seconds is not None and max_seconds <= 0:
        raise ValueError(f"max_seconds must be > 0, got {max_seconds!r}")
    if start is not None and start < 0:
        raise ValueError(f"start must be >= 0 seconds, got {start!r}")
    if end is not None and end <= (start or 0.0):
        raise ValueError(f"end must be after start, got start={start!r}, end={end!r}")
    return fps_frac, limits


__all__ = ["MIN_SAMPLE_RATE", "MediaLimits", "check_arguments"]
