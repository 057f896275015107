"""AVEB-mini: a synthetic audio-visual benchmark that anyone can regenerate, in the spirit of FAVOR's AVEB.

FAVOR (Sun et al., 2023, arXiv 2310.05863) claims that frame-level audio-visual synchronisation plus the causal
Q-Former wins on questions that need hearing and seeing together *in time* (AVEB's AVSD / audio-visual matching).
AVEB-mini asks such questions about tiny generated clips whose ground truth is known exactly.

Clips (`Scene`, written by `write_clip`): 4 s MP4 files (h264 64x64 at 4 fps + AAC 16 kHz mono). A shape (square,
circle or triangle) on dark grey changes colour (red, green, blue, yellow) only on 0.5 s boundaries, the frame clock
of FAVOR's 2 fps sampling; beeps are 0.1 s tone bursts (500 Hz "low" or 2 kHz "high") starting 0.05 s after a
0.5 s boundary, so each lies inside one frame. The synchroniser can therefore resolve every event to its frame.

Tasks (`TASKS`; each example has one, in its ``task`` field; answers are single words, scored by exact match):

| task | needs | question | answers |
|---|---|---|---|
| ``colour_at`` | picture | What colour is the shape at second N? (N = 0..3) | red green blue yellow |
| ``colour_end`` | picture | What colour is the shape at the end? | red green blue yellow |
| ``shape`` | picture | Which shape is shown? | square circle triangle |
| ``beep_count`` | sound | How many beeps do you hear? | one two three four |
| ``pitch`` | sound | Is the beep high or low? | high low |
| ``colour_at_beep`` | both, in time | What colour is the shape when the beep sounds? | red green blue yellow |
| ``sound_order`` | both, in time | Did the beep come before or after the colour changed? | before after |
| ``av_match`` | both, in time | Does the sound match the video? | yes no |

"At second N" means the instant N s (the frame that starts there). Single-stream tasks carry distractors in the
other stream (beeps at random times for visual questions, colour changes at random times for audio questions).

Honesty of the cross-modal tasks (why one stream alone does not answer them):

- ``colour_at_beep``: four 1 s segments show the four colours once each, in a random order; one beep in a uniformly
  random frame. Picture alone: each colour is equally likely (25%); sound alone: the order is unknown (25%).
- ``sound_order``: one colour change and one beep in *adjacent* frames (0.5 s apart), the pair placed uniformly in
  the clip. Neither the change time nor the beep time tells the order except at the clip edges (a change in the
  first frame boundary can only be followed by the beep): the best one-stream guess scores 7/12 = 58.3% (chance 50%).
- ``av_match``: matched clips beep exactly at each colour change; mismatched clips play as many beeps as there are
  changes, either the same events shifted by 1 or 1.5 s or another clip's events. The picture and the sound are
  each drawn from one exchangeable pair of schedules, so each alone has the same distribution whether matched or
  not: one-stream guessing scores 50%.

Balance: tasks are dealt round-robin and, within a task, answers round-robin, so the majority-class baseline is
1 / (number of answers) per task (25%, 25%, 33.3%, 25%, 50%, 25%, 50%, 50%) up to rounding when the split size is
not a multiple; `majority_baselines` measures it on a generated file.

Usage::

    from favor_llm.aveb import generate, generate_splits
    generate_splits("aveb", seed=0, train=1920, val=192, test=384)   # aveb/{train,val,test}.jsonl + clips
    generate("aveb", split="test", num_examples=384, seed=1)          # one split

or ``favor aveb generate OUT --seed 0 --train 1920 --val 192 --test 384``. `tokenizer` builds the word-level
tokenizer of the benchmark's vocabulary.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy_exports import lazy_exports
from .baselines import majority_baselines
from .generate import DEFAULT_SPLITS, generate, generate_splits
from .render import write_clip
from .scene import COLOURS, PITCHES, SHAPES, Scene
from .tasks import DURATION, TASKS, Task, task_names

if TYPE_CHECKING:
    from .vocabulary import tokenizer

# on first use: the tokenizer needs transformers, which `favor aveb --help` must not import
__getattr__, __dir__ = lazy_exports(__name__, {".vocabulary": ("tokenizer",)})

__all__ = [
    "COLOURS",
    "DEFAULT_SPLITS",
    "DURATION",
    "PITCHES",
    "SHAPES",
    "TASKS",
    "Scene",
    "Task",
    "generate",
    "generate_splits",
    "majority_baselines",
    "task_names",
    "tokenizer",
    "write_clip",
]
