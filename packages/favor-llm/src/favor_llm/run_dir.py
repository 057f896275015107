"""The output folder of a ``favor train`` run: where it resumes from, and whose run it holds.

A run's checkpoints (``checkpoint-N/``) are deltas over its ``frozen/`` parts, so the folder belongs to one model:
`claim_output_dir` refuses another (other recipe, overrides, tokenizer or recipe seed) and records the settings in
``train_config.json``. `resume_point` picks the newest checkpoint whose save finished.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from typing import Any

from .train_config import TrainConfig

__all__ = ["FINAL_DIR", "FROZEN_DIR", "TRAINER_STATE", "checkpoint_step", "claim_output_dir", "resume_point"]

TRAINER_STATE = "trainer_state.json"  # written last into a checkpoint by the Trainer
FROZEN_DIR = "frozen"  # a recipe's frozen parts, written once; checkpoints reference them
FINAL_DIR = "final"  # the trained model and processor


def resume_point(config: TrainConfig) -> str | None:
    """The checkpoint to resume from (``resume``: ``auto``, ``never`` or a path), or ``None`` to start afresh.

    Raises:
        ValueError: a resume path that is missing or incomplete, or ``max_steps`` below the checkpoint's step.
    """
    if config.resume == "never":
        return None
    if config.resume != "auto":
        if not Path(config.resume).is_dir():
            raise ValueError(f"resume: no such checkpoint directory {config.resume}")
        if not (Path(config.resume) / TRAINER_STATE).is_file():
            raise ValueError(
                f"resume: {config.resume} is incomplete (no {TRAINER_STATE}; its save was cut short)"
            )
        point = config.resume
    else:
        point = _last_complete_checkpoint(Path(config.output_dir))
    if point and config.max_steps > 0:
        # past max_steps the Trainer would train nothing and overwrite final/ with an older model (at max_steps
        # exactly the run is finished: run_training reports that)
        step = checkpoint_step(point)
        if step > config.max_steps:
            raise ValueError(
                f"max_steps: {config.max_steps} but the run resumes from {point} at step {step}; raise max_steps, "
                "or give another output_dir or resume: never"
            )
    return point


def checkpoint_step(point: str | os.PathLike) -> int:
    """The optimiser step a complete checkpoint was saved at (the Trainer's ``global_step``)."""
    return int(json.loads((Path(point) / TRAINER_STATE).read_text()).get("global_step", 0))


def _last_complete_checkpoint(out: Path) -> str | None:
    """The newest ``checkpoint-N`` in ``out`` whose save finished: the Trainer writes ``trainer_state.json`` last, so
    a folder without it was cut short (Ctrl-C, a killed job) and is passed over, with a note on stderr."""
    from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

    if not out.is_dir():
        return None
    found = []
    for path in out.iterdir():
        match = re.fullmatch(rf"{PREFIX_CHECKPOINT_DIR}-(\d+)", path.name)
        if match and path.is_dir():
            found.append((int(match[1]), path))
    for _, path in sorted(found, reverse=True):
        if (path / TRAINER_STATE).is_file():
            return str(path)
        print(
            f"favor train: skipping {path}: incomplete (no {TRAINER_STATE}; its save was cut short)",
            file=sys.stderr,
        )
    return None


def _model_identity(settings: dict[str, Any]) -> dict[str, Any]:
    """The settings that decide a run's model: its frozen parts (``output_dir/frozen``) and what checkpoints mean."""
    keys = ["model", "model_overrides", "tokenizer"]
    if settings.get("model") in _recipe_names():
        keys.append("seed")  # a recipe's frozen parts are random, from the seed
        if settings.get("tokenizer") == "words":
            keys.append("train_file")  # the vocabulary is the training file's words
    return {key: settings.get(key) for key in keys}


def _recipe_names() -> list[str]:
    from .recipes import RECIPES

    return sorted(RECIPES)


def claim_output_dir(config: TrainConfig) -> None:
    """Refuse an ``output_dir`` that holds another run's checkpoints or final model (they reference its ``frozen/``
    parts, which this run would overwrite), then record this run's settings there (main process only)."""
    if Path(config.output_dir).exists() and not Path(config.output_dir).is_dir():
        raise ValueError(f"output_dir: {config.output_dir} is a file; expected a folder for the run")
    out = Path(config.output_dir)
    record = out / "train_config.json"
    holds_models = (out / FINAL_DIR).is_dir() or any(out.glob("checkpoint-*"))  # they read out/frozen
    if record.is_file() and holds_models:
        before = _model_identity(json.loads(record.read_text()))
        now = _model_identity(config.to_dict())
        changed = sorted(k for k in now if before.get(k) != now[k])
        if changed:
            raise ValueError(
                f"output_dir: {config.output_dir} holds a run with other {', '.join(changed)} "
                f"({', '.join(f'{k}={before.get(k)!r}' for k in changed)}); give another output_dir"
            )
    if int(os.environ.get("RANK", "0")) == 0:
        record.parent.mkdir(parents=True, exist_ok=True)
        partial = record.with_suffix(".json.tmp")
        partial.write_text(json.dumps(config.to_dict(), indent=2) + "\n")
        os.replace(partial, record)  # other DDP processes read it whole or not at all
