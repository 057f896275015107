"""The whole FAVOR pipeline on the tiny model, from file to answer, split by stage, on this CPU.

Videos of mixed lengths are written with PyAV (``favor_avsync.testing.make_test_clip``), then, per batch:
decode (``load_media``), the processor (frames to pixels, Whisper log-mel features, the prompt), and
``FavorModel.generate``, whose time is split with forward hooks on the model's public parts: the frame encoder
(``model.vision``), the audio encoders (``model.audio_encoders``), the synchroniser (``model.synchroniser``), the
causal Q-Former (``model.qformer``), and the LLM (``model.causal_lm``: its first call is the prefill, the others are
generation steps). FLOPs per stage come from ``torch.utils.flop_counter`` (per module).

The tiny model's parts are far smaller than the released ones, so the split shows where time goes in the
pipeline's own code (decode, feature extraction, padding, Python overhead), not the released model's costs.

    python benchmarks/bench_pipeline.py [--seconds 5 10 20] [--new-tokens 8] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from common import Row, machine, ms

STAGES = (
    "decode",
    "processor",
    "vision encoder",
    "audio encoder",
    "synchroniser",
    "Q-Former",
    "LLM prefill",
    "LLM generation",
    "other (generate glue)",
)
MODULES = {
    "vision": "vision encoder",
    "audio_encoders": "audio encoder",
    "synchroniser": "synchroniser",
    "qformer": "Q-Former",
}


class StageClock:
    """Forward hooks that add each public part's wall time to its stage."""

    def __init__(self, model) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.llm_calls = 0
        self._start: dict[int, float] = {}
        self.handles = []
        for attribute, stage in MODULES.items():
            part = getattr(model, attribute)
            for module in part if isinstance(part, torch.nn.ModuleList) else [part]:
                self._hook(module, stage)
        self._hook(model.causal_lm, None)  # what FavorModel.forward calls (LoRA layers injected in place)

    def _hook(self, module, stage: str | None) -> None:
        def pre(mod, args, kwargs=None):
            self._start[id(mod)] = time.perf_counter()

        def post(mod, args, output):
            took = time.perf_counter() - self._start.pop(id(mod))
            name = stage
            if name is None:
                name = "LLM prefill" if self.llm_calls == 0 else "LLM generation"
                self.llm_calls += 1
            self.seconds[name] += took

        self.handles += [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]

    def reset(self) -> None:
        self.seconds.clear()
        self.llm_calls = 0


def _stage_flops(model, inputs, new_tokens: int) -> dict[str, int]:
    """FLOPs per stage: module totals from the flop counter; LLM prefill = a 1-token generate's LLM FLOPs."""

    stage_of = {}  # module path -> stage, for the parts the clock times
    for path, module in model.named_modules():
        top = path.split(".")[0]
        if top in MODULES and (path == top or (path.count(".") == 1 and top == "audio_encoders")):
            stage_of[path] = MODULES[top]
        elif module is model.causal_lm:
            stage_of[path] = "LLM"

    def counted(tokens: int) -> dict[str, int]:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model.generate(**inputs, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False)
        totals: dict[str, int] = defaultdict(int)
        for name, ops in counter.get_flop_counts().items():
            path = name.split(".", 1)[1] if "." in name else ""  # drop the root module's name
            if path in stage_of:
                totals[stage_of[path]] += sum(ops.values())
        return totals

    one, full = counted(1), counted(new_tokens)
    out = {k: v for k, v in full.items() if k != "LLM"}
    out["LLM prefill"] = one.get("LLM", 0)
    out["LLM generation"] = full.get("LLM", 0) - one.get("LLM", 0)
    return out


def rows(seconds: tuple[float, ...] = (5.0, 10.0, 20.0), new_tokens: int = 8, repeats: int = 3) -> list[Row]:
    from favor_avsync import load_media
    from favor_avsync.testing import make_test_clip
    from favor_llm.testing import tiny_model_and_processor

    model, processor = tiny_model_and_processor(seed=0)
    layout = processor.layout
    questions = ["What is happening in the video?"] * len(seconds)
    with tempfile.TemporaryDirectory() as scratch:
        paths = []
        for i, s in enumerate(seconds):
            path = Path(scratch) / f"clip{i}.mp4"
            make_test_clip(path, duration=s, fps=25.0, size=(160, 120), tone_at=1.0)
            paths.append(path)
        clock = StageClock(model)
        totals: dict[str, list[float]] = defaultdict(list)
        for attempt in range(repeats + 1):  # the first round warms up and is not counted
            clock.reset()
            start = time.perf_counter()
            clips = [
                load_media(p, fps=layout.fps, sample_rate=layout.sample_rate, progress=False) for p in paths
            ]
            decoded = time.perf_counter()
            inputs = processor(text=questions, media=clips)
            prepared = time.perf_counter()
            with torch.no_grad():
                model.generate(
                    **inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False
                )
            done = time.perf_counter()
            if attempt == 0:
                continue
            stage = dict(clock.seconds)
            stage["decode"], stage["processor"] = decoded - start, prepared - decoded
            stage["other (generate glue)"] = (done - prepared) - sum(v for k, v in clock.seconds.items())
            stage["total"] = done - start
            for name, value in stage.items():
                totals[name].append(value)
        flops = _stage_flops(model, inputs, new_tokens)
    median = {name: statistics.median(values) for name, values in totals.items()}
    video = sum(seconds)
    mask = inputs["attention_mask"]
    pad = 1 - mask.float().mean().item()
    out = [
        Row(
            f"whole pipeline, tiny model, {len(seconds)} videos {tuple(seconds)} s, {new_tokens} new tokens: "
            f"{video / median['total']:.1f} s of video per second (file to answer)",
            ms(median["total"]),
            "",
            None,
        )
    ]
    for name in STAGES:
        share = median.get(name, 0.0) / median["total"]
        out.append(
            Row(
                f"  stage {name}: {share:.0%} of the time",
                ms(median.get(name, 0.0)),
                "",
                None,
                flops.get(name, 0),
                median.get(name, 0.0),
            )
        )
    out.append(
        Row(
            f"  LLM prompt padding: {pad:.0%} of the prefill tokens are padding ({int(mask.numel() - mask.sum())} "
            f"of {mask.numel()}; the prompts' AV tokens grow with video length)",
            "",
            "",
            None,
        )
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, nargs="+", default=[5.0, 10.0, 20.0])
    parser.add_argument("--new-tokens", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    from common import format_table

    print(f"FAVOR pipeline on the tiny model: {machine()}")
    print(format_table(rows(tuple(args.seconds), args.new_tokens, args.repeats)))


if __name__ == "__main__":
    main()
