"""GPU check of the whole tiny FAVOR model (run by hand on a CUDA machine; CI has no GPU).

Builds ``favor_llm.testing.tiny_model_and_processor`` and checks, on CUDA:

* float32 logits and losses equal the CPU run (max abs error printed, bound 1e-4);
* ``to_mixed_precision(bfloat16)`` and ``float16``: finite loss, and greedy generation runs;
* greedy generation of a 2-sample batch on CUDA equals each sample generated alone.

    PYTHONPATH=packages/qformer/src:packages/avsync/src:packages/favor-llm/src python benchmarks/gpu_check_favor.py

Media are given as arrays, so PyAV is not needed. Exit status 1 when a check fails.
"""

from __future__ import annotations

import copy
import sys

import numpy as np
import torch


def main() -> int:
    from favor_llm.testing import tiny_model_and_processor

    if not torch.cuda.is_available():
        print("no CUDA device: nothing to check")
        return 0
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}")
    torch.manual_seed(0)
    model, processor = tiny_model_and_processor(seed=0)
    model.eval()
    rng = np.random.default_rng(0)
    video = torch.from_numpy(rng.integers(0, 255, (7, 3, 40, 40), dtype=np.uint8))
    audio = (0.1 * rng.standard_normal(16000 * 3)).astype(np.float32)
    media = [
        {"video": video, "audio": audio, "sample_rate": 16000},
        {"audio": audio[:16000], "sample_rate": 16000},
    ]
    questions = ["What is happening in the video?", "What sound do you hear?"]
    inputs = processor(text=questions, media=media, answers=["A red square.", "A tone."], return_tensors="pt")
    ok = True

    with torch.no_grad():
        cpu = model(**inputs)
    gpu_model = copy.deepcopy(model).cuda()
    gpu_inputs = {k: (v.cuda() if isinstance(v, torch.Tensor) else v) for k, v in inputs.items()}
    with torch.no_grad():
        gpu = gpu_model(**gpu_inputs)
    err = (gpu.logits.float().cpu() - cpu.logits).abs().max().item()
    loss_err = abs(gpu.loss.item() - cpu.loss.item())
    good = err <= 1e-4 and loss_err <= 1e-4
    ok &= good
    print(
        f"float32 cuda vs cpu: max|logits diff| {err:.2e}, |loss diff| {loss_err:.2e} {'ok' if good else 'FAIL'}"
    )

    prompts = processor(text=questions, media=media, return_tensors="pt")
    prompts = {k: (v.cuda() if isinstance(v, torch.Tensor) else v) for k, v in prompts.items()}
    with torch.no_grad():
        batched = gpu_model.generate(**prompts, max_new_tokens=8, do_sample=False)
    answers = processor.decode_answers(batched, prompts)
    for i in range(2):
        alone = processor(text=[questions[i]], media=[media[i]], return_tensors="pt")
        alone = {k: (v.cuda() if isinstance(v, torch.Tensor) else v) for k, v in alone.items()}
        with torch.no_grad():
            single = processor.decode_answers(
                gpu_model.generate(**alone, max_new_tokens=8, do_sample=False), alone
            )
        same = single[0] == answers[i]
        ok &= same
        print(f"greedy sample {i}: batched {answers[i]!r} alone {single[0]!r} {'ok' if same else 'FAIL'}")

    for dtype in (torch.bfloat16, torch.float16):
        half = copy.deepcopy(model).cuda().to_mixed_precision(dtype)
        with torch.no_grad():
            out = half(**gpu_inputs)
            gen = half.generate(**prompts, max_new_tokens=4, do_sample=False)
        finite = bool(torch.isfinite(out.loss)) and bool(torch.isfinite(out.logits).all())
        ok &= finite
        print(
            f"{str(dtype)[6:]:9s} mixed precision: loss {out.loss.item():.4f} (float32 {cpu.loss.item():.4f}), "
            f"generated {tuple(gen.shape)} {'ok' if finite else 'FAIL'}"
        )
    print("ALL OK" if ok else "SOME CHECKS FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
