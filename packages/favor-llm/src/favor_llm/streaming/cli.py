"""``favor stream``: play a file (or read a pipe) into a streaming session and answer a question every few seconds.

    favor stream --model DIR --media clip.mkv --question "What is happening?" --every 5
    ffmpeg -i rtsp://... -f matroska - | favor stream --model DIR --media - --question "..." --every 10

Each answer is one line on stdout: the media time, the answer, the latency (question to answer) and the span of
media in context. ``--realtime`` plays a file at its own pace (a pipe always arrives at the pace of its source).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``stream`` to the ``favor`` subcommands."""
    parser = subparsers.add_parser(
        "stream", help="answer questions about a video while it plays (file or pipe)"
    )
    parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")
    parser.add_argument(
        "--model", required=True, type=Path, help="FAVOR checkpoint directory (model + processor)"
    )
    parser.add_argument(
        "--media", required=True, help="video or audio file, or - for a pipe on standard input"
    )
    parser.add_argument("--question", required=True, action="append", help="question(s) to ask (repeatable)")
    parser.add_argument("--every", type=float, default=10.0, help="ask every this many seconds of media")
    parser.add_argument("--realtime", action="store_true", help="play a file at its own pace (default: fast)")
    parser.add_argument("--max-new-tokens", type=int, default=64, help="longest answer (tokens)")
    parser.add_argument(
        "--policy", choices=("error", "keep_recent"), default="error", help="when the LLM context is full"
    )
    parser.add_argument(
        "--window-times", action="store_true", help="window start times as text in the prompt"
    )
    parser.add_argument("--instruction", help="instruction for an instruction-aware frame encoder")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Run ``favor stream``; user mistakes are ``ValueError`` (one line, exit status 2, by ``favor``'s main)."""
    # FavorModel / FavorProcessor through the Auto classes (favor_llm registers them): no import of modeling here
    from transformers import AutoModel, AutoProcessor

    from ..devices import device_and_dtype
    from ..media_items import IMAGE_SUFFIXES
    from .context import ContextPolicy
    from .media import file_pieces, pipe_pieces

    if not args.every > 0:
        raise ValueError(f"--every: expected seconds > 0, got {args.every}")
    if args.max_new_tokens < 1:
        raise ValueError(f"--max-new-tokens: expected >= 1, got {args.max_new_tokens}")
    if not (args.model / "config.json").is_file():
        raise ValueError(f"--model: {args.model} is not a FAVOR checkpoint directory (no config.json)")
    if args.media != "-" and not Path(args.media).is_file():
        raise ValueError(f"--media: no such file {args.media}")
    if Path(args.media).suffix.lower() in IMAGE_SUFFIXES:  # offline, a still image is repeated over frames
        raise ValueError(f"--media: {args.media} is an image, not a stream; ask about it with favor generate")
    device, _ = device_and_dtype(args.device)
    processor = AutoProcessor.from_pretrained(args.model)
    model = AutoModel.from_pretrained(args.model).to(device).eval()
    layout = processor.layout
    if args.media == "-":
        pieces = pipe_pieces(sys.stdin.buffer, layout.fps, layout.sample_rate)
    else:
        pieces = file_pieces(args.media, layout.fps, layout.sample_rate)
    first = next(pieces, None)
    if first is None:
        raise ValueError(f"--media: {args.media} holds no frames or audio")
    session = model.stream(
        processor,
        instruction=args.instruction,
        video=first[0] is not None,
        audio=first[1] is not None,
        context_policy=ContextPolicy(mode=args.policy),
        window_times=args.window_times,
    )
    started = time.perf_counter()
    next_ask = args.every
    asked_at = -1.0
    piece: Any = first
    while piece is not None:
        frames, audio = piece
        session.feed(frames=frames if session.video else None, audio=audio if session.audio else None)
        if args.realtime and args.media != "-":
            time.sleep(max(0.0, session.media_seconds - (time.perf_counter() - started)))
        if session.media_seconds >= next_ask:  # once per media time: a piece can span several intervals
            _ask_all(session, args)
            asked_at = session.media_seconds
            next_ask = (math.floor(asked_at / args.every) + 1) * args.every
        piece = next(pieces, None)
    if session.media_seconds > asked_at:
        _ask_all(session, args)
    return 0


def _ask_all(session: Any, args: argparse.Namespace) -> None:
    for question in args.question:
        answer = session.ask(question, max_new_tokens=args.max_new_tokens)
        start, end = answer.span
        print(
            f"[{answer.media_seconds:8.1f} s] {answer.text.strip()}  "
            f"(latency {answer.latency:.2f} s; context {start:.1f}-{end:.1f} s)",
            flush=True,
        )
