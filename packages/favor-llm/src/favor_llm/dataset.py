"""Question/answer data for training and evaluating FAVOR on your own media: JSON Lines, one example per line.

Format (``train.jsonl``; keys other than these four are errors, so that a typo is never silently ignored)::

    {"media": "clips/0001.mp4", "question": "What sound does the dog make?", "answer": "it barks", "task": "sounds"}

- ``media`` (required): one video, audio or image file, as `FavorProcessor` accepts (anything
  `favor_avsync.load_media` decodes; images by their suffix). A relative path is relative to the JSONL file's
  folder, so a dataset folder can be moved as a whole; absolute paths are kept.
- ``question``, ``answer`` (required): non-empty strings. The question is wrapped in the model's prompt template;
  the answer is the training target (and the reference for exact-match evaluation).
- ``task`` (optional): a name to group accuracy by (``favor evaluate``); examples without one count as
  ``"default"``.

Blank lines are skipped. `FavorDataset` checks the whole file when it is built and raises one ``ValueError`` that
lists every bad line as ``file:line: what is wrong`` (invalid JSON, not an object, a missing, empty or mistyped
field, an unknown key, a media file that does not exist), so nothing starts training on a half-valid file.

Items are the dicts `FavorProcessor.collate` takes (``text``, ``media``, ``answer``, plus ``task``, which collate
ignores), so::

    dataset = FavorDataset("train.jsonl")
    loader = DataLoader(dataset, batch_size=8, shuffle=True, collate_fn=processor.collate)
    # or Trainer(..., train_dataset=dataset, data_collator=processor.collate,
    #            args=TrainingArguments(..., remove_unused_columns=False))
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

__all__ = ["DEFAULT_TASK", "Example", "FavorDataset", "read_examples"]

#: The task name of examples without a ``task``.
DEFAULT_TASK = "default"
_REQUIRED = ("media", "question", "answer")
_OPTIONAL = ("task",)


@dataclass(frozen=True)
class Example:
    """One checked line.

    Attributes:
        media: the media file (absolute, or as given when the JSONL path was relative: joined to its folder).
        question: the question text.
        answer: the reference answer.
        task: the task name (`DEFAULT_TASK` when the line had none).
        line: 1-based line number in the file.
    """

    media: Path
    question: str
    answer: str
    task: str
    line: int

    def item(self) -> dict[str, Any]:
        """The dict `FavorProcessor.collate` takes: ``text``, ``media`` (path string), ``answer``; and ``task``."""
        return {"text": self.question, "media": str(self.media), "answer": self.answer, "task": self.task}


def _problems(row: Any, folder: Path) -> tuple[list[str], Path | None]:
    """What is wrong with one parsed line, and its media path when that field is usable."""
    if not isinstance(row, dict):
        return [f"expected a JSON object, got {type(row).__name__}"], None
    problems = []
    unknown = sorted(set(row) - set(_REQUIRED) - set(_OPTIONAL))
    if unknown:
        problems.append(f"unknown key(s) {unknown}; expected {', '.join(_REQUIRED)} and optionally task")
    for key in (*_REQUIRED, *_OPTIONAL):
        if key not in row:
            if key in _REQUIRED:
                problems.append(f"missing {key!r}")
            continue
        value = row[key]
        if key == "media" and isinstance(value, list):
            problems.append("'media' is a list; one media file per example is supported")
        elif not isinstance(value, str):
            problems.append(f"{key!r} must be a string, got {type(value).__name__}")
        elif not value.strip():
            problems.append(f"{key!r} is empty")
    media = row.get("media")
    if not isinstance(media, str) or not media.strip():
        return problems, None
    path = Path(media) if os.path.isabs(media) else folder / media
    if not path.exists():
        problems.append(f"media file not found: {path}")
    elif not path.is_file():
        problems.append(f"media is not a file: {path}")
    return problems, path


def read_examples(path: str | os.PathLike) -> list[Example]:
    """Read and check a JSON Lines file (see the module docstring).

    Raises:
        ValueError: the file does not exist or is not a file, it holds no example, or any line is bad; the message
            lists every bad line as ``file:line: problem; problem``.
    """
    source = Path(path)
    if not source.is_file():
        what = "is a directory" if source.is_dir() else "does not exist"
        raise ValueError(f"data: {source} {what}; expected a JSON Lines file of examples")
    examples: list[Example] = []
    errors: list[str] = []
    with source.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:  # a byte-order mark (Windows editors) is not part of the first line's JSON
                text = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as err:
                errors.append(
                    f"{source}:{number}: not UTF-8 text (byte {err.start + 1}); save the file as UTF-8"
                )
                continue
            if not text.strip():
                continue
            try:
                row = json.loads(text)
            except json.JSONDecodeError as err:
                errors.append(f"{source}:{number}: invalid JSON ({err.msg} at column {err.colno})")
                continue
            problems, media = _problems(row, source.parent)
            if problems:
                errors.append(f"{source}:{number}: " + "; ".join(problems))
                continue
            assert media is not None  # no problems: the media field was a usable string
            examples.append(
                Example(media, row["question"], row["answer"], row.get("task", DEFAULT_TASK), number)
            )
    if errors:
        raise ValueError(f"data: {len(errors)} bad line(s) in {source}:\n" + "\n".join(errors))
    if not examples:
        raise ValueError(f"data: {source} holds no examples")
    return examples


class FavorDataset(Dataset):
    """A JSON Lines file of examples as a `torch.utils.data.Dataset` whose items feed `FavorProcessor.collate`.

    Args:
        path: the JSON Lines file (checked as a whole on construction; see `read_examples`).

    Items: ``{"text": question, "media": absolute or file-relative path, "answer": answer, "task": name}``.
    Media are decoded by the processor when a batch is collated.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.examples = read_examples(self.path)

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.examples[index].item()

    @property
    def tasks(self) -> list[str]:
        """The task names present, sorted."""
        return sorted({e.task for e in self.examples})
