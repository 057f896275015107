"""The AVEB-mini tasks: for each, a question, a fixed set of answer words, and a sampler of scenes for a given answer.

Every sampler gets the answer first (the generator deals answers round-robin, so classes are balanced) and builds
a `Scene` for which that answer is true. A cross-modal task must not be answerable from one stream alone, so its
sampler makes what the picture shows and what the sound holds each independent of the answer
(see `favor_llm.aveb` for the argument per task and the ceilings of one-stream guessing).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from itertools import combinations
from typing import Any

import numpy as np

from .scene import COLOURS, PITCHES, SHAPES, SLOT, Scene

__all__ = ["DURATION", "TASKS", "Task", "task_names"]

#: Seconds per clip: 8 frames at 2 fps (two 4-frame windows of the tiny FAVOR, one 5 s Whisper window).
DURATION = 4.0
#: Words for beep counts.
_COUNTS = ("one", "two", "three", "four")

Sample = tuple[Scene, str, dict[str, Any]]  # the scene, the question, extra facts for the sidecar metadata


@dataclass(frozen=True)
class Task:
    """One AVEB-mini task.

    Attributes:
        name: the ``task`` field of its examples.
        modality: ``"visual"``, ``"audio"`` or ``"audio-visual"`` (what answering needs).
        answers: the answer words (exact match); the generator balances them.
        questions: every question text the task asks (its vocabulary; `sample` returns one of them).
        sample: ``(rng, answer, num_slots) -> (scene, question, facts)``.
    """

    name: str
    modality: str
    answers: tuple[str, ...]
    questions: tuple[str, ...]
    sample: Callable[[np.random.Generator, str, int], Sample]


# ------------------------------------------------------------------------------------------------- helpers
def _pick(rng: np.random.Generator, options: Any) -> Any:
    options = list(options)
    return options[int(rng.integers(len(options)))]


def _colours(rng: np.random.Generator, count: int, fixed: dict[int, str] | None = None) -> tuple[str, ...]:
    """``count`` segment colours, consecutive ones different, segment ``k`` coloured ``fixed[k]`` where given."""
    fixed = fixed or {}
    out: list[str] = []
    for k in range(count):
        if k in fixed:
            out.append(fixed[k])
            continue
        banned = {out[-1]} if out else set()
        if k + 1 in fixed:
            banned.add(fixed[k + 1])
        out.append(_pick(rng, [c for c in COLOURS if c not in banned]))
    return tuple(out)


def _slots(rng: np.random.Generator, count: int, low: int, high: int) -> tuple[float, ...]:
    """``count`` distinct slot boundaries drawn uniformly from ``low .. high`` (slot indices), as seconds."""
    chosen = rng.choice(np.arange(low, high + 1), size=count, replace=False)
    return tuple(float(s) * SLOT for s in sorted(chosen.tolist()))


def _changes(rng: np.random.Generator, num_slots: int) -> tuple[float, ...]:
    """1-3 colour changes at random slot boundaries inside the clip."""
    return _slots(rng, int(rng.integers(1, 4)), 1, num_slots - 1)


def _distractor_beeps(rng: np.random.Generator, num_slots: int) -> tuple[float, ...]:
    """0-3 beeps at random slots: sound that a visual question must ignore."""
    return _slots(rng, int(rng.integers(0, 4)), 0, num_slots - 1)


def _segment_of(changes: tuple[float, ...], time: float) -> int:
    return sum(1 for c in changes if c <= time + 1e-9)


# --------------------------------------------------------------------------------------------- visual only
def _colour_at(rng: np.random.Generator, answer: str, num_slots: int) -> Sample:
    second = int(rng.integers(0, round(num_slots * SLOT)))
    changes = _changes(rng, num_slots)
    count = len(changes) + 1
    colours = _colours(rng, count, {_segment_of(changes, float(second)): answer})
    scene = Scene(
        num_slots * SLOT,
        _pick(rng, SHAPES),
        colours,
        changes,
        _distractor_beeps(rng, num_slots),
        _pick(rng, PITCHES),
    )
    return scene, f"What colour is the shape at second {second}?", {"second": second}


def _colour_end(rng: np.random.Generator, answer: str, num_slots: int) -> Sample:
    changes = _changes(rng, num_slots)
    colours = _colours(rng, len(changes) + 1, {len(changes): answer})
    scene = Scene(
        num_slots * SLOT,
        _pick(rng, SHAPES),
        colours,
        changes,
        _distractor_beeps(rng, num_slots),
        _pick(rng, PITCHES),
    )
    return scene, "What colour is the shape at the end?", {}


def _shape(rng: np.random.Generator, answer: str, num_slots: int) -> Sample:
    changes = _changes(rng, num_slots)
    scene = Scene(
        num_slots * SLOT,
        answer,
        _colours(rng, len(changes) + 1),
        changes,
        _distractor_beeps(rng, num_slots),
        _pick(rng, PITCHES),
    )
    return scene, "Which shape is shown?", {}


# ---------------------------------------------------------------------------------------------- audio only
def _beep_count(rng: np.random.Generator, answer: str, num_slots: int) -> Sample:
    beeps = _slots(rng, _COUNTS.index(answer) + 1, 0, num_slots - 1)
    changes = _changes(rng, num_slots)  # independent of the beeps: the picture does not give the count away
    scene = Scene(
        num_slots * SLOT,
        _pick(rng, SHAPES),
        _colours(rng, len(changes) + 1),
        changes,
        beeps,
        _pick(rng, PITCHES),
    )
    return scene, "How many beeps do you hear?", {}


def _pitch(rng: np.random.Generator, answer: str, num_slots: int) -> Sample:
    beeps = _slots(rng, int(rng.integers(1, 4)), 0, num_slots - 1)
    changes = _changes(rng, num_slots)
    scene = Scene(
        num_slots * SLOT, _pick(rng, SHAPES), _colours(rng, len(changes) + 1), changes, beeps, answer
    )
    return scene, "Is the beep high or low?", {}


# ------------------------------------------------------------------------------------------- cross-modal
def _colour_at_beep(rng: np.random.Generator, answer: str, num_slots: int) -> Sample:
    """Four equal segments showing the four colours once each (a random order) and one beep in a uniformly random
    slot. The picture alone leaves four equally likely answers (the beep time is independent of it), the sound
    alone too (the order of colours is independent of it)."""
    per_segment = num_slots // len(COLOURS)
    beep_slot = int(rng.integers(0, per_segment * len(COLOURS)))
    target = beep_slot // per_segment
    others = [c for c in COLOURS if c != answer]
    order = [str(c) for c in rng.permutation(others)]
    colours = (*order[:target], answer, *order[target:])
    changes = tuple(float(k * per_segment) * SLOT for k in range(1, len(COLOURS)))
    scene = Scene(
        num_slots * SLOT, _pick(rng, SHAPES), colours, changes, (beep_slot * SLOT,), _pick(rng, PITCHES)
    )
    return scene, "What colour is the shape when the beep sounds?", {}


def _sound_order(rng: np.random.Generator, answer: str, num_slots: int) -> Sample:
    """One colour change and one beep in adjacent frames (0.5 s apart: the 2 fps clock's resolution). The pair sits
    at a uniformly random place ``x, x + 1`` and ``answer`` says which of the two is the beep, so away from the clip
    edges neither the change time nor the beep time tells the order; only at the edges does one stream give it
    away (the ceiling of one-stream guessing is 7/12 for 4 s clips)."""
    first = int(
        rng.integers(1, num_slots - 1)
    )  # both slots strictly inside the clip: a change at 0 is no change
    beep, change = (first, first + 1) if answer == "before" else (first + 1, first)
    scene = Scene(
        num_slots * SLOT,
        _pick(rng, SHAPES),
        _colours(rng, 2),
        (change * SLOT,),
        (beep * SLOT,),
        _pick(rng, PITCHES),
    )
    return scene, "Did the beep come before or after the colour changed?", {}


def _schedules(num_slots: int, count: int) -> list[tuple[int, ...]]:
    return list(combinations(range(1, num_slots), count))


def _av_match(rng: np.random.Generator, answer: str, num_slots: int) -> Sample:
    """Matched clips beep exactly at every colour change (the sound is caused by the change); mismatched ones carry
    another soundtrack with as many beeps: the same events shifted by 1 or 1.5 s, or those of another clip.

    Both come from one exchangeable pair of event schedules ``(A, B)`` (``B`` = ``A`` shifted, or an independent
    draw; then swapped with probability 1/2): a mismatched clip shows ``A`` and plays ``B``, a matched clip shows
    and plays one of the two picked at random. So the picture alone and the sound alone have the same distribution
    in matched and mismatched clips, and the beep count always equals the change count."""
    count = int(rng.integers(1, 4))
    kind = _pick(rng, ("shift", "other"))
    if kind == "shift":
        shift = _pick(rng, (2, 3))  # slots: 1 or 1.5 s
        options = [s for s in _schedules(num_slots, count) if s[-1] + shift <= num_slots - 1]
        first = options[int(rng.integers(len(options)))]
        pair = (first, tuple(s + shift for s in first))
    else:
        schedules = _schedules(num_slots, count)
        a = schedules[int(rng.integers(len(schedules)))]
        rest = [s for s in schedules if s != a]
        pair = (a, rest[int(rng.integers(len(rest)))])
    if rng.integers(2):
        pair = (pair[1], pair[0])
    if answer == "yes":
        pick = pair[int(rng.integers(2))]
        pair = (pick, pick)
    changes = tuple(s * SLOT for s in pair[0])
    beeps = tuple(s * SLOT for s in pair[1])
    scene = Scene(
        num_slots * SLOT, _pick(rng, SHAPES), _colours(rng, count + 1), changes, beeps, _pick(rng, PITCHES)
    )
    facts = {} if answer == "yes" else {"mismatch": kind}
    return scene, "Does the sound match the video?", facts


#: All tasks, in the order the generator deals them.
TASKS: tuple[Task, ...] = (
    Task(
        "colour_at",
        "visual",
        tuple(COLOURS),
        tuple(f"What colour is the shape at second {s}?" for s in range(round(DURATION))),
        _colour_at,
    ),
    Task("colour_end", "visual", tuple(COLOURS), ("What colour is the shape at the end?",), _colour_end),
    Task("shape", "visual", SHAPES, ("Which shape is shown?",), _shape),
    Task("beep_count", "audio", _COUNTS, ("How many beeps do you hear?",), _beep_count),
    Task("pitch", "audio", ("high", "low"), ("Is the beep high or low?",), _pitch),
    Task(
        "colour_at_beep",
        "audio-visual",
        tuple(COLOURS),
        ("What colour is the shape when the beep sounds?",),
        _colour_at_beep,
    ),
    Task(
        "sound_order",
        "audio-visual",
        ("before", "after"),
        ("Did the beep come before or after the colour changed?",),
        _sound_order,
    ),
    Task("av_match", "audio-visual", ("yes", "no"), ("Does the sound match the video?",), _av_match),
)


def task_names() -> tuple[str, ...]:
    """Names of `TASKS`, in order."""
    return tuple(t.name for t in TASKS)
