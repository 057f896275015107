"""``favor train --config FILE.yaml [--SETTING VALUE ...]``: train FAVOR with `favor_llm.trainer.run_training`.

Every `favor_llm.trainer.TrainConfig` field is a setting in the YAML file and a flag (``max_steps`` ->
``--max-steps``) that overrides it; without ``--config`` the flags alone must give ``--output-dir`` and
``--train-file``. The same command runs under ``torchrun --nproc_per_node N -m favor_llm.cli train ...`` (DDP).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
import typing
from pathlib import Path
from typing import Any

__all__ = ["add_parser", "run"]


def _flag_type(field: dataclasses.Field) -> Any:
    hints = typing.get_type_hints(_config_class())
    hint = str(hints[field.name])
    if "dict" in hint:
        return _json_object
    if "bool" in hint:
        return _boolean
    if "int" in hint and "float" not in hint:
        return int
    if "float" in hint:
        return float
    return str


def _json_object(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(
            f"expected a JSON object such as '{{\"key\": 1}}', got {text!r} ({err.msg})"
        ) from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object such as '{{\"key\": 1}}', got {text!r}")
    return value


def _boolean(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _config_class() -> Any:
    from .train_config import TrainConfig

    return TrainConfig


def add_parser(subparsers: Any, **kwargs: Any) -> argparse.ArgumentParser:
    """Register ``favor train`` (``kwargs`` go to ``add_parser``, e.g. ``parents``)."""
    parser = subparsers.add_parser(
        "train",
        help="train FAVOR on JSON Lines of questions about media (a YAML config and/or flags)",
        description=__doc__.split("\n\n")[0],
        **kwargs,
    )
    parser.add_argument("--config", type=Path, help="YAML file of settings (flags override it)")
    for field in dataclasses.fields(_config_class()):
        flag = "--" + field.name.replace("_", "-")
        parser.add_argument(
            flag, dest=field.name, type=_flag_type(field), default=None, help=argparse.SUPPRESS
        )
    parser.epilog = "settings (YAML keys or flags): " + ", ".join(
        f.name.replace("_", "-") for f in dataclasses.fields(_config_class())
    )
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Train; print where the model went, the last loss and the test accuracy per task."""
    from .train_config import TrainConfig
    from .trainer import run_training

    names = [f.name for f in dataclasses.fields(TrainConfig)]
    overrides = {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}
    if args.config is not None:
        config = TrainConfig.from_yaml(args.config, overrides)
    else:
        config = TrainConfig.from_dict(overrides, source="flags")
    start = time.perf_counter()
    try:
        result = run_training(config)
    except BaseException:
        _end_distributed(wait=False)  # a failed rank must not wait at a barrier the others never reach
        raise
    _end_distributed(wait=True)
    if result.already_complete:
        print(
            f"run already complete at step {result.steps} (checkpoint {result.resumed_from}); nothing trained; "
            f"model: {result.final_dir}"
        )
    else:
        print(
            f"trained {result.trained_steps} steps in {time.perf_counter() - start:.1f} s "
            f"(last loss {result.training_loss:.4f}); model: {result.final_dir}"
        )
        if result.resumed_from:
            print(f"resumed from {result.resumed_from} (now at step {result.steps})")
    for key, value in sorted(result.test_metrics.items()):
        if key.startswith("test_accuracy"):
            print(f"  {key.removeprefix('test_'):<32} {value:.3f}")
    return 0


def _end_distributed(wait: bool) -> None:
    """Under ``torchrun`` the Trainer starts a process group: wait for every rank, then destroy it before the process
    exits (left to interpreter shutdown, gloo's threads can abort a rank with "terminate called without an active
    exception" after a successful run). Only the command does this: `run_training` may run inside a caller's own
    process group."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        if wait:
            dist.barrier()
        dist.destroy_process_group()
