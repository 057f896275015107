"""The ``favor`` command line: ``generate``, ``convert``, ``info``, ``demo``, ``train``, ``evaluate``, ``aveb``,
``stream``.

    favor generate --model DIR --media clip.mp4 --question "What happens?"   answer a question about a video
    favor convert --released pytorch_model.pt --llm VICUNA --out DIR         convert a released FAVOR checkpoint
    favor info DIR | config.json | released                                  config, parameters, AV tokens/minute
    favor demo [--train]                                                     a small FAVOR trained on AVEB-mini answers fresh clips
    favor train --config FILE.yaml                                           train FAVOR on your JSON Lines data
    favor evaluate --model DIR --data FILE.jsonl                             exact-match accuracy per task
    favor aveb generate OUT --seed S --train N --test M                      write AVEB-mini clips and questions
    favor stream --model DIR --media FILE_OR_- --question Q --every S        answer while a video plays

User mistakes (a missing file, a directory that is not a model, a bad checkpoint, a bad option) print one line,
``favor <command>: error: ...``, to stderr and exit with status 2; ``--debug`` shows the traceback instead (and the
libraries' warnings). Answers go to stdout; progress bars and notes go to stderr.

Building the parser imports the standard library only (each command module keeps torch, transformers and PyAV
inside its handler, and ``import favor_llm`` is lazy), so ``favor --help`` and ``favor <command> --help`` answer at
once; tests/favor_llm/test_cli_startup.py checks it in a fresh interpreter.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import demo as demo_command
from . import evaluate as evaluate_command
from . import train as train_command
from .argtypes import positive_int
from .aveb import command as aveb_command
from .devices import DTYPES, device_and_dtype
from .streaming import cli as stream_command

if TYPE_CHECKING:
    from .progress import GenerationProgress

__all__ = ["GenerationProgress", "build_parser", "main"]


def __getattr__(name: str) -> Any:
    if name == "GenerationProgress":  # moved to favor_llm.progress (transformers), still importable from here
        from .progress import GenerationProgress

        return GenerationProgress
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


EXIT_USAGE = 2


class UsageError(ValueError):
    """A mistake in how ``favor`` was called (reported as one line, exit status 2)."""


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (raised, so `main` reports them like every other user mistake)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{message} (see {self.prog} --help)")


# ------------------------------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    """The ``favor`` argument parser (subcommands ``generate``, ``convert``, ``info``, ``demo``)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks and library warnings"
    )
    parser = _Parser(
        prog="favor",
        description="FAVOR audio-visual LLM: answer questions about videos, convert released checkpoints.",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks and library warnings")
    sub = parser.add_subparsers(
        dest="command",
        metavar="{generate,convert,info,demo,aveb,evaluate,train,stream}",
        parser_class=_Parser,
    )
    sub.required = True

    gen = sub.add_parser("generate", parents=[common], help="answer a question about a video, audio or image")
    gen.add_argument(
        "--model", required=True, type=Path, help="FAVOR checkpoint directory (model + processor)"
    )
    gen.add_argument("--media", type=Path, help="video, audio or image file (omit for a text-only question)")
    gen.add_argument("--question", required=True, help="the question")
    gen.add_argument("--max-new-tokens", type=positive_int, default=128, help="longest answer (tokens)")
    gen.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:1, mps")
    gen.add_argument("--dtype", default="auto", choices=DTYPES, help="auto: float32 on CPU, bfloat16 on GPU")
    gen.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default); > 0 samples")
    gen.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling (with --temperature > 0)")
    gen.set_defaults(func=_cmd_generate)

    conv = sub.add_parser("convert", parents=[common], help="convert a released FAVOR checkpoint")
    conv.add_argument(
        "--released", required=True, type=Path, help="released delta checkpoint (pytorch_model*.pt)"
    )
    conv.add_argument("--llm", required=True, help="the base LLM it was trained on (directory or Hub id)")
    conv.add_argument("--out", required=True, type=Path, help="output directory")
    conv.add_argument(
        "--config", type=Path, help="FavorConfig (config.json or its directory); default: released"
    )
    conv.add_argument("--vision", help="frozen frame encoder checkpoint (default: the released InstructBLIP)")
    conv.add_argument("--audio", help="frozen Whisper checkpoint (default: openai/whisper-large-v2)")
    conv.add_argument("--tokenizer", help="LLM tokenizer (default: next to --released, else --llm)")
    conv.add_argument(
        "--qformer-tokenizer", help="InstructBLIP Q-Former tokenizer (default: <vision>/qformer_tokenizer)"
    )
    conv.add_argument("--overwrite", action="store_true", help="write into a non-empty --out")
    conv.set_defaults(func=_cmd_convert)

    info = sub.add_parser(
        "info", parents=[common], help="config summary, parameter counts, AV tokens per minute"
    )
    info.add_argument(
        "model", help="checkpoint directory, config.json, or 'released' (the released FAVOR sizes)"
    )
    info.add_argument("--json", action="store_true", help="print JSON")
    info.set_defaults(func=_cmd_info)

    demo_command.add_parser(sub, parents=[common])
    aveb_command.add_parser(sub)
    evaluate_command.add_parser(sub)
    train_command.add_parser(sub, parents=[common])
    stream_command.add_parser(sub)
    return parser


# --------------------------------------------------------------------------------------------------- main
def main(argv: Sequence[str] | None = None) -> int:
    """Run ``favor`` with ``argv`` (default: the process arguments); returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    parser = build_parser()
    command = next((a for a in argv if not a.startswith("-")), None)
    try:
        args = parser.parse_args(argv)
        with _quiet_libraries(debug):
            return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("favor: interrupted", file=sys.stderr)
        return 130
    except (ValueError, OSError) as err:  # user mistakes: files, directories, checkpoints, arguments
        if debug:
            raise
        prog = (
            f"favor {command}"
            if command in ("generate", "convert", "info", "demo", "aveb", "evaluate", "train", "stream")
            else "favor"
        )
        print(f"{prog}: error: {_one_line(err)}", file=sys.stderr)
        return EXIT_USAGE


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    if isinstance(err, FileNotFoundError) and err.filename and str(err.filename) not in text:
        text = f"{text}: {err.filename}"
    return text if len(text) <= 600 else text[:597] + "..."


@contextlib.contextmanager
def _quiet_libraries(debug: bool) -> Iterator[None]:
    """Without ``--debug``: no library deprecation warnings or info logs, no xformers build notes, transformers'
    progress bars only on a terminal (restored after, so calling `main` from Python leaves the caller's settings
    alone)."""
    if debug:
        yield
        return
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    xformers_logger = logging.getLogger("xformers")
    xformers_level = xformers_logger.level
    hf_logging.set_verbosity_error()
    if not sys.stderr.isatty():  # transformers' bars ("Loading weights") only on a terminal, as ours
        hf_logging.disable_progress_bar()
    xformers_logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning)
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            warnings.filterwarnings("ignore", category=UserWarning, module="transformers")
            yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
        xformers_logger.setLevel(xformers_level)


# ----------------------------------------------------------------------------------------------- generate
def _checkpoint_dir(path: Path, what: str = "model") -> Path:
    if not path.exists():
        raise UsageError(f"{what}: no such directory {path}")
    if not path.is_dir():
        raise UsageError(f"{what}: {path} is a file; expected a FAVOR checkpoint directory")
    if not (path / "config.json").is_file():
        raise UsageError(f"{what}: {path} has no config.json; it is not a FAVOR checkpoint directory")
    return path


def _cmd_generate(args: argparse.Namespace) -> int:
    import torch

    from .media_items import IMAGE_SUFFIXES
    from .modeling import FavorModel
    from .processing import FavorProcessor
    from .progress import GenerationProgress

    model_dir = _checkpoint_dir(args.model)
    if args.media is not None and not args.media.is_file():
        raise UsageError(
            f"media: no such file {args.media}" + (" (it is a directory)" if args.media.is_dir() else "")
        )
    if args.temperature < 0:
        raise UsageError(f"--temperature: expected >= 0, got {args.temperature}")
    if not 0 < args.top_p <= 1:
        raise UsageError(f"--top-p: expected a value in (0, 1], got {args.top_p}")
    device, dtype = device_and_dtype(args.device, args.dtype)
    processor = FavorProcessor.from_pretrained(model_dir)
    media: Any = None
    if args.media is not None:
        if args.media.suffix.lower() in IMAGE_SUFFIXES:
            media = args.media  # the processor repeats a still image over frames
        else:
            from favor_avsync import load_media

            layout = processor.layout
            media = load_media(args.media, fps=layout.fps, sample_rate=layout.sample_rate, progress=True)
    model = FavorModel.from_pretrained(model_dir, dtype=dtype if dtype != torch.float32 else None)
    model.to(device).eval()
    inputs = processor(text=args.question, media=media).to(device)
    sampling = (
        {"do_sample": True, "temperature": args.temperature, "top_p": args.top_p} if args.temperature else {}
    )
    streamer = GenerationProgress(args.max_new_tokens)
    with torch.no_grad():
        generated = model.generate(
            **inputs,
            max_new_tokens=args.max_new_tokens,
            streamer=streamer,
            **({"do_sample": False} | sampling),
        )
    print(processor.decode_answers(generated, inputs)[0])
    return 0


# ------------------------------------------------------------------------------------------------ convert
def _load_config(path: Path) -> Any:
    from .configuration import FavorConfig

    if not path.exists():
        raise UsageError(f"config: no such file or directory {path}")
    try:
        if path.is_dir():
            return FavorConfig.from_pretrained(path)
        return FavorConfig.from_dict(json.loads(path.read_text()))
    except (json.JSONDecodeError, OSError, TypeError, KeyError) as err:
        raise UsageError(f"config: {path} is not a FavorConfig ({_one_line(err)})") from None


def _cmd_convert(args: argparse.Namespace) -> int:
    from .convert import CONVERSION_INFO_NAME, convert_released_checkpoint

    if not args.released.is_file():
        raise UsageError(
            f"released: no such file {args.released}"
            + (" (it is a directory)" if args.released.is_dir() else "")
        )
    if args.out.exists() and not args.out.is_dir():
        raise UsageError(f"out: {args.out} is a file; expected a directory")
    if args.out.is_dir() and any(args.out.iterdir()) and not args.overwrite:
        raise UsageError(f"out: {args.out} is not empty; choose another directory or pass --overwrite")
    config = _load_config(args.config) if args.config is not None else None
    out = convert_released_checkpoint(
        args.released,
        llm=args.llm,
        out=args.out,
        config=config,
        vision=args.vision,
        audio=args.audio,
        tokenizer=args.tokenizer,
        qformer_tokenizer=args.qformer_tokenizer,
    )
    report = json.loads((out / CONVERSION_INFO_NAME).read_text())
    print(
        f"converted {len(report['renamed'])} released tensors ({', '.join(report['source_dtypes'])}) -> {out}; "
        f"skipped {len(report['skipped'])} (unused buffers / frozen parts, see favor_conversion.json)"
    )
    print(f'next: favor info {out}   |   favor generate --model {out} --media VIDEO --question "..."')
    return 0


# --------------------------------------------------------------------------------------------------- info
def _info_config(target: str) -> tuple[Any, dict[str, Any]]:
    """The config ``target`` names, and facts about the checkpoint (format, sources) when it is a directory."""
    from .configuration import FavorConfig

    facts: dict[str, Any] = {"source": target}
    if target == "released":
        facts["source"] = (
            "the released FAVOR configuration (EVA ViT-g + InstructBLIP, Whisper large-v2, Vicuna-13B)"
        )
        return FavorConfig(), facts
    path = Path(target)
    if path.is_dir():
        _checkpoint_dir(path)
        info_file = path / "favor_checkpoint.json"
        if info_file.is_file():
            facts["format"] = json.loads(info_file.read_text()).get("format")
    elif not path.exists():
        raise UsageError(f"model: no such directory or file {path} (or pass 'released')")
    config = _load_config(path)
    if getattr(config, "model_type", None) != "favor":
        raise UsageError(f"model: {path} is not a FAVOR config")
    facts["component_sources"] = config.component_sources or {}
    return config, facts


def _cmd_info(args: argparse.Namespace) -> int:
    from .stats import describe

    config, facts = _info_config(args.model)
    summary = describe(config)
    if args.json:
        print(json.dumps({**facts, **summary}, indent=2, sort_keys=True, default=str))
        return 0
    for line in _info_lines(config, facts, summary):
        print(line)
    return 0


def _info_lines(config: Any, facts: dict[str, Any], s: dict[str, Any]) -> list[str]:
    q = config.causal_qformer_config
    text = config.text_config
    params = s["parameters"]
    window_seconds = q.window_size / config.fps
    separate = config.av_blocks == 2
    lines = [f"FAVOR model: {facts['source']}"]
    if "format" in facts:
        lines.append(f"  checkpoint      {facts['format']}")
    audio = ", ".join(f"{t} @ {r:g} Hz" for t, r in zip(s["audio"], s["audio_feature_rates"]))
    lines += [
        f"  vision          {s['vision']} ({s['tokens_per_frame']} tokens of width {config.visual_hidden_size} per frame)",
        f"  audio           {audio}, projected to {config.audio_stream_width}",
        f"  synchroniser    {config.fps:g} fps, mode {config.sync_mode!r}"
        + (", av_fusion 'separate' (no synchronisation: a video and an audio Q-Former)" if separate else ""),
        f"  causal Q-Former {q.num_layers} layers, hidden {q.hidden_size}, input {q.encoder_hidden_size}, "
        f"{s['num_queries']} queries per window of {q.window_size} frames ({window_seconds:g} s, stride "
        f"{q.window_stride})",
    ]
    if separate:
        a = config.audio_qformer_config
        lines.append(
            f"  audio Q-Former  {a.num_layers} layers, hidden {a.hidden_size}, input {a.encoder_hidden_size}"
        )
    lines += [
        f"  LLM             {s['llm']} (hidden {text.hidden_size}, {text.num_hidden_layers} layers, "
        f"vocabulary {text.vocab_size})",
    ]
    lora = s["lora"]
    lines.append(
        f"  LoRA            r={lora['r']} alpha={lora['alpha']} dropout={lora['dropout']} on "
        f"{','.join(lora['target_modules'])}"
        if lora
        else "  LoRA            off"
    )
    lines.append(f"  diversity loss  weight {s['diversity_loss_weight']:g}")
    total = max(params["total"], 1)
    lines.append(
        f"  parameters      {params['trainable']:,} trainable ({100 * params['trainable'] / total:.2f}%), "
        f"{params['frozen']:,} frozen, {params['total']:,} total"
    )
    for part in s["components"]:
        c = params["components"][part["name"]]
        if c["trainable"] or c["frozen"]:
            lines.append(
                f"    {part['name']:<20} {c['trainable']:>16,} trainable {c['frozen']:>16,} frozen   {part['module']}"
            )
    per_minute = s["av_tokens_per_minute"]
    lines.append(
        f"  AV tokens       {per_minute:g} per minute of video "
        f"({60 * config.fps / q.window_stride:g} windows x {s['num_queries']} queries"
        + (" x 2 blocks: video, audio)" if separate else ")")
    )
    stream = s["streaming"]
    lines.append(
        "  streaming       none (av_fusion 'separate' puts every video window before the audio ones)"
        if stream is None
        else f"  streaming       {stream['av_tokens_per_hour']:,.0f} AV tokens and "
        f"{stream['kv_bytes_per_hour'] / 2**30:.2f} GiB of 16-bit KV cache per hour; the "
        f"{stream['context_tokens']}-token context is full after {stream['minutes_until_full']:.1f} min "
        "(favor stream --policy keep_recent keeps the latest windows)"
    )
    for name, src in (facts.get("component_sources") or {}).items():
        lines.append(f"  frozen {name:<9}from {src.get('name_or_path')}")
    return lines


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
