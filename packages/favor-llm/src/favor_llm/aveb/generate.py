"""Write AVEB-mini splits: media files plus question/answer JSON Lines in the `favor_llm.dataset` format.

Layout of ``out_dir`` after ``generate(out_dir, split="train", ...)``::

    train.jsonl            {"media": "train/000000.mp4", "question": ..., "answer": ..., "task": ...} per line
    train.meta.jsonl       the ground truth per example, same order: {"id", "task", "answer", "clip_seed", "scene",
                           ...task facts (e.g. "second", "mismatch")}
    train/000000.mp4 ...   the clips (MP4: h264 64x64 + AAC 16 kHz mono, 4 s)

Determinism: example ``i`` of split ``s`` is drawn from ``numpy.random.SeedSequence([seed, code(s), i])`` (``code``
is the split name's CRC-32), so every split has its own clip seeds, the same seed rewrites the same files, and
another seed gives other clips. Tasks are dealt round-robin over `TASKS` and, within a task, answers round-robin
over its answer words, so classes are balanced (exactly, when ``num_examples`` is a multiple of the
number of tasks times the number of answers).
"""

from __future__ import annotations

import json
import os
import re
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .render import write_clip
from .scene import SLOT
from .tasks import DURATION, TASKS, Task

__all__ = ["DEFAULT_SPLITS", "META_SUFFIX", "generate", "generate_splits", "select_tasks", "split_code"]

#: Examples per split written by `generate_splits` when not told otherwise: multiples of 96 = 8 tasks x 12 (the
#: least common multiple of the answer counts), so every task and answer is dealt equally often.
DEFAULT_SPLITS: dict[str, int] = {"train": 1920, "val": 192, "test": 384}
#: The ground-truth sidecar of ``<split>.jsonl``.
META_SUFFIX = ".meta.jsonl"
_SPLIT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
_MEDIA_NAME = re.compile(r"^\d{6}\.mp4$")


def split_code(split: str) -> int:
    """The integer that keeps a split's clip seeds apart from the other splits' (CRC-32 of its name)."""
    return zlib.crc32(split.encode())


def select_tasks(tasks: Sequence[str] | None) -> tuple[Task, ...]:
    """The `Task` objects named in ``tasks`` (None: all of `TASKS`), in `TASKS` order."""
    if tasks is None:
        return TASKS
    names = [t.name for t in TASKS]
    unknown = [t for t in tasks if t not in names]
    if unknown or not tasks:
        raise ValueError(f"tasks: expected a non-empty list of {', '.join(names)}; got {list(tasks)!r}")
    return tuple(t for t in TASKS if t.name in tasks)


def _check_int(name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{name}: expected an integer >= {low}, got {value!r}")
    return int(value)


def generate(
    out_dir: str | os.PathLike,
    split: str = "train",
    num_examples: int = 100,
    seed: int = 0,
    *,
    tasks: Sequence[str] | None = None,
    size: int = 64,
    overwrite: bool = False,
    progress: bool | None = None,
) -> Path:
    """Generate one AVEB-mini split: ``num_examples`` clips, one question each.

    Args:
        out_dir: folder to write into (created if needed).
        split: split name (letters, digits, ``_``, ``-``); part of the file names and of the clip seeds.
        num_examples: clips (= questions) to write.
        seed: the benchmark seed (>= 0); with ``split`` it fixes every clip.
        tasks: task names to include (default: all of `TASKS`).
        size: frame width and height in pixels.
        overwrite: replace an existing ``<split>.jsonl`` (and the clips of that split); without it an existing split
            is an error, so that nothing is lost by accident.
        progress: tqdm progress bar; None shows one only on a terminal.

    Returns:
        The path of ``<out_dir>/<split>.jsonl``.
    """
    from tqdm.auto import tqdm

    if not isinstance(split, str) or not _SPLIT_NAME.match(split):
        raise ValueError(f"split: expected a name of letters, digits, '_' or '-', got {split!r}")
    num_examples = _check_int("num_examples", num_examples, 1)
    seed = _check_int("seed", seed, 0)
    chosen = select_tasks(tasks)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"out_dir: {out} is a file; expected a directory")
    data_file, meta_file, media_dir = out / f"{split}.jsonl", out / f"{split}{META_SUFFIX}", out / split
    if data_file.exists() and not overwrite:
        raise ValueError(
            f"out_dir: {data_file} exists; choose another folder or split, or pass overwrite=True (--overwrite)"
        )
    media_dir.mkdir(parents=True, exist_ok=True)
    if overwrite:
        # the question files go first: interrupted below, no old questions may point at missing or new clips
        data_file.unlink(missing_ok=True)
        meta_file.unlink(missing_ok=True)
        # clips of an earlier, larger run would otherwise linger beside the new ones
        for old in media_dir.iterdir():
            if _MEDIA_NAME.match(old.name):
                old.unlink()

    num_slots = round(DURATION / SLOT)
    code = split_code(split)
    rows, metas = [], []
    for i in tqdm(range(num_examples), desc=f"AVEB-mini {split}", unit="clip", disable=_disabled(progress)):
        task = chosen[i % len(chosen)]
        answer = task.answers[(i // len(chosen)) % len(task.answers)]
        rng = np.random.default_rng(np.random.SeedSequence([seed, code, i]))
        scene, question, facts = task.sample(rng, answer, num_slots)
        media = f"{split}/{i:06d}.mp4"
        write_clip(scene, out / media, size=size)
        rows.append({"media": media, "question": question, "answer": answer, "task": task.name})
        metas.append(
            {
                "id": i,
                "task": task.name,
                "answer": answer,
                "clip_seed": [seed, code, i],
                "scene": scene.to_dict(),
            }
            | facts
        )
    _write_jsonl(meta_file, metas)
    _write_jsonl(data_file, rows)  # last: an existing <split>.jsonl means a complete split
    return data_file


def generate_splits(
    out_dir: str | os.PathLike,
    seed: int = 0,
    *,
    train: int = DEFAULT_SPLITS["train"],
    val: int = DEFAULT_SPLITS["val"],
    test: int = DEFAULT_SPLITS["test"],
    tasks: Sequence[str] | None = None,
    size: int = 64,
    overwrite: bool = False,
    progress: bool | None = None,
) -> dict[str, Path]:
    """Generate the ``train``, ``val`` and ``test`` splits from one seed (a count of 0 skips a split).

    Returns:
        ``{split: path of <split>.jsonl}`` for the splits written.
    """
    written = {}
    for split, count in (("train", train), ("val", val), ("test", test)):
        if _check_int(split, count, 0):
            written[split] = generate(
                out_dir, split, count, seed, tasks=tasks, size=size, overwrite=overwrite, progress=progress
            )
    if not written:
        raise ValueError("train, val, test: all are 0; nothing to generate")
    return written


def _disabled(progress: bool | None) -> bool | None:
    return None if progress is None else not progress  # tqdm: None disables on a non-terminal


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(json.dumps(r, sort_keys=False) + "\n" for r in rows))
    tmp.replace(path)
