"""GPU numerics and speed of the causal Q-Former's attention backends (run by hand on a CUDA machine).

For each backend (eager, sdpa, xformers, auto) and dtype (float32, bfloat16, float16) the model runs on CUDA and its
tokens are compared with eager float32 on CUDA (max abs error, and max error relative to the largest output);
each is timed (CUDA events, median). The backend that actually ran is printed; when xformers cannot run (not
installed, or built for another torch/CUDA) the one fallback log line of ``favor_qformer`` shows up here.
With ``--reference-dir`` the released-FAVOR golden files are also checked on the GPU in float32.

    PYTHONPATH=packages/qformer/src python benchmarks/gpu_check_qformer.py [--videos 8] [--frames 60] [--reference-dir DIR]

Exit status 1 when an error is above its bound (float32 1e-4, half 5e-2 relative to the output scale).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import torch

from common import cuda_ms
from favor_qformer import CausalQFormer, CausalQFormerConfig, diversity_loss
from favor_qformer.backends import AttentionInputs, refusal_reasons, select_backend

BOUNDS = {torch.float32: 1e-4, torch.bfloat16: 5e-2, torch.float16: 5e-2}


def _which_backend(name: str, dtype: torch.dtype) -> str:
    probe = torch.zeros(2, 4, 16, 32, device="cuda", dtype=dtype)
    try:
        return select_backend(name, AttentionInputs(probe, probe, probe)).name
    except ValueError as error:
        return f"refused ({error})"


def _golden(reference_dir: Path) -> bool:
    from safetensors.torch import load_file

    ok = True
    for name in ("favor_official_tiny", "favor_official_tiny_unitln"):
        path = reference_dir / f"{name}.safetensors"
        if not path.is_file():
            print(f"  golden {name}: missing {path}")
            continue
        ref = load_file(str(path))
        state = {
            k.removeprefix("official_state_dict."): v
            for k, v in ref.items()
            if k.startswith("official_state_dict.")
        }
        features = ref["synced_features"].reshape(2, 23, 32, 96).cuda()
        for backend in ("eager", "sdpa", "auto"):
            model = (
                CausalQFormer.from_favor_official(state, num_heads=4, attention_backend=backend).cuda().eval()
            )
            with torch.no_grad():
                out = model(features)
            err = (out.tokens.reshape(6, 32, 64).cpu() - ref["qformer_output_causal"]).abs().max().item()
            div = abs(
                diversity_loss(out.tokens, out.window_mask).item() - ref["diversity_loss_causal"].item()
            )
            good = err <= 1e-5 and div <= 1e-5
            ok &= good
            print(
                f"  golden {name:28s} {backend:6s} fp32 cuda: max|diff| tokens {err:.2e}, diversity {div:.2e} {'ok' if good else 'FAIL'}"
            )
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=8)
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--reference-dir", type=Path, default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="LOG %(name)s %(levelname)s: %(message)s")
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to check")
        return 0
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}")
    try:
        import xformers

        print(f"xformers {xformers.__version__} importable")
    except Exception as error:
        print(f"xformers not importable: {type(error).__name__}: {error}")
    ok = True
    if args.reference_dir is not None:
        ok &= _golden(args.reference_dir)

    torch.manual_seed(0)
    config = CausalQFormerConfig(attention_backend="eager", dropout=0.0)  # released sizes
    base = CausalQFormer(config).cuda().eval()
    with torch.no_grad():  # trained-like LayerNorms and biases, so errors are not hidden by tiny outputs
        for name, param in base.named_parameters():
            if "norm" in name and name.endswith("weight"):
                param.copy_(1 + 0.1 * torch.randn_like(param))
            elif name.endswith("bias"):
                param.copy_(0.1 * torch.randn_like(param))
    features = torch.randn(
        args.videos, args.frames, config.tokens_per_frame, config.encoder_hidden_size, device="cuda"
    )
    lengths = torch.linspace(args.frames, max(1, args.frames // 3), args.videos, device="cuda").round().long()
    frame_mask = (
        torch.arange(args.frames, device="cuda")[None, :] < lengths[:, None]
    )  # partial windows, padding
    with torch.no_grad():
        want = base(features, frame_mask).tokens
    scale = want.abs().max().item()
    print(
        f"reference: eager float32 on CUDA, {args.videos} videos x {args.frames} frames (lengths {lengths.tolist()}), |max| {scale:.3f}"
    )
    print(f"{'backend':9s} {'dtype':9s} {'ran':9s} {'max abs err':>12s} {'rel err':>9s} {'ms':>9s}")
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        for backend in ("eager", "sdpa", "xformers", "auto"):
            model = CausalQFormer(CausalQFormerConfig(**{**config.to_dict(), "attention_backend": backend}))
            model.load_state_dict(base.state_dict())
            model = model.cuda().to(dtype).eval()
            ran = _which_backend(backend, dtype)

            def run(model=model):
                with torch.no_grad():
                    return model(features, frame_mask).tokens

            got = run().float()
            err = (got - want).abs().max().item()
            rel = err / scale
            ms = cuda_ms(run, args.repeats, warmup=1)
            good = rel <= BOUNDS[dtype] and bool(torch.isfinite(got).all())
            ok &= good
            print(
                f"{backend:9s} {str(dtype)[6:]:9s} {ran:9s} {err:12.3e} {rel:9.2e} {ms:9.2f} {'' if good else 'FAIL'}"
            )
    # one bf16 training step with dropout and gradient checkpointing: gradients must be finite and reach every layer
    train = CausalQFormer(CausalQFormerConfig(attention_backend="auto", gradient_checkpointing=True))
    train.load_state_dict(base.state_dict())
    train = train.cuda().to(torch.bfloat16).train()
    out = train(features, frame_mask)
    (out.tokens.float().square().mean() + diversity_loss(out.tokens, out.window_mask)).backward()
    grads = [p.grad for p in train.parameters() if p.requires_grad]
    finite = all(g is not None and bool(torch.isfinite(g).all()) for g in grads)
    peak = torch.cuda.max_memory_allocated() / 2**30
    print(
        f"bf16 training step (dropout 0.1, gradient checkpointing): {len(grads)} grads, finite {finite}, peak {peak:.2f} GiB"
    )
    ok &= finite
    probe = torch.zeros(1, 1, 8, 8, device="cuda", dtype=torch.bfloat16)
    print(
        "xformers refusal reasons (bf16):", refusal_reasons(AttentionInputs(probe, probe, probe))["xformers"]
    )
    print("ALL OK" if ok else "SOME CHECKS FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
