"""Exact-match evaluation of a FAVOR model on a JSON Lines file (`favor_llm.dataset` format): ``favor evaluate``.

Each question is answered by batched greedy generation; a prediction is correct when it equals the reference after
`normalize` (lowercase, punctuation removed, whitespace collapsed), as AVEB-mini's one-word answers are scored.
``overall`` is the accuracy over all examples (micro average); ``tasks`` has one entry per ``task`` name.

Results (the return value of `evaluate`, and the JSON ``favor evaluate --out`` writes)::

    {"overall": 0.75, "n": 8,
     "tasks": {"colour_at": {"accuracy": 1.0, "n": 4}, "pitch": {"accuracy": 0.5, "n": 4}},
     "predictions": [{"line": 1, "media": "...", "question": "...", "task": "colour_at", "answer": "red",
                      "prediction": "red", "correct": true}, ...]}

The per-example predictions are the ``predictions`` list of the same JSON, in file order (``line`` is the line
number in the data file when the examples came from one).

Command line::

    favor evaluate --model DIR --data test.jsonl [--out results.json] [--batch-size 8] [--max-new-tokens 16]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import unicodedata
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .argtypes import positive_int
from .devices import DTYPES, device_and_dtype

# torch and `favor_llm.dataset` (torch's Dataset) are imported where used: `favor --help` imports this module for
# its parser, with the standard library only

__all__ = ["add_parser", "evaluate", "format_table", "normalize", "run", "score"]


def normalize(text: str) -> str:
    """Lowercase, drop punctuation (Unicode category P*), collapse whitespace: what exact match compares."""
    kept = "".join(" " if unicodedata.category(ch).startswith("P") else ch for ch in text.lower())
    return " ".join(kept.split())


def _items(dataset: Any) -> list[dict[str, Any]]:
    """``dataset`` as a list of ``{"text", "media", "answer", "task", "line"}`` dicts."""
    from .dataset import FavorDataset

    if isinstance(dataset, (str, os.PathLike)):
        dataset = FavorDataset(dataset)
    if isinstance(dataset, FavorDataset):
        return [e.item() | {"line": e.line} for e in dataset.examples]
    items = [dataset[i] for i in range(len(dataset))]
    for i, item in enumerate(items):
        if not isinstance(item, dict) or not {"text", "answer"} <= set(item):
            raise ValueError(
                f"dataset[{i}]: expected a dict with 'text', 'answer' (and 'media', 'task'), got {item!r}"
            )
    return items


def evaluate(
    model: Any,
    processor: Any,
    dataset: Any,
    batch_size: int = 8,
    max_new_tokens: int = 16,
    progress: bool | None = None,
) -> dict[str, Any]:
    """Answer every question of ``dataset`` greedily and score exact matches per task.

    Args:
        model: a `FavorModel` (evaluated in eval mode under ``torch.no_grad``; its mode is restored after).
        processor: its `FavorProcessor`.
        dataset: a `FavorDataset`, a path to a JSON Lines file, or a sequence of `FavorDataset`-style items.
        batch_size: questions generated together (left-padded).
        max_new_tokens: longest answer, in tokens.
        progress: tqdm bar over batches; None shows one only on a terminal.

    Returns:
        ``{"overall", "n", "tasks": {task: {"accuracy", "n"}}, "predictions": [...]}`` (see the module docstring).
    """
    import torch
    from tqdm.auto import tqdm

    for name, value in (("batch_size", batch_size), ("max_new_tokens", max_new_tokens)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}: expected an integer >= 1, got {value!r}")
    items = _items(dataset)
    if not items:
        raise ValueError("dataset: no examples to evaluate")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    predictions: list[str] = []
    starts = range(0, len(items), batch_size)
    try:
        with torch.no_grad():
            for start in tqdm(
                starts, desc="evaluating", unit="batch", disable=None if progress is None else not progress
            ):
                batch = items[start : start + batch_size]
                try:
                    inputs = processor(text=[b["text"] for b in batch], media=[b.get("media") for b in batch])
                except ValueError as err:
                    media = [str(b.get("media")) for b in batch]
                    raise ValueError(
                        f"dataset: examples {start}..{start + len(batch) - 1} ({media}): {err}"
                    ) from err
                inputs = inputs.to(device)
                generated = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
                predictions += processor.decode_answers(generated, inputs)
    finally:
        model.train(was_training)
    return score(items, predictions)


def score(items: Sequence[dict[str, Any]], predictions: Sequence[str]) -> dict[str, Any]:
    """Exact-match results of ``predictions`` against the items' answers (see the module docstring)."""
    if len(items) != len(predictions):
        raise ValueError(f"predictions: expected one per item ({len(items)}), got {len(predictions)}")
    from .dataset import DEFAULT_TASK

    rows, per_task = [], {}
    for i, (item, prediction) in enumerate(zip(items, predictions)):
        task = item.get("task") or DEFAULT_TASK
        correct = normalize(prediction) == normalize(item["answer"])
        per_task.setdefault(task, []).append(correct)
        media = item.get("media")
        rows.append(
            {
                "line": item.get("line", i + 1),
                "media": None if media is None else str(media),
                "question": item["text"],
                "task": task,
                "answer": item["answer"],
                "prediction": prediction,
                "correct": correct,
            }
        )
    total = sum(r["correct"] for r in rows)
    return {
        "overall": total / len(rows),
        "n": len(rows),
        "tasks": {t: {"accuracy": sum(v) / len(v), "n": len(v)} for t, v in sorted(per_task.items())},
        "predictions": rows,
    }


def format_table(results: dict[str, Any]) -> str:
    """A plain-text table: one row per task, then the overall accuracy."""
    width = max([len("overall"), *(len(t) for t in results["tasks"])])
    lines = [f"{'task':<{width}}  {'n':>6}  {'accuracy':>8}"]
    for task, row in results["tasks"].items():
        lines.append(f"{task:<{width}}  {row['n']:>6}  {100 * row['accuracy']:>7.1f}%")
    lines.append(f"{'overall':<{width}}  {results['n']:>6}  {100 * results['overall']:>7.1f}%")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------- command
def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``evaluate`` to ``subparsers`` (the ``favor`` command's)."""
    parser = subparsers.add_parser("evaluate", help="exact-match accuracy per task on a JSON Lines file")
    parser.add_argument(
        "--model", required=True, type=Path, help="FAVOR checkpoint directory (model + processor)"
    )
    parser.add_argument(
        "--data", required=True, type=Path, help="JSON Lines file: media, question, answer, task"
    )
    parser.add_argument(
        "--out", type=Path, help="write the results (and per-example predictions) as JSON here"
    )
    parser.add_argument(
        "--batch-size", type=positive_int, default=8, help="questions per generation batch (8)"
    )
    parser.add_argument(
        "--max-new-tokens", type=positive_int, default=16, help="longest answer in tokens (16)"
    )
    parser.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:1")
    parser.add_argument(
        "--dtype", default="auto", choices=DTYPES, help="auto: float32 on CPU, bfloat16 (or float16) on GPU"
    )
    parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Load the model and data, evaluate, print the table (stdout), write ``--out``."""
    import torch

    from .dataset import FavorDataset
    from .modeling import FavorModel
    from .processing import FavorProcessor

    if not (args.model / "config.json").is_file():
        raise ValueError(f"model: {args.model} is not a FAVOR checkpoint directory (no config.json)")
    if args.out is not None and args.out.is_dir():
        raise ValueError(f"out: {args.out} is a directory; expected a JSON file path")
    device, dtype = device_and_dtype(args.device, args.dtype)
    dataset = FavorDataset(args.data)  # checks every line before the model loads
    processor = FavorProcessor.from_pretrained(args.model)
    # from_pretrained keeps the causal Q-Former in float32 (FavorModel._keep_in_fp32_modules) when casting
    model = FavorModel.from_pretrained(args.model, dtype=None if dtype == torch.float32 else dtype).to(device)
    results = evaluate(
        model, processor, dataset, batch_size=args.batch_size, max_new_tokens=args.max_new_tokens
    )
    print(format_table(results))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.out.with_name(args.out.name + ".tmp")
        tmp.write_text(json.dumps(results, indent=2) + "\n")
        tmp.replace(args.out)
        print(f"results and {results['n']} predictions written to {args.out}", file=sys.stderr)
    return 0
