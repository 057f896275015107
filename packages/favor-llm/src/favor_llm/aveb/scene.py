"""`Scene`: the ground truth of one AVEB-mini clip (what is on screen when, which beeps sound when).

Time is in seconds on the clip clock (0 = the clip start, as in `favor_avsync.load_media`). Every event sits on
the 0.5 s grid of FAVOR's 2 fps frame clock (``SLOT = 0.5``): frame ``t`` covers ``[t / 2, (t + 1) / 2)``.

- Picture: one shape (``square``, ``circle`` or ``triangle``) on a dark grey background; its colour changes only
  at slot boundaries, so every 2 fps frame shows exactly one colour.
- Sound: beeps of ``BEEP_SECONDS`` (shorter than a frame). A beep "at ``t``" (a slot boundary) sounds from
  ``t + BEEP_DELAY`` to ``t + BEEP_DELAY + BEEP_SECONDS``, wholly inside frame ``2 t``: a few milliseconds of AAC
  pre-echo or resampling spread cannot reach the previous frame. All beeps of a clip have one pitch.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

__all__ = [
    "BEEP_DELAY",
    "BEEP_SECONDS",
    "COLOURS",
    "PITCHES",
    "SHAPES",
    "SLOT",
    "Scene",
]

#: Seconds between possible event times: one frame of FAVOR's 2 fps clock.
SLOT = 0.5
#: A beep at slot boundary ``t`` starts at ``t + BEEP_DELAY``.
BEEP_DELAY = 0.05
#: Length of a beep (seconds): well under a frame.
BEEP_SECONDS = 0.1
#: Colour names and their RGB values: saturated, far apart after yuv420p + h264 (as favor_avsync.testing's).
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (255, 0, 0),
    "green": (0, 255, 0),
    "blue": (0, 0, 255),
    "yellow": (255, 255, 0),
}
#: Shapes drawn in the middle of the frame.
SHAPES: tuple[str, ...] = ("square", "circle", "triangle")
#: Beep pitches (Hz): a low and a high tone, both well inside Whisper's 0-8 kHz mel range.
PITCHES: dict[str, float] = {"low": 500.0, "high": 2000.0}
#: Background of every frame (RGB): dark grey, distinct from every colour.
BACKGROUND = (48, 48, 48)


@dataclass(frozen=True)
class Scene:
    """What one clip shows and sounds.

    Attributes:
        duration: seconds (a whole number of slots).
        shape: one of `SHAPES`.
        colours: the shape's colour in each segment (names from `COLOURS`); segment ``k`` runs from
            ``changes[k - 1]`` (0 for ``k = 0``) to ``changes[k]`` (``duration`` for the last).
        changes: colour-change times (seconds, ascending, on the slot grid, strictly inside the clip).
        beeps: beep times (seconds, ascending, on the slot grid, inside the clip; see the module docstring).
        pitch: ``"low"`` or ``"high"`` (`PITCHES`).
    """

    duration: float
    shape: str
    colours: tuple[str, ...]
    changes: tuple[float, ...]
    beeps: tuple[float, ...]
    pitch: str

    def __post_init__(self) -> None:
        slots = self.duration / SLOT
        if self.duration <= 0 or abs(slots - round(slots)) > 1e-9:
            raise ValueError(f"duration: expected a positive multiple of {SLOT} s, got {self.duration}")
        if self.shape not in SHAPES:
            raise ValueError(f"shape: expected one of {SHAPES}, got {self.shape!r}")
        if self.pitch not in PITCHES:
            raise ValueError(f"pitch: expected one of {tuple(PITCHES)}, got {self.pitch!r}")
        unknown = [c for c in self.colours if c not in COLOURS]
        if unknown:
            raise ValueError(f"colours: unknown names {unknown}; expected names from {tuple(COLOURS)}")
        if len(self.colours) != len(self.changes) + 1:
            raise ValueError(
                f"colours: expected one per segment ({len(self.changes) + 1}), got {len(self.colours)}"
            )
        if any(a == b for a, b in zip(self.colours, self.colours[1:])):
            raise ValueError(f"colours: consecutive segments must differ, got {self.colours}")
        for name, times, low in (("changes", self.changes, SLOT), ("beeps", self.beeps, 0.0)):
            if list(times) != sorted(set(times)):
                raise ValueError(f"{name}: expected distinct ascending times, got {times}")
            for t in times:
                if abs(t / SLOT - round(t / SLOT)) > 1e-9 or not low <= t <= self.duration - SLOT:
                    raise ValueError(f"{name}: {t} is not a slot boundary in [{low}, {self.duration - SLOT}]")

    @property
    def num_frames(self) -> int:
        """Frames at FAVOR's 2 fps (one per slot)."""
        return round(self.duration / SLOT)

    def colour_at(self, time: float) -> str:
        """Name of the shape's colour at ``time`` seconds (a change at ``t`` shows the new colour from ``t``)."""
        index = sum(1 for c in self.changes if c <= time + 1e-9)
        return self.colours[index]

    def to_dict(self) -> dict:
        """JSON-ready fields (lists for tuples)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict) -> Scene:
        """Inverse of `to_dict`."""
        return cls(
            duration=float(data["duration"]),
            shape=data["shape"],
            colours=tuple(data["colours"]),
            changes=tuple(float(t) for t in data["changes"]),
            beeps=tuple(float(t) for t in data["beeps"]),
            pitch=data["pitch"],
        )

    # ------------------------------------------------------------------------------------------- rendering
    def picture(self, colour: str, size: int) -> np.ndarray:
        """``(size, size, 3)`` uint8 RGB frame: the shape in ``colour`` on the background."""
        img = np.empty((size, size, 3), dtype=np.uint8)
        img[:] = BACKGROUND
        y, x = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5
        centre, half = size / 2, 0.36 * size
        if self.shape == "square":
            inside = (np.abs(x - centre) <= half) & (np.abs(y - centre) <= half)
        elif self.shape == "circle":
            inside = (x - centre) ** 2 + (y - centre) ** 2 <= half**2
        else:  # triangle, apex up: the half-width grows linearly from the apex to the base
            top, bottom = centre - half, centre + half
            inside = (y >= top) & (y <= bottom) & (np.abs(x - centre) <= (y - top) * half / (2 * half))
        img[inside] = COLOURS[colour]
        return img

    def waveform(self, sample_rate: int) -> np.ndarray:
        """``(duration * sample_rate,)`` float32 mono: silence with 0.5-amplitude sine beeps (5 ms ramps, so that the
        onsets do not click across the spectrum)."""
        n = round(self.duration * sample_rate)
        out = np.zeros(n, dtype=np.float64)
        length = round(BEEP_SECONDS * sample_rate)
        t = np.arange(length) / sample_rate
        ramp = np.minimum(1.0, np.minimum(t, BEEP_SECONDS - t) / 0.005)
        burst = 0.5 * ramp * np.sin(2 * math.pi * PITCHES[self.pitch] * t)
        for beep in self.beeps:
            start = round((beep + BEEP_DELAY) * sample_rate)
            out[start : start + length] += burst[: max(0, min(length, n - start))]
        return out.astype(np.float32)
