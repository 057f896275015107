"""``favor aveb generate OUT --seed S --train N --val V --test M``: write the AVEB-mini splits.

Registered in `favor_llm.cli` through `add_parser` / `run`; mistakes raise ``ValueError`` (one line, exit 2).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from ..argtypes import whole_number

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``aveb`` (with its ``generate`` subcommand) to ``subparsers``; returns the ``aveb`` parser."""
    from .generate import DEFAULT_SPLITS
    from .tasks import task_names

    aveb = subparsers.add_parser("aveb", help="AVEB-mini: the synthetic audio-visual benchmark")
    aveb.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    inner = aveb.add_subparsers(dest="aveb_command", metavar="{generate}", parser_class=type(aveb))
    inner.required = True
    gen = inner.add_parser("generate", help="write train / val / test clips and question files")
    gen.add_argument(
        "out", type=Path, help="output folder (<split>.jsonl, <split>.meta.jsonl, <split>/*.mp4)"
    )
    gen.add_argument("--seed", type=whole_number, default=0, help="benchmark seed (default 0)")
    for split, count in DEFAULT_SPLITS.items():
        gen.add_argument(
            f"--{split}",
            type=whole_number,
            default=count,
            help=f"{split} examples (default {count}; 0 skips)",
        )
    gen.add_argument(
        "--tasks",
        nargs="+",
        choices=task_names(),
        metavar="TASK",
        help=f"only these tasks (default: all of {', '.join(task_names())})",
    )
    gen.add_argument("--size", type=whole_number, default=64, help="frame size in pixels (default 64)")
    gen.add_argument("--overwrite", action="store_true", help="replace splits that already exist in OUT")
    gen.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    gen.set_defaults(func=run)
    return aveb


def run(args: argparse.Namespace) -> int:
    """Generate the splits and print one line per split (path, examples, majority-class baseline)."""
    from .baselines import majority_baselines
    from .generate import generate_splits

    start = time.perf_counter()
    written = generate_splits(
        args.out,
        seed=args.seed,
        train=args.train,
        val=args.val,
        test=args.test,
        tasks=args.tasks,
        size=args.size,
        overwrite=args.overwrite,
    )
    for split, path in written.items():
        base = majority_baselines(path)
        n = sum(int(b["n"]) for b in base.values())
        worst = max(float(b["accuracy"]) for b in base.values())
        print(f"{split:<6} {n:>6} examples  {path}  (highest majority-class baseline {100 * worst:.1f}%)")
    print(f"done in {time.perf_counter() - start:.1f} s")
    return 0
