"""`TrainConfig`: the settings of ``favor train`` (a YAML file, flags, or Python), checked when built."""

from __future__ import annotations

import dataclasses
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["TrainConfig"]

_MIXED = ("auto", "no", "bf16", "fp16")
_KINDS = {int: "an int", float: "a number", str: "a string", bool: "true or false", dict: "a mapping"}


@dataclass
class TrainConfig:
    """Everything ``favor train`` needs; a YAML file holds these keys (unknown keys are errors).

    Attributes:
        output_dir: checkpoints, ``metrics.csv``, ``final/`` (the trained model + processor).
        train_file: training JSON Lines.
        validation_file: JSON Lines evaluated every ``eval_steps`` (optional).
        test_file: JSON Lines evaluated once at the end, per task (optional).
        model: a recipe name (``aveb-tiny``) or a FAVOR checkpoint directory to fine-tune.
        model_overrides: `FavorConfig` fields changed in the recipe (e.g. ``{"diversity_loss_weight": 0.0}``).
        tokenizer: for a recipe: ``aveb`` (the benchmark's word-level tokenizer), ``words`` (a word-level
            tokenizer of the training file's words) or a tokenizer directory.
        seed: seeds the model's weights, the data order and dropout.
        max_steps: optimiser steps (> 0), or -1 to train ``num_train_epochs``.
        num_train_epochs: epochs when ``max_steps`` is -1.
        per_device_train_batch_size, per_device_eval_batch_size: examples per process and step.
        gradient_accumulation_steps: micro-batches per optimiser step.
        learning_rate, weight_decay: AdamW.
        warmup_ratio: linear warmup over this fraction of the steps, then ``lr_scheduler_type`` (cosine) decay.
        mixed_precision: ``auto`` (bf16 / fp16 on a GPU, fp32 on CPU), ``no``, ``bf16``, ``fp16``.
        gradient_checkpointing: recompute the Q-Former's and the LLM's activations in the backward pass.
        eval_steps, save_steps, logging_steps: every how many steps (0 = never; eval needs a validation file).
        save_total_limit: checkpoints kept.
        resume: ``auto`` (from the last checkpoint in ``output_dir`` when there is one), ``never``, or a path.
        feature_cache: directory of the frozen-encoder feature cache, or ``off``.
        threads: torch CPU threads (``None``: torch's default).
        dataloader_num_workers: processes that decode media for the loader (0: the main process).
        fsdp, fsdp_config: transformers' FSDP settings (e.g. ``"full_shard auto_wrap"`` and ``{"version": 2,
            ...}``; docs/training.md has the 13B configuration).
        deepspeed: a DeepSpeed JSON config file (ZeRO; docs/training.md).
    """

    output_dir: str
    train_file: str
    validation_file: str | None = None
    test_file: str | None = None
    model: str = "aveb-tiny"
    model_overrides: dict = field(default_factory=dict)
    tokenizer: str = "aveb"
    seed: int = 0
    max_steps: int = -1
    num_train_epochs: float = 1.0
    per_device_train_batch_size: int = 16
    per_device_eval_batch_size: int = 32
    gradient_accumulation_steps: int = 1
    learning_rate: float = 3e-3
    weight_decay: float = 0.0
    warmup_ratio: float = 0.05
    lr_scheduler_type: str = "cosine"
    mixed_precision: str = "auto"
    gradient_checkpointing: bool = False
    eval_steps: int = 100
    save_steps: int = 100
    save_total_limit: int = 2
    logging_steps: int = 10
    resume: str = "auto"
    feature_cache: str = "off"
    threads: int | None = None
    dataloader_num_workers: int = 0
    fsdp: str = ""
    fsdp_config: dict | None = None
    deepspeed: str | None = None

    def __post_init__(self) -> None:
        self._check_types()
        if self.mixed_precision not in _MIXED:
            raise ValueError(f"mixed_precision: expected one of {_MIXED}, got {self.mixed_precision!r}")
        positive = (
            "per_device_train_batch_size",
            "per_device_eval_batch_size",
            "gradient_accumulation_steps",
        )
        for name in positive:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: expected an int >= 1, got {value!r}")
        for name in ("eval_steps", "save_steps", "logging_steps", "dataloader_num_workers"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name}: expected an int >= 0, got {value!r}")
        if self.max_steps == 0 or self.max_steps < -1:
            raise ValueError(f"max_steps: expected > 0 or -1 (train num_train_epochs), got {self.max_steps}")
        if not self.num_train_epochs > 0:
            raise ValueError(f"num_train_epochs: expected a number > 0, got {self.num_train_epochs}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads: expected an int >= 1 or null (torch's default), got {self.threads}")
        if self.save_total_limit < 1:
            raise ValueError(f"save_total_limit: expected an int >= 1, got {self.save_total_limit}")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate: expected > 0, got {self.learning_rate}")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"warmup_ratio: expected a value in [0, 1), got {self.warmup_ratio}")

    def _check_types(self) -> None:
        """Each setting has its annotated type (a YAML file or Python can hand anything); a number written with an
        exponent becomes a float, since YAML 1.1 (PyYAML) reads ``3e-3`` as a string."""
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            choices = typing.get_args(hints[f.name]) or (hints[f.name],)
            if value is None and type(None) in choices:
                continue
            kind = next(c for c in choices if c is not type(None))
            if kind is str and isinstance(
                value, os.PathLike
            ):  # TrainConfig(output_dir=Path(...)) from Python
                value = os.fspath(value)
                setattr(self, f.name, value)
            if kind is float and isinstance(value, str):
                try:
                    value = float(value)
                except ValueError:
                    pass
                else:
                    setattr(self, f.name, value)
            number = isinstance(value, (int, float)) and not isinstance(value, bool)
            ok = (
                number
                if kind is float
                else isinstance(value, kind) and (kind is bool or not isinstance(value, bool))
            )
            if not ok:
                raise ValueError(
                    f"{f.name}: expected {_KINDS[kind]}{' or null' if type(None) in choices else ''}, "
                    f"got {value!r} ({type(value).__name__})"
                )

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> TrainConfig:
        """A config from a dict; unknown or missing keys are a `ValueError` naming ``source``."""
        if not isinstance(data, dict):
            raise ValueError(f"{source}: expected a mapping of settings, got {type(data).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"{source}: unknown setting(s) {unknown}; known: {sorted(names)}")
        missing = [n for n in ("output_dir", "train_file") if data.get(n) in (None, "")]
        if missing:
            raise ValueError(f"{source}: missing required setting(s) {missing}")
        return cls(**data)

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: dict[str, Any] | None = None) -> TrainConfig:
        """Read a YAML file of settings; ``overrides`` (e.g. from command-line flags) win. Relative paths in the
        YAML (files, output and cache folders, model, tokenizer and resume directories; not the names
        ``aveb-tiny``, ``aveb``, ``words``, ``auto``, ``never``, ``off``) are relative to the YAML file's folder."""
        import yaml

        path = Path(path)
        if not path.is_file():
            raise ValueError(f"config: no such file {path}")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise ValueError(f"config: {path} is not valid YAML ({' '.join(str(err).split())})") from None
        if not isinstance(data, dict):
            raise ValueError(f"config: {path} must hold a mapping of settings, got {type(data).__name__}")
        from .recipes import RECIPES

        names = {"feature_cache": {"off"}, "model": set(RECIPES), "tokenizer": {"aveb", "words"}}
        names["resume"] = {"auto", "never"}
        keys = ("output_dir", "train_file", "validation_file", "test_file", "deepspeed", *names)
        for key in keys:
            value = data.get(key)
            if isinstance(value, str) and value not in names.get(key, ()) and not Path(value).is_absolute():
                data[key] = str(path.parent / value)
        data.update({k: v for k, v in (overrides or {}).items() if v is not None})
        return cls.from_dict(data, source=str(path))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
