"""The CPU table's Q-Former rows on a GPU in bfloat16, with CUDA events (run by hand on a CUDA machine; CI has none).

One call of at most about 5 minutes:

1. a bf16 matmul peak measured in the same run (8192^3 ``torch.mm``), against which every row's achieved TFLOP/s is
   a percentage;
2. every backend's numerics against eager float32 on the GPU (max error relative to the output scale), and which
   backend really ran; whether the xformers kernels ran, and the reason when not;
3. Q-Former forward and forward+backward at the released shape against transformers' ``Blip2QFormerModel`` (equal
   work: causal module off), and with the released causal module on, per backend;
4. the block-causal attention alone (windows x 12 heads x 320 tokens x 128): flex per block size against SDPA with
   the dense mask and unmasked SDPA.

    PYTHONPATH=packages/qformer/src python benchmarks/gpu.py [--windows 960] [--repeats 20]

Targets (issue 8): Q-Former bf16 at the released shape >= 1.3x the peer and >= 60% of the matmul peak; block-causal
attention <= 0.8x the time of unmasked SDPA. Exit status 1 when a numerics bound fails.
"""

from __future__ import annotations

import argparse
import copy
import logging
import sys

import torch

from common import count_flops, cuda_ms
from favor_qformer import CausalQFormer, CausalQFormerConfig
from favor_qformer.backends import BACKENDS, AttentionInputs, flex, select_backend, xformers_failure
from favor_qformer.masks import BlockCausalPattern

BACKEND_NAMES = ("eager", "sdpa", "xformers", "flex", "auto")


def matmul_peak(repeats: int) -> float:
    """Achieved bf16 TFLOP/s of a large matmul: the ceiling the other rows are compared with."""
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    took = cuda_ms(lambda: torch.mm(a, b), repeats)
    return 2 * 8192**3 / (took / 1e3) / 1e12


def ran(name: str, inputs: AttentionInputs) -> str:
    try:
        return select_backend(name, inputs).name
    except ValueError as error:
        return f"refused ({error})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, default=960, help="windows in the attention rows")
    parser.add_argument("--model-windows", type=int, default=96, help="windows in the Q-Former rows")
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="LOG %(name)s %(levelname)s: %(message)s")
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to run")
        return 0
    ok = True
    dtype = torch.bfloat16
    print(
        f"torch {torch.__version__}, {torch.cuda.get_device_name()}, bf16, CUDA events, median of {args.repeats}"
    )
    peak = matmul_peak(args.repeats)
    print(f"matmul peak (8192^3 bf16 mm): {peak:.0f} TFLOP/s")
    reason = xformers_failure(torch.device("cuda"), dtype)
    print(f"xformers kernels: {'ran' if reason is None else 'did not run: ' + reason}")

    # --- numerics: every backend against eager float32 on the GPU ------------------------------------------
    torch.manual_seed(0)
    config = CausalQFormerConfig(dropout=0.0, check_finite=False)  # released sizes, causal module on
    base = CausalQFormer(config).cuda().eval()
    features = torch.randn(4, 47, 32, 1536, device="cuda")
    frame_mask = (
        torch.arange(47, device="cuda")[None, :] < torch.tensor([47, 40, 23, 5], device="cuda")[:, None]
    )
    with torch.no_grad():
        want = base(features, frame_mask).tokens
    scale = want.abs().max().item()
    probe = torch.zeros(8, 12, 320, 128, device="cuda", dtype=dtype)
    pattern = BlockCausalPattern(10, 32, "future")
    causal_call = AttentionInputs(probe, probe, probe, mask=pattern.dense("cuda"), pattern=pattern)
    print(f"{'backend':9s} {'causal module ran':18s} {'rel err bf16':>12s}")
    for name in BACKEND_NAMES:
        model = CausalQFormer(CausalQFormerConfig(**{**config.to_dict(), "attention_backend": name}))
        model.load_state_dict(base.state_dict())
        model = model.cuda().to(dtype).eval()
        with torch.no_grad():
            got = model(features.to(dtype), frame_mask).tokens.float()
        rel = (got - want).abs().max().item() / scale
        good = rel <= 5e-2 and bool(torch.isfinite(got).all())
        ok &= good
        print(f"{name:9s} {ran(name, causal_call):18s} {rel:12.2e} {'' if good else 'FAIL'}")

    # --- the Q-Former against the peer ---------------------------------------------------------------------
    import transformers

    blip = (
        transformers.Blip2QFormerModel(
            transformers.Blip2QFormerConfig(
                hidden_size=768,
                num_hidden_layers=2,
                num_attention_heads=12,
                intermediate_size=3072,
                encoder_hidden_size=1536,
                cross_attention_frequency=1,
                hidden_dropout_prob=0.0,
                attention_probs_dropout_prob=0.0,
            )
        )
        .cuda()
        .to(dtype)
        .eval()
    )
    blip32 = copy.deepcopy(blip).float()  # from_blip2_qformer reads float32 weights; the models are then cast
    query = (torch.randn(1, 32, 768, device="cuda") * 0.02).to(dtype)
    windows = args.model_windows
    feats = torch.randn(1, windows * 10, 32, 1536, device="cuda", dtype=dtype)
    flat = feats.reshape(windows, 320, 1536)

    def peer():
        return blip(query_embeds=query.expand(windows, -1, -1), encoder_hidden_states=flat).last_hidden_state

    def step(model_call, params):
        def run():
            for p in params:
                p.grad = None
            model_call().float().sum().backward()

        return run

    common = dict(window_size=10, tokens_per_frame=32, check_finite=False)
    released = dict(causal=True, input_layernorm=True, position_embedding="window")
    with torch.no_grad():
        peer_fwd = cuda_ms(peer, args.repeats)
    peer_bwd = cuda_ms(step(peer, list(blip.parameters())), args.repeats)
    with torch.no_grad():
        peer_flops = count_flops(peer)
    peer_rate = peer_flops / (peer_fwd / 1e3) / 1e12
    print(
        f"\nQ-Former, {windows} windows x 320 x 1536, bf16: peer Blip2QFormerModel fwd {peer_fwd:.2f} ms, "
        f"fwd+bwd {peer_bwd:.2f} ms, {peer_rate:.1f} TFLOP/s ({100 * peer_rate / peak:.0f}% of peak)"
    )
    print(
        f"{'row':34s} {'fwd ms':>8s} {'x peer':>7s} {'TFLOP/s':>8s} {'% peak':>7s} {'fwd+bwd ms':>10s} {'x peer':>7s}"
    )
    for label, extra in (("causal off (equal work)", {}), ("released causal module on", released)):
        for name in BACKEND_NAMES:
            model = (
                CausalQFormer.from_blip2_qformer(
                    blip32, query.float(), attention_backend=name, **extra, **common
                )
                .cuda()
                .to(dtype)
                .eval()
            )

            def fwd(model=model):
                return model(feats).tokens

            with torch.no_grad():
                took = cuda_ms(fwd, args.repeats)
            try:
                with torch.no_grad():
                    flops = count_flops(fwd)
            except Exception:  # a compiled kernel the counter cannot enter
                flops = 0
            train = cuda_ms(step(fwd, list(model.parameters())), max(3, args.repeats // 4))
            rate = flops / (took / 1e3) / 1e12 if flops else float("nan")
            print(
                f"{label + ', ' + name:34s} {took:8.2f} {peer_fwd / took:7.2f} {rate:8.1f} {100 * rate / peak:6.0f}% "
                f"{train:10.2f} {peer_bwd / train:7.2f}"
            )

    # --- block-causal attention alone ----------------------------------------------------------------------
    q, k, v = (torch.randn(args.windows, 12, 320, 128, device="cuda", dtype=dtype) for _ in "qkv")
    inputs = AttentionInputs(q, k, v, mask=pattern.dense("cuda"), pattern=pattern)
    plain = AttentionInputs(q, k, v)
    unmasked = cuda_ms(lambda: BACKENDS["sdpa"](plain), args.repeats)
    masked = cuda_ms(lambda: BACKENDS["sdpa"](inputs), args.repeats)
    print(
        f"\nblock-causal attention {args.windows} x 12 x 320 x 128 bf16 (55% of pairs): SDPA unmasked {unmasked:.2f} ms, "
        f"SDPA dense mask {masked:.2f} ms ({masked / unmasked:.2f}x)"
    )
    for block in (32, 64, 128):
        flex.BLOCK_TOKENS["cuda"] = block
        flex.reset_flex_probe_cache()
        try:
            took = cuda_ms(lambda: BACKENDS["flex"](inputs), args.repeats)
            print(
                f"  flex, {block}-token blocks: {took:.2f} ms = {took / unmasked:.2f}x unmasked SDPA "
                f"(target <= 0.8x: {'met' if took / unmasked <= 0.8 else 'NOT met'})"
            )
        except Exception as error:
            print(
                f"  flex, {block}-token blocks: failed: {type(error).__name__}: {str(error).splitlines()[0][:200]}"
            )
    flex.BLOCK_TOKENS["cuda"] = 128
    if reason is None:
        took = cuda_ms(lambda: BACKENDS["xformers"](inputs), args.repeats)
        print(f"  xformers, dense bias: {took:.2f} ms = {took / unmasked:.2f}x unmasked SDPA")
    print("ALL OK" if ok else "SOME CHECKS FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
