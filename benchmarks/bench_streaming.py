"""Streaming latency: per-window cost against the position in the stream, and time to answer against stream length.

A `favor_llm.streaming` session over synthetic media (random 32x32 frames at 2 fps, noise audio at 16 kHz) through
the tiny FAVOR (`favor_llm.testing`, 2 s windows of 4 frames, 4 queries, audio in 2 s chunks):

1. per-window latency (encode the window's 4 frames and 2 s of audio, synchronise, causal Q-Former, project, append
   to the KV cache): the median over each minute, minute 1 against the last minute (target: flat within 20%), in
   wall-clock and in CPU time. ``--policy error`` (default): a context large enough for the whole stream, so the
   cache keeps growing and nothing is dropped or re-prefilled (the worst case); ``--policy keep_recent``: the tiny
   LLM's 4096-token context, the oldest windows dropped and the rest re-prefilled when it is full.
2. time to answer (``ask``: the partial window, the question, ``--new-tokens`` greedy tokens) at several stream
   lengths, against the named peer: offline ``FavorModel.generate`` on the same media (what answering costs without
   a stream: every window encoded again), measured in the same run.

    python benchmarks/bench_streaming.py [--minutes 60] [--offline-minutes 1 5 10] [--threads 1] [--policy error]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from favor_llm.streaming import ContextPolicy
from favor_llm.testing import tiny_model_and_processor

QUESTION = "What is happening in the video?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=int, default=60, help="stream length")
    parser.add_argument("--ask-at", type=int, nargs="*", default=[1, 5, 10, 30, 60], help="minutes to ask at")
    parser.add_argument("--offline-minutes", type=int, nargs="*", default=[1, 5, 10], help="peer lengths")
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (tiny matrices: 1 is fastest)")
    parser.add_argument(
        "--policy",
        choices=("error", "keep_recent"),
        default="error",
        help="error: a context for the whole stream (the cache grows); keep_recent: the tiny LLM's 4096 tokens",
    )
    args, _ = parser.parse_known_args()  # `nox -s bench -- ...` passes the same arguments to every script
    torch.set_num_threads(args.threads)

    model, processor = tiny_model_and_processor(seed=0, audio_chunk_seconds=2.0)
    processor.layout.max_media_seconds = None  # the offline peer reads long media
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)  # one window: 2 s
    audio = (rng.standard_normal(32000) * 0.1).astype(np.float32)
    breakdown = _breakdown(model, processor, frames, audio)  # also warms up every path
    tokens_needed = 16 + args.minutes * 30 * model.config.num_queries + 64
    if args.policy == "error":
        policy = ContextPolicy("error", max_tokens=tokens_needed + 256)
    else:
        policy = ContextPolicy("keep_recent")
    session = model.stream(processor, context_policy=policy)
    all_frames, all_audio = [], []
    per_minute: list[float] = []
    cpu_per_minute: list[float] = []
    slowest = 0.0  # the slowest window's CPU time (with keep_recent: a window that triggered a re-prefill)
    answers: dict[int, tuple[float, float]] = {}  # minute -> (wall, CPU) seconds
    for minute in range(1, args.minutes + 1):
        times, cpu = [], []
        for _ in range(30):
            start, start_cpu = time.perf_counter(), time.process_time()
            closed = session.feed(frames=frames, audio=audio)
            times.append(time.perf_counter() - start)
            cpu.append(time.process_time() - start_cpu)
            assert len(closed) == 1
        per_minute.append(statistics.median(times))
        cpu_per_minute.append(statistics.median(cpu))
        slowest = max(slowest, max(cpu))
        if minute <= max(args.offline_minutes, default=0):
            all_frames.append(np.repeat(frames[None], 30, axis=0).reshape(-1, 32, 32, 3))
            all_audio.append(np.tile(audio, 30))
        if minute in args.ask_at:
            session.ask(QUESTION, max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens)  # warm
            runs = []
            for _ in range(3):
                start_cpu = time.process_time()
                answer = session.ask(QUESTION, max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens)
                runs.append((answer.latency, time.process_time() - start_cpu))
            answers[minute] = tuple(statistics.median(r[i] for r in runs) for i in (0, 1))

    offline: dict[int, tuple[float, float]] = {}
    for minutes in args.offline_minutes:
        media = {
            "video": np.concatenate(all_frames[:minutes]),
            "audio": np.concatenate(all_audio[:minutes]),
        }
        start, start_cpu = time.perf_counter(), time.process_time()
        inputs = processor(text=QUESTION, media=media)
        with torch.no_grad():
            model.generate(
                **inputs, max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, do_sample=False
            )
        offline[minutes] = (time.perf_counter() - start, time.process_time() - start_cpu)

    print(f"window close, split (median of 20 windows; {args.threads} thread(s)):")
    for name, seconds in breakdown.items():
        print(f"  {name:<52} {seconds * 1000:7.2f} ms")
    print(
        f"\nper-window latency (median of the 30 windows of each minute; {args.threads} thread(s); policy "
        f"{args.policy}; wall clock, and CPU time of this process, which other load on a shared machine does "
        "not inflate):"
    )
    marks = sorted({1, 2, 5, 10, 20, 30, 40, 50, args.minutes} & set(range(1, args.minutes + 1)))
    print("| minute | " + " | ".join(str(m) for m in marks) + " |")
    print("|---|" + "---|" * len(marks))
    print("| wall ms | " + " | ".join(f"{per_minute[m - 1] * 1000:.1f}" for m in marks) + " |")
    print("| CPU ms | " + " | ".join(f"{cpu_per_minute[m - 1] * 1000:.1f}" for m in marks) + " |")
    ratio = per_minute[-1] / per_minute[0]
    cpu_ratio = cpu_per_minute[-1] / cpu_per_minute[0]
    print(
        f"minute {args.minutes} / minute 1: wall {ratio:.2f}, CPU {cpu_ratio:.2f} (target: within 0.8-1.2); "
        f"cache {session.num_tokens} tokens, {session.context.reprefills} re-prefills; slowest window "
        f"{slowest * 1000:.1f} ms CPU"
    )
    print(
        "\ntime to answer (median of 3; partial window + question + "
        f"{args.new_tokens} tokens) vs offline generate on the same media:"
    )
    print("| stream minutes | ask: wall / CPU (s) | offline generate: wall / CPU (s) | offline / ask (CPU) |")
    print("|---|---|---|---|")
    for minute in sorted(set(answers) | set(offline)):
        ask, peer = answers.get(minute), offline.get(minute)
        ask_text = "-" if ask is None else f"{ask[0]:.3f} / {ask[1]:.3f}"
        peer_text = "-" if peer is None else f"{peer[0]:.2f} / {peer[1]:.2f}"
        ratio_text = f"{peer[1] / ask[1]:.0f}x" if ask and peer else "-"
        print(f"| {minute} | {ask_text} | {peer_text} | {ratio_text} |")


def _breakdown(model, processor, frames: np.ndarray, audio: np.ndarray) -> dict[str, float]:
    """Where a window's time goes: its frames encoded on arrival; then, at its close, its audio chunk encoded, the
    synchroniser, causal Q-Former, projection and cache append; and the causal Q-Former alone on one window."""
    session = model.stream(processor)
    on_frames, on_close = [], []
    for _ in range(22):
        start = time.perf_counter()
        session.feed(frames=frames)  # no window closes: its audio is missing
        on_frames.append(time.perf_counter() - start)
        start = time.perf_counter()
        assert len(session.feed(audio=audio)) == 1
        on_close.append(time.perf_counter() - start)
    qformer = model.media_encoder.causal_qformer
    config = qformer.config
    features = torch.randn(1, config.window_size, config.tokens_per_frame, config.encoder_hidden_size)
    alone = []
    with torch.no_grad():
        for _ in range(22):
            start = time.perf_counter()
            qformer(features)
            alone.append(time.perf_counter() - start)
    return {
        "frames encoded on arrival (4 frames)": statistics.median(on_frames[2:]),
        "at close: audio chunk + sync + Q-Former + projection + append": statistics.median(on_close[2:]),
        "of which the causal Q-Former (one window)": statistics.median(alone[2:]),
    }


if __name__ == "__main__":
    main()
