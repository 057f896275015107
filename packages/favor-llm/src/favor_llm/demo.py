"""``favor demo``: a small FAVOR trained on AVEB-mini answers questions about clips it has never seen.

Steps: load the checkpoint that ships inside this package (``favor_llm/demo_model``: the ``aveb-tiny`` recipe trained
by ``favor train`` on AVEB-mini; ``demo_model/TRAINING.md`` records the exact commands, seed and config), write
fresh AVEB-mini test clips with PyAV from a seed never used in training, decode them (frames at 2 fps + 16 kHz
audio), answer every question by greedy generation, print a few questions with the model's answer and the truth,
then the exact-match accuracy per task.

``favor demo --train`` first retrains the same recipe from scratch (fresh training clips, `favor_llm.trainer`,
frozen-feature cache) and then does the same with the model it trained.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .argtypes import positive_int

__all__ = [
    "DEMO_MODEL_DIR",
    "DEMO_TRAINING",
    "DemoResult",
    "add_parser",
    "run",
    "run_demo",
    "ship_checkpoint",
]

#: The shipped checkpoint (a full FAVOR checkpoint, LoRA merged, frozen parts embedded: a few hundred kB).
DEMO_MODEL_DIR = Path(__file__).parent / "demo_model"
#: The benchmark seed of the shipped model's training clips (train and validation splits); test seeds differ.
TRAINING_SEED = 0
#: How ``--train`` trains (`favor_llm.trainer.TrainConfig` fields; data paths are filled in at run time): the shipped
#: model's settings (demo_model/train.yaml) with fewer steps, to fit the 5-minute budget on 2 CPU cores.
DEMO_TRAINING: dict[str, Any] = {
    "model": "aveb-tiny",
    "tokenizer": "aveb",
    "seed": 0,
    "max_steps": 2000,
    "per_device_train_batch_size": 16,
    "learning_rate": 1e-3,
    "warmup_ratio": 0.05,
    "eval_steps": 0,
    "save_steps": 0,
    "logging_steps": 50,
    "threads": 1,
}
#: Training clips for ``--train`` (and for the shipped model).
TRAIN_EXAMPLES = 1920


@dataclass
class DemoResult:
    """What `run_demo` measured.

    Attributes:
        results: `favor_llm.evaluate.evaluate`'s output (``overall``, ``tasks``, ``predictions``).
        seed: the benchmark seed of the test clips.
        trained: whether the model was trained in this run (``--train``).
        seconds: wall-clock time of the whole demo; ``train_seconds`` of the training part.
        model_dir: the checkpoint that answered.
    """

    results: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    trained: bool = False
    seconds: float = 0.0
    train_seconds: float = 0.0
    model_dir: Path | None = None


def run_demo(
    train: bool = False,
    examples: int = 96,
    seed: int | None = None,
    steps: int | None = None,
    train_examples: int = TRAIN_EXAMPLES,
    out: str | Path | None = None,
    echo: Callable[[str], None] = print,
    progress: bool | None = None,
    threads: int | None = 1,
    shown: int = 8,
) -> DemoResult:
    """Run the demo (see the module docstring), printing through ``echo``.

    Args:
        train: retrain from scratch first (``favor demo --train``).
        examples: test clips (one question each, the tasks dealt round-robin).
        seed: benchmark seed of the test clips (default: a random one >= 1; 0 made the training clips).
        steps: training steps with ``train`` (default: the shipped model's, `DEMO_TRAINING`).
        train_examples: training clips with ``train``.
        out: keep the clips (and the trained model) there instead of in a temporary folder.
        echo: where lines go.
        progress: tqdm bars (None: only on a terminal).
        threads: torch CPU threads while the demo runs (restored after); one is fastest for a model this small
            (docs/training.md: more threads than free cores make every small matrix product wait).
        shown: questions printed with the model's answer and the truth.

    Returns:
        The `DemoResult`.
    """
    for name, value in (("examples", examples), ("train_examples", train_examples)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}: expected an int >= 1, got {value!r}")
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 1):
        raise ValueError(f"steps: expected an int >= 1, got {steps!r}")
    if seed is None:
        seed = random.SystemRandom().randint(1, 2**31 - 1)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed: expected an int >= 0, got {seed!r}")
    if seed == TRAINING_SEED:
        echo(f"note: seed {seed} made the training clips; the test split's clips still differ from them")
    import torch  # here, not at the top: `favor --help` imports this module for its parser

    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        if out is not None:
            return _run(train, examples, seed, steps, train_examples, Path(out), echo, progress, shown)
        with tempfile.TemporaryDirectory(prefix="favor-demo-") as scratch:
            return _run(train, examples, seed, steps, train_examples, Path(scratch), echo, progress, shown)
    finally:
        torch.set_num_threads(previous)


def _run(
    train: bool,
    examples: int,
    seed: int,
    steps: int | None,
    train_examples: int,
    workdir: Path,
    echo: Callable[[str], None],
    progress: bool | None,
    shown: int,
) -> DemoResult:
    from .aveb import generate
    from .evaluate import evaluate, format_table
    from .modeling import FavorModel
    from .processing import FavorProcessor

    start = time.perf_counter()
    result = DemoResult(seed=seed, trained=train)
    echo(
        "FAVOR demo: a tiny FAVOR (frozen encoders + synchroniser + causal Q-Former + LoRA LLM) on AVEB-mini."
    )
    if train:
        model_dir = _train(workdir, steps, train_examples, echo, progress)
        result.train_seconds = time.perf_counter() - start
        echo(f"[1/3] trained from scratch in {result.train_seconds:.1f} s -> {model_dir}")
    else:
        model_dir = DEMO_MODEL_DIR
        echo(f"[1/3] loading the shipped checkpoint {model_dir} (how it was trained: TRAINING.md beside it)")
    model = FavorModel.from_pretrained(model_dir)
    processor = FavorProcessor.from_pretrained(model_dir)
    result.model_dir = Path(model_dir)

    data = generate(
        workdir / "test", split="test", num_examples=examples, seed=seed, overwrite=True, progress=progress
    )
    echo(f"[2/3] wrote {examples} fresh AVEB-mini test clips with PyAV (seed {seed}, never used in training)")
    results = evaluate(model, processor, data, batch_size=32, max_new_tokens=4, progress=progress)
    result.results = results
    echo(f"[3/3] decoded them and answered every question ({time.perf_counter() - start:.1f} s so far)")
    echo("")
    seen: set[str] = set()
    picked = []
    for row in results["predictions"]:  # one question per task first, then the rest in order
        if row["task"] not in seen:
            seen.add(row["task"])
            picked.append(row)
    for row in picked[:shown]:
        mark = "ok " if row["correct"] else "XX "
        echo(f"  {mark}Q: {row['question']:<56} model: {row['prediction']:<8} truth: {row['answer']}")
    echo("")
    echo(format_table(results))
    result.seconds = time.perf_counter() - start
    echo(f"demo finished in {result.seconds:.1f} s")
    return result


def _train(
    workdir: Path, steps: int | None, train_examples: int, echo: Callable[[str], None], progress: bool | None
) -> Path:
    from .aveb import generate
    from .trainer import TrainConfig, run_training

    data = generate(
        workdir / "train",
        split="train",
        num_examples=train_examples,
        seed=TRAINING_SEED,
        overwrite=True,
        progress=progress,
    )
    echo(f"      wrote {train_examples} training clips (seed {TRAINING_SEED}); training the aveb-tiny recipe")
    settings = dict(DEMO_TRAINING, output_dir=str(workdir / "run"), train_file=str(data), resume="never")
    settings["feature_cache"] = str(workdir / "feature_cache")
    if steps is not None:
        settings["max_steps"] = steps
    trained = run_training(TrainConfig(**settings))
    return trained.final_dir


def ship_checkpoint(final_dir: str | Path, target: str | Path = DEMO_MODEL_DIR, notes: str = "") -> Path:
    """Write the trained model in ``final_dir`` as the demo's checkpoint: a full checkpoint (LoRA merged, frozen
    parts embedded, so it loads from inside the installed package) plus its processor and ``TRAINING.md``
    (``notes``: how it was trained). Replaces what ``target`` held, in one atomic save (the old checkpoint stays
    whole if anything fails)."""
    from favor_qformer.saving import atomic_save_directory

    from .modeling import FavorModel
    from .processing import FavorProcessor

    target = Path(target)
    model = FavorModel.from_pretrained(final_dir)
    processor = FavorProcessor.from_pretrained(final_dir)
    with atomic_save_directory(target, owned=["*"]) as staging:  # "*": nothing of the old folder is kept
        model.save_pretrained(staging, merge_lora=True)
        processor.save_pretrained(staging)
        (staging / "TRAINING.md").write_text(notes)
    return target


# ---------------------------------------------------------------------------------------------------- command
def add_parser(subparsers: Any, **kwargs: Any) -> argparse.ArgumentParser:
    """Register ``favor demo`` (``kwargs`` go to ``add_parser``, e.g. ``parents``)."""
    parser = subparsers.add_parser(
        "demo",
        help="a small FAVOR trained on AVEB-mini answers fresh clips; --train retrains it first",
        **kwargs,
    )
    parser.add_argument("--train", action="store_true", help="retrain the model from scratch first")
    parser.add_argument("--examples", type=positive_int, default=96, help="test clips (default 96)")
    parser.add_argument("--seed", type=int, help="benchmark seed of the test clips (default: random)")
    parser.add_argument(
        "--steps", type=positive_int, help="training steps with --train (default: as shipped)"
    )
    parser.add_argument(
        "--train-examples", type=positive_int, default=TRAIN_EXAMPLES, help="training clips with --train"
    )
    parser.add_argument("--out", type=Path, help="keep the clips (and a trained model) in this folder")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    if args.out is not None and args.out.exists() and not args.out.is_dir():
        raise ValueError(f"out: {args.out} is a file; expected a directory")
    run_demo(
        train=args.train,
        examples=args.examples,
        seed=args.seed,
        steps=args.steps,
        train_examples=args.train_examples,
        out=args.out,
    )
    return 0
