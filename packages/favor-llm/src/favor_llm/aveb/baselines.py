"""Majority-class baselines of a question/answer file: the accuracy of always answering a task's commonest answer."""

from __future__ import annotations

import json
import os
from collections import Counter, defaultdict
from pathlib import Path

__all__ = ["majority_baselines"]


def majority_baselines(path: str | os.PathLike) -> dict[str, dict[str, float | int | str]]:
    """Per task of a JSON Lines file (``answer``, optional ``task``; untagged lines count as ``"default"``).

    Returns:
        ``{task: {"answer": commonest answer, "accuracy": its share, "n": examples}}``, tasks sorted by name.
    """
    counts: dict[str, Counter] = defaultdict(Counter)
    for line in Path(path).read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            counts[row.get("task") or "default"][row["answer"]] += 1
    out: dict[str, dict[str, float | int | str]] = {}
    for task in sorted(counts):
        answer, top = counts[task].most_common(1)[0]
        n = sum(counts[task].values())
        out[task] = {"answer": answer, "accuracy": top / n, "n": n}
    return out
