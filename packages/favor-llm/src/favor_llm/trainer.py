"""Training FAVOR on question/answer data with transformers' `Trainer` (the recipe behind ``favor train``).

    config = TrainConfig.from_yaml("train.yaml", overrides={"max_steps": 200})
    result = run_training(config)        # checkpoints in config.output_dir, metrics.csv beside them

What the recipe adds to a plain `Trainer`:

- the model: a named recipe (`favor_llm.recipes`, e.g. ``aveb-tiny``, frozen parts written once to
  ``output_dir/frozen`` so every checkpoint is a small delta that `FavorModel.from_pretrained` loads) or an existing
  FAVOR checkpoint to fine-tune;
- the data: JSON Lines ``{"media", "question", "answer", "task"}`` (media paths relative to the file), batched by
  `FavorCollator` (the processor, or the frozen-feature cache);
- the loss: ``CE(answer) + diversity_loss_weight x diversity_loss`` from `FavorModel`; the answer cross-entropy and
  the diversity loss are logged separately;
- evaluation: the validation loss and the teacher-forced exact-match accuracy per task. An answer counts as
  correct when the argmax at every answer position (its words and the end-of-sequence token) is the target, which
  is exactly when greedy generation reproduces the answer token for token, at the cost of one forward pass;
- checkpoints through `FavorModel.save_pretrained` (trainable weights + LoRA adapter + processor), resumed from
  the last one in ``output_dir`` by default;
- logs: tqdm, ``metrics.csv`` (`CSVLogger`: step, epoch, name, value) and TensorBoard when it is installed;
- mixed precision: bf16 on GPUs that have it, fp16 on other GPUs, float32 on CPU (``mixed_precision: auto``).

Under ``torchrun --nproc_per_node N`` (or ``accelerate launch``) the same command trains with DDP; the batch size
is per process, so the global batch is ``N x per_device_train_batch_size x gradient_accumulation_steps``.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import Trainer, TrainerCallback, TrainingArguments

from .modeling import FavorModel
from .processing import FavorProcessor
from .run_dir import FINAL_DIR, FROZEN_DIR, checkpoint_step, claim_output_dir, resume_point
from .train_config import TrainConfig

__all__ = [
    "CSVLogger",
    "FavorCollator",
    "FavorTrainer",
    "TrainConfig",
    "TrainResult",
    "answer_correct",
    "build_trainer",
    "load_examples",
    "run_training",
]

METRICS_FILE = "metrics.csv"


# ----------------------------------------------------------------------------------------------------- data
def load_examples(path: str | Path) -> list[dict[str, Any]]:
    """A JSON Lines file (`favor_llm.dataset`: ``{"media", "question", "answer", "task"?}``, media relative to the
    file) as collator items ``{"text", "media", "answer", "task"}``; every line is checked before training starts
    (a bad one is a `ValueError` naming the file and line)."""
    from .dataset import read_examples

    return [example.item() | {"line": example.line} for example in read_examples(path)]


class FavorCollator:
    """Examples -> a training batch: the processor's tensors plus ``task_ids (B,)`` (index into ``tasks``).

    Args:
        processor: turns questions, media and answers into model inputs.
        tasks: the task names evaluated (their order gives the ids; unknown tasks get -1).
        features: a `favor_llm.feature_cache.FeatureCache` to read frozen-encoder features from instead of
            decoding media (``None``: decode every time).
    """

    def __init__(self, processor: FavorProcessor, tasks: Sequence[str] = (), features: Any = None) -> None:
        self.processor = processor
        self.tasks = list(tasks)
        self.features = features

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        if self.features is not None:
            batch = dict(self.features.collate(examples))
        else:
            batch = dict(
                self.processor.collate([{k: ex[k] for k in ("text", "media", "answer")} for ex in examples])
            )
        index = {t: i for i, t in enumerate(self.tasks)}
        batch["task_ids"] = torch.tensor([index.get(ex.get("task"), -1) for ex in examples])
        return batch


def answer_correct(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``(B,)`` bool: every answer position (label != -100) has its target as the argmax of the previous
    position's logits (``logits (B, L, V)``, ``labels (B, L)``), i.e. greedy decoding reproduces the answer."""
    predicted = logits[:, :-1].argmax(-1)
    target = labels[:, 1:].to(predicted.device)
    return ((predicted == target) | (target == -100)).all(dim=-1)


# -------------------------------------------------------------------------------------------------- logging
class CSVLogger(TrainerCallback):
    """Appends every logged value to ``output_dir/metrics.csv`` as rows ``step, epoch, name, value`` (main
    process only; a resumed run appends to the same file), plus each epoch's wall time (``epoch_seconds``) and,
    with a feature cache, its hits and misses so far (``cache_hits``, ``cache_misses``)."""

    def __init__(self, output_dir: str | Path, features: Any = None) -> None:
        self.path = Path(output_dir) / METRICS_FILE
        self.features = features
        self._epoch_start = 0.0

    def _write(self, state: Any, values: dict[str, Any]) -> None:
        if not state.is_world_process_zero:
            return
        new = not self.path.is_file()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", newline="") as handle:
            writer = csv.writer(handle)
            if new:
                writer.writerow(["step", "epoch", "name", "value"])
            for name, value in values.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    writer.writerow([state.global_step, f"{state.epoch or 0:.4f}", name, value])

    def on_log(
        self, args: TrainingArguments, state: Any, control: Any, logs: dict | None = None, **kwargs: Any
    ):
        if logs:
            self._write(state, logs)

    def on_epoch_begin(self, args: TrainingArguments, state: Any, control: Any, **kwargs: Any):
        self._epoch_start = time.perf_counter()

    def on_epoch_end(self, args: TrainingArguments, state: Any, control: Any, **kwargs: Any):
        values: dict[str, Any] = {"epoch_seconds": round(time.perf_counter() - self._epoch_start, 3)}
        if self.features is not None:
            values |= {"cache_hits": self.features.hits, "cache_misses": self.features.misses}
        self._write(state, values)


# -------------------------------------------------------------------------------------------------- trainer
class FavorTrainer(Trainer):
    """`Trainer` with FAVOR's logging (answer CE and diversity loss apart), per-task answer accuracy in
    evaluation, and delta checkpoints (`FavorModel.save_pretrained`) that it resumes from."""

    def __init__(self, *args: Any, tasks: Sequence[str] = (), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.tasks = list(tasks)
        self._parts = {"lm_loss": 0.0, "diversity_loss": 0.0, "count": 0}
        self.trained_batches = 0  # batches this process trained (0: a finished run started again)

    def compute_loss(
        self, model: Any, inputs: dict, return_outputs: bool = False, num_items_in_batch: Any = None
    ):
        inputs = {k: v for k, v in inputs.items() if k != "task_ids"}
        outputs = model(**inputs)
        if model.training:
            self._parts["lm_loss"] += float(outputs.lm_loss.detach())
            self._parts["diversity_loss"] += float(outputs.diversity_loss.detach())
            self._parts["count"] += 1
            self.trained_batches += 1
        return (outputs.loss, outputs) if return_outputs else outputs.loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        count = self._parts["count"]
        if "loss" in logs and count:
            logs["lm_loss"] = round(self._parts["lm_loss"] / count, 6)
            logs["diversity_loss"] = round(self._parts["diversity_loss"] / count, 6)
            self._parts = {"lm_loss": 0.0, "diversity_loss": 0.0, "count": 0}
        if "train_loss" in logs and not self.trained_batches:
            return  # the end-of-training summary of a run that trained nothing: a "train_loss" of 0 is no loss
        super().log(logs, start_time)

    def prediction_step(
        self, model: Any, inputs: dict, prediction_loss_only: bool, ignore_keys: list[str] | None = None
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        """Loss, ``(B,)`` answer correctness (1.0 / 0.0) and ``(B,)`` task ids (the metric's "labels")."""
        inputs = self._prepare_inputs(inputs)
        task_ids = inputs.pop("task_ids")
        with torch.no_grad():
            outputs = model(**inputs)
        correct = answer_correct(outputs.logits, inputs["labels"]).float()
        return outputs.loss.detach(), correct, task_ids

    def compute_answer_metrics(self, prediction: Any) -> dict[str, float]:
        """``accuracy`` overall and ``accuracy_<task>`` per task, from `prediction_step`'s outputs."""
        correct = torch.as_tensor(prediction.predictions).float().reshape(-1)
        task_ids = torch.as_tensor(prediction.label_ids).long().reshape(-1)
        metrics = {"accuracy": float(correct.mean()) if correct.numel() else math.nan}
        for i, task in enumerate(self.tasks):
            chosen = correct[task_ids == i]
            if chosen.numel():
                metrics[f"accuracy_{task}"] = float(chosen.mean())
        return metrics

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        """Write a delta checkpoint (`FavorModel.save_pretrained`) and the processor, from the main process only
        (transformers v5 calls ``_save`` on every process; two writers of one config.json corrupt it)."""
        if not self.args.should_save:
            return
        output_dir = output_dir or self.args.output_dir
        model = self.accelerator.unwrap_model(self.model)
        model.save_pretrained(output_dir)
        if self.processing_class is not None:
            self.processing_class.save_pretrained(output_dir)
        torch.save(self.args, os.path.join(output_dir, "training_args.bin"))

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: Any = None) -> None:
        """Restore the trainable weights and the LoRA adapter saved by `_save` (strict: every key must match)."""
        from peft import get_peft_model_state_dict, set_peft_model_state_dict
        from safetensors.torch import load_file

        from .checkpoint import ADAPTER_DIR, resolve_checkpoint_files

        model = self.accelerator.unwrap_model(model or self.model)
        root = Path(resume_from_checkpoint)
        trainable: dict[str, torch.Tensor] = {}
        for file in resolve_checkpoint_files(root):
            trainable.update(load_file(str(file)))
        names = {n for n, p in model.named_parameters() if p.requires_grad and "lora_" not in n}
        if set(trainable) != names:
            raise ValueError(
                f"resume: {root} does not match the model: missing {sorted(names - set(trainable))[:5]}, "
                f"unexpected {sorted(set(trainable) - names)[:5]}"
            )
        model.load_state_dict(trainable, strict=False)
        if model.config.use_lora:
            adapter = load_file(str(root / ADAPTER_DIR / "adapter_model.safetensors"))
            if set(adapter) != set(get_peft_model_state_dict(model.language_model)):
                raise ValueError(f"resume: the LoRA adapter in {root} does not match the model")
            set_peft_model_state_dict(model.language_model, adapter)


# ---------------------------------------------------------------------------------------------------- build
def _tokenizer(config: TrainConfig, examples: list[dict[str, Any]]) -> Any:
    from .recipes import word_tokenizer

    if config.tokenizer == "aveb":
        from .aveb import tokenizer as aveb_tokenizer

        tok = aveb_tokenizer()
        _check_vocabulary(tok, examples, config.train_file)
        return tok
    if config.tokenizer == "words":
        return word_tokenizer([ex["text"] + " " + ex["answer"] for ex in examples])
    from transformers import AutoTokenizer

    if not Path(config.tokenizer).is_dir():
        raise ValueError(
            f"tokenizer: expected 'aveb', 'words' or a tokenizer directory, got {config.tokenizer!r}"
        )
    return AutoTokenizer.from_pretrained(config.tokenizer)


def _check_vocabulary(tok: Any, examples: list[dict[str, Any]], source: str) -> None:
    """Refuse training text with words outside a word-level vocabulary: they would all become ``<unk>``, so the
    model could neither read the question nor ever say the answer."""
    backend = tok.backend_tokenizer
    vocab = tok.get_vocab()
    for ex in examples:
        text = backend.normalizer.normalize_str(ex["text"] + " " + ex["answer"])
        unknown = [w for w, _ in backend.pre_tokenizer.pre_tokenize_str(text) if w not in vocab]
        if unknown:
            raise ValueError(
                f"tokenizer: the 'aveb' vocabulary (AVEB-mini's words) lacks {sorted(set(unknown))[:5]} "
                f"({source}:{ex.get('line', '?')}); for your own data use tokenizer: words or a tokenizer directory"
            )


def build_model_and_processor(
    config: TrainConfig, examples: list[dict[str, Any]], args: TrainingArguments | None = None
) -> tuple[FavorModel, FavorProcessor]:
    """The model to train (a recipe with seeded weights, or a checkpoint) and its processor.

    A recipe's frozen parts are written once to ``output_dir/frozen`` (by the main process; under DDP the others
    wait and read where they are) so that checkpoints are small deltas referencing them.
    """
    from .recipes import RECIPES, build_model, recipe_processor

    if config.model in RECIPES:
        tokenizer = _tokenizer(config, examples)
        favor_config = RECIPES[config.model](tokenizer, **config.model_overrides)
        model = build_model(favor_config, seed=config.seed)
        processor = recipe_processor(favor_config, tokenizer)
        frozen = Path(config.output_dir) / FROZEN_DIR
        sources_file = frozen / "component_sources.json"
        main = args is None or args.process_index == 0
        with args.main_process_first(local=False) if args is not None else _nothing():
            if main:
                sources = model.save_frozen_components(frozen)
                sources_file.write_text(json.dumps(sources, indent=2) + "\n")
            else:
                model.config.component_sources = json.loads(sources_file.read_text())
        return model, processor
    path = Path(config.model)
    if not (path / "config.json").is_file():
        raise ValueError(
            f"model: expected a recipe name {sorted(RECIPES)} or a FAVOR checkpoint directory, got {path}"
        )
    if config.model_overrides:
        raise ValueError("model_overrides: only for a recipe; a checkpoint brings its own config")
    model = FavorModel.from_pretrained(path).train()
    return model, FavorProcessor.from_pretrained(path)


@contextlib.contextmanager
def _nothing() -> Iterator[None]:
    yield


def _precision(setting: str) -> dict[str, bool]:
    if setting == "auto":
        if torch.cuda.is_available():
            return {"bf16": True} if torch.cuda.is_bf16_supported() else {"fp16": True}
        return {}
    return {"bf16": True} if setting == "bf16" else {"fp16": True} if setting == "fp16" else {}


def _distributed() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def _report_to() -> list[str]:
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        return []
    return ["tensorboard"]


def build_trainer(config: TrainConfig) -> FavorTrainer:
    """The `FavorTrainer` for ``config`` (model, processor, data, callbacks), ready to ``train()``."""
    if (
        config.deepspeed is not None
    ):  # checked before the data and model are built, not deep in TrainingArguments
        import importlib.util

        if not Path(config.deepspeed).is_file():
            raise ValueError(f"deepspeed: no such file {config.deepspeed}; expected a DeepSpeed JSON config")
        if importlib.util.find_spec("deepspeed") is None:
            raise ValueError("deepspeed: the deepspeed package is not installed (pip install deepspeed)")
    train = load_examples(config.train_file)
    validation = load_examples(config.validation_file) if config.validation_file else None
    tasks = sorted({ex["task"] for ex in train + (validation or [])})
    evaluate = validation is not None and config.eval_steps > 0
    args = TrainingArguments(
        output_dir=config.output_dir,
        seed=config.seed,
        max_steps=config.max_steps,
        num_train_epochs=config.num_train_epochs,
        per_device_train_batch_size=config.per_device_train_batch_size,
        per_device_eval_batch_size=config.per_device_eval_batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        learning_rate=config.learning_rate,
        weight_decay=config.weight_decay,
        warmup_steps=config.warmup_ratio,  # a float in [0, 1) is a fraction of the steps (transformers v5)
        lr_scheduler_type=config.lr_scheduler_type,
        activation_checkpointing=config.gradient_checkpointing,
        eval_strategy="steps" if evaluate else "no",
        eval_steps=config.eval_steps or None,
        save_strategy="steps" if config.save_steps else "no",
        save_steps=config.save_steps or None,
        save_total_limit=config.save_total_limit,
        logging_steps=max(config.logging_steps, 1),
        report_to=_report_to(),
        disable_tqdm=not sys.stderr.isatty(),  # progress bars on a terminal; log lines otherwise
        remove_unused_columns=False,  # the collator needs the raw text / media / answer
        use_cpu=not torch.cuda.is_available(),
        # DDP on CPU (torchrun without GPUs) needs gloo; with GPUs the Trainer picks nccl
        ddp_backend="gloo" if _distributed() and not torch.cuda.is_available() else None,
        dataloader_num_workers=config.dataloader_num_workers,
        fsdp=config.fsdp,
        fsdp_config=config.fsdp_config,
        deepspeed=config.deepspeed,
        **_precision(config.mixed_precision),
    )
    model, processor = build_model_and_processor(config, train, args)
    features = None
    if config.feature_cache != "off":
        from .feature_cache import FeatureCache

        features = FeatureCache(config.feature_cache, model, processor)
    trainer = FavorTrainer(
        model=model,
        args=args,
        train_dataset=train,
        eval_dataset=validation if evaluate else None,
        data_collator=FavorCollator(processor, tasks, features),
        processing_class=processor,
        tasks=tasks,
        # loader workers use the cache in their own processes: the counters here would stay 0 / 0
        callbacks=[CSVLogger(config.output_dir, features if config.dataloader_num_workers == 0 else None)],
    )
    trainer.compute_metrics = trainer.compute_answer_metrics
    return trainer


@dataclass
class TrainResult:
    """What `run_training` did: the final model directory, the training loss, the step reached, the test metrics.

    ``trained_steps`` is what this call trained (``steps`` minus the step it resumed at); 0 when the run was already
    complete (its last checkpoint at ``max_steps``), and then ``training_loss`` is ``None``.
    """

    final_dir: Path
    training_loss: float | None
    steps: int
    test_metrics: dict[str, float] = field(default_factory=dict)
    resumed_from: str | None = None
    trained_steps: int = 0

    @property
    def already_complete(self) -> bool:
        """Started again after it had finished: nothing trained, ``final_dir`` holds the model at ``steps``."""
        return self.resumed_from is not None and self.trained_steps == 0


def run_training(config: TrainConfig) -> TrainResult:
    """Train as ``config`` says; write ``output_dir/final`` (model + processor) and ``train_config.json``.

    Returns:
        `TrainResult` (``test_metrics`` per task when ``config.test_file`` is given).
    """
    previous_threads = torch.get_num_threads()
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    try:
        test = load_examples(config.test_file) if config.test_file else None  # checked before training
        resume = resume_point(config)
        claim_output_dir(config)
        trainer = build_trainer(config)
        # the step resumed at, read now: the Trainer's checkpoint rotation may delete that checkpoint
        start = 0 if resume is None else checkpoint_step(resume)
        # a finished run started again trains nothing, but the Trainer still restores its last checkpoint: final/
        # is written again with the same weights (also completing a final/ whose save was cut short)
        output = trainer.train(resume_from_checkpoint=resume)
        trained = int(output.global_step) - start
        final = Path(config.output_dir) / FINAL_DIR
        trainer.save_model(str(final))
        test_metrics: dict[str, float] = {}
        if test is not None:
            trainer.data_collator.tasks = trainer.tasks = sorted({ex["task"] for ex in test})
            test_metrics = trainer.evaluate(eval_dataset=test, metric_key_prefix="test")
        if trainer.is_world_process_zero():
            (Path(config.output_dir) / "train_config.json").write_text(
                json.dumps(config.to_dict(), indent=2) + "\n"
            )
        loss = float(output.training_loss) if trained else None
        return TrainResult(final, loss, int(output.global_step), test_metrics, resume, trained)
    finally:
        torch.set_num_threads(previous_threads)
