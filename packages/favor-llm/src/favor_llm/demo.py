"""``favor demo``: the whole FAVOR pipeline on a tiny random model, offline, in well under a minute on a laptop CPU.

Steps: build the tiny model (`favor_llm.testing.tiny_model_and_processor`), write a real clip with PyAV (colours
changing every second and a 1 kHz tone, `favor_avsync.testing.make_test_clip`), decode it through the processor
(frames at 2 fps + 16 kHz audio -> Whisper features), train the LoRA adapters, the causal Q-Former and the
projections on one question/answer pair (loss = cross-entropy + 0.01 x diversity loss, as released), then answer
the question by greedy generation.

The model is tiny and random: it can only memorise the one answer it is trained on. The demo shows that every part
is wired together and trains (gradients reach exactly the trainable parts), not that the model understands video.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

__all__ = ["DEMO_ANSWER", "DEMO_QUESTION", "DemoResult", "run_demo"]

DEMO_QUESTION = "What colour is the screen at the start?"
DEMO_ANSWER = "It is red, then green, then blue."
#: The clip: 4 s, colours red/green/blue/white for one second each, a 1 kHz tone at 1.5 s.
CLIP_SECONDS = 4.0
CLIP_COLOURS = ((255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255))


@dataclass
class DemoResult:
    """What `run_demo` measured.

    Attributes:
        answer_before, answer: the generated answer before and after training.
        losses, diversity_losses: per training step (total loss and the Q-Former diversity loss).
        frames, windows, av_tokens: frames of the decoded clip, Q-Former windows, AV tokens given to the LLM.
        trainable, frozen: parameter counts.
        seconds: wall-clock time of the whole demo.
        clip: path of the clip that was written (deleted when the demo ends unless ``out`` was given).
        saved: where the trained model was saved (``out``), or None.
    """

    answer_before: str = ""
    answer: str = ""
    losses: list[float] = field(default_factory=list)
    diversity_losses: list[float] = field(default_factory=list)
    frames: int = 0
    windows: int = 0
    av_tokens: int = 0
    trainable: int = 0
    frozen: int = 0
    seconds: float = 0.0
    clip: Path | None = None
    saved: Path | None = None


def run_demo(
    steps: int = 150,
    seed: int = 0,
    out: str | Path | None = None,
    lr: float = 5e-3,
    echo: Callable[[str], None] = print,
    progress: bool = True,
    threads: int | None = 1,
) -> DemoResult:
    """Run the demo (see the module docstring), printing as it goes through ``echo``.

    Args:
        steps: training steps (>= 1).
        seed: seeds the tiny model and the training.
        out: if given, save the trained model, its processor and the clip there (then try ``favor info out`` and
            ``favor generate --model out --media out/clip.mp4 --question ...``).
        lr: AdamW learning rate.
        echo: where lines go (``print`` by default).
        progress: show tqdm progress bars (decoding, training, generation).
        threads: torch CPU threads while the demo runs (restored after). One is fastest for a model this small:
            with more, thread start-up and contention cost more than the tiny matrix products gain.

    Returns:
        The `DemoResult`.
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps: expected an int >= 1, got {steps!r}")
    if not lr > 0:
        raise ValueError(f"lr: expected > 0, got {lr!r}")
    previous_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        if out is not None:
            return _run(steps, seed, Path(out), True, lr, echo, progress)
        with tempfile.TemporaryDirectory(prefix="favor-demo-") as scratch:  # the clip goes when the demo ends
            return _run(steps, seed, Path(scratch), False, lr, echo, progress)
    finally:
        torch.set_num_threads(previous_threads)


def _run(
    steps: int, seed: int, workdir: Path, keep: bool, lr: float, echo: Callable[[str], None], progress: bool
) -> DemoResult:
    from favor_avsync import load_media
    from favor_avsync.testing import make_test_clip

    from .testing import tiny_model_and_processor

    start = time.perf_counter()
    result = DemoResult()
    echo("FAVOR demo: a TINY model with RANDOM weights, built offline (no downloads).")
    echo("It shows the pipeline working end to end; it can only memorise the one answer it is trained on.")

    model, processor = tiny_model_and_processor(seed=seed)
    result.trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    result.frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    echo(
        f"[1/5] built the tiny model: {result.trainable:,} trainable + {result.frozen:,} frozen parameters "
        f"({time.perf_counter() - start:.1f} s)"
    )

    workdir.mkdir(parents=True, exist_ok=True)
    clip_path = workdir / "clip.mp4"
    make_test_clip(
        clip_path,
        duration=CLIP_SECONDS,
        fps=10.0,
        size=(64, 48),
        colours=CLIP_COLOURS,
        colour_period=1.0,
        tone_at=1.5,
        tone_seconds=0.5,
    )
    result.clip = clip_path
    echo(
        f"[2/5] wrote a {CLIP_SECONDS:.0f} s clip with PyAV (red, green, blue, white; 1 kHz tone at 1.5 s): {clip_path}"
    )

    layout = processor.layout
    clip = load_media(clip_path, fps=layout.fps, sample_rate=layout.sample_rate, progress=progress)
    train_inputs = processor(text=DEMO_QUESTION, media=clip, answers=DEMO_ANSWER)
    ask_inputs = processor(text=DEMO_QUESTION, media=clip)
    result.frames = clip.num_frames
    result.av_tokens = int((ask_inputs["input_ids"] == processor.av_token_id).sum())
    result.windows = result.av_tokens // layout.num_queries
    audio_seconds = 0.0 if clip.audio is None else clip.audio.shape[0] / clip.sample_rate
    echo(
        f"[3/5] decoded it: {result.frames} frames at {layout.fps:g} fps + {audio_seconds:.1f} s of audio -> "
        f"{result.windows} windows x {layout.num_queries} queries = {result.av_tokens} AV tokens in the prompt"
    )
    answer_tokens = len(processor.tokenizer(DEMO_ANSWER, add_special_tokens=False)["input_ids"]) + 1
    result.answer_before = _answer(model, processor, ask_inputs, answer_tokens + 4, progress)
    echo(f"      before training it answers: {result.answer_before!r}")

    echo(
        f"[4/5] training LoRA + causal Q-Former + projections on one question/answer pair ({steps} steps, "
        f"loss = answer cross-entropy + {model.config.diversity_loss_weight:g} x diversity loss)"
    )
    _train(model, train_inputs, steps, seed, lr, result, progress)
    echo(
        f"      loss {result.losses[0]:.3f} -> {result.losses[-1]:.3f}; diversity loss (mean cosine between a "
        f"window's queries, lower = more diverse) {result.diversity_losses[0]:.4f} -> {result.diversity_losses[-1]:.4f}"
    )

    result.answer = _answer(model, processor, ask_inputs, answer_tokens + 4, progress)
    echo(f"[5/5] Q: {DEMO_QUESTION}")
    echo(f"      A: {result.answer}")
    if result.answer == DEMO_ANSWER:
        echo("      (the answer it was trained on: memorised, as a tiny random model can)")
    if keep:
        model.save_frozen_components(workdir / "frozen")
        model.save_pretrained(workdir)
        processor.save_pretrained(workdir)
        result.saved = workdir
    result.seconds = time.perf_counter() - start
    echo("")
    echo("summary")
    echo(f"  media        {result.frames} frames, {result.windows} windows, {result.av_tokens} AV tokens")
    echo(f"  parameters   {result.trainable:,} trainable, {result.frozen:,} frozen")
    echo(f"  time         {result.seconds:.1f} s (steps 1-5, after Python start-up and imports)")
    if result.saved is not None:
        echo(f"  saved        {workdir}  (next: favor info {workdir}")
        echo(
            f'               favor generate --model {workdir} --media {clip_path} --question "{DEMO_QUESTION}")'
        )
    return result


def _train(model, inputs, steps: int, seed: int, lr: float, result: DemoResult, progress: bool) -> None:
    from tqdm.auto import tqdm

    params = [p for p in model.parameters() if p.requires_grad]
    optimiser = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    model.train()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        bar = tqdm(range(steps), desc="      training", unit="step", disable=not progress, leave=True)
        for _ in bar:
            out = model(**inputs)
            optimiser.zero_grad(set_to_none=True)
            out.loss.backward()
            optimiser.step()
            result.losses.append(out.loss.item())
            result.diversity_losses.append(out.diversity_loss.item())
            bar.set_postfix(loss=f"{result.losses[-1]:.3f}", diversity=f"{result.diversity_losses[-1]:.4f}")
        bar.close()
    model.eval()


def _answer(model, processor, inputs, max_new_tokens: int, progress: bool) -> str:
    from .progress import GenerationProgress

    streamer = GenerationProgress(max_new_tokens, desc="      generating") if progress else None
    with torch.no_grad():
        generated = model.generate(
            **inputs, max_new_tokens=max_new_tokens, do_sample=False, streamer=streamer
        )
    return processor.decode_answers(generated, inputs)[0]
