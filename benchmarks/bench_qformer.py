"""Causal Q-Former CPU speed: attention backends against eager, and the whole model against transformers' BLIP-2.

Measured in one run, same inputs, same thread count, median of ``--repeats`` forward passes (no grad, eval):

1. ``sdpa / eager``: our model with ``attention_backend="sdpa"`` against the plain reference math (ratio < 1 =
   SDPA faster), at the released sizes (H 768, D 1536, 12 heads, windows of 10 frames x 32 tokens).
2. ``ours / Blip2QFormerModel``: transformers' ``Blip2QFormerModel`` (the named peer) with the same layer count and
   sizes runs on the same windows (as a batch of (windows, 320, D) sequences). Ours is loaded from it with
   ``from_blip2_qformer`` (``causal=False``, same arithmetic, outputs checked equal) and also shown with the
   released causal module switched on (its extra cost).
3. ``torch.compile`` friendliness: graph breaks reported by ``torch._dynamo.explain`` on a tiny model.

    python benchmarks/bench_qformer.py [--videos 2] [--frames 20] [--repeats 5] [--threads 0]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from favor_qformer import CausalQFormer, CausalQFormerConfig


def _paired_median_seconds(first, second, repeats: int) -> tuple[float, float]:
    """Median seconds of two callables timed alternately, so load from other processes hits both alike."""
    first(), second()  # warm-up
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeats):
        for fn, bucket in ((first, times[0]), (second, times[1])):
            start = time.perf_counter()
            fn()
            bucket.append(time.perf_counter() - start)
    return statistics.median(times[0]), statistics.median(times[1])


def _forward(model: CausalQFormer, features: torch.Tensor):
    def run():
        with torch.no_grad():
            return model(features).tokens

    return run


def _graph_breaks() -> str:
    try:
        import torch._dynamo as dynamo
    except Exception as error:  # pragma: no cover - torch without dynamo
        return f"torch._dynamo unavailable ({error})"
    config = CausalQFormerConfig(
        hidden_size=32,
        num_heads=2,
        intermediate_size=64,
        num_queries=4,
        encoder_hidden_size=24,
        causal_num_heads=2,
        window_size=3,
        window_stride=3,
        tokens_per_frame=4,
        attention_backend="sdpa",
        check_finite=False,
    )
    model = CausalQFormer(config).eval()
    features = torch.randn(2, 7, 4, 24)
    try:
        explanation = dynamo.explain(model)(features)
    except Exception as error:
        return f"dynamo.explain failed: {type(error).__name__}: {error}"
    reasons = sorted({str(getattr(b, "reason", b)).splitlines()[0][:120] for b in explanation.break_reasons})
    lines = [f"graphs {explanation.graph_count}, graph breaks {explanation.graph_break_count}"]
    lines += [f"    break: {reason}" for reason in reasons]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=2)
    parser.add_argument("--frames", type=int, default=20, help="frames per video (windows of 10)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = CausalQFormerConfig(attention_backend="eager", check_finite=False)  # released sizes
    features = torch.randn(args.videos, args.frames, config.tokens_per_frame, config.encoder_hidden_size)
    print(
        f"favor_qformer CPU benchmark: {args.videos} videos x {args.frames} frames x {config.tokens_per_frame} tokens x "
        f"{config.encoder_hidden_size}, H={config.hidden_size}, {config.num_layers} layers, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, median of {args.repeats}, pairs timed alternately"
    )

    model = CausalQFormer(config).eval()
    sdpa_model = CausalQFormer(
        CausalQFormerConfig(**{**config.to_dict(), "attention_backend": "sdpa"})
    ).eval()
    sdpa_model.load_state_dict(model.state_dict())
    eager, sdpa = _paired_median_seconds(
        _forward(model, features), _forward(sdpa_model, features), args.repeats
    )
    print(f"  causal Q-Former eager  {eager * 1e3:9.1f} ms")
    print(f"  causal Q-Former sdpa   {sdpa * 1e3:9.1f} ms")
    print(f"  ratio sdpa/eager       {sdpa / eager:9.3f}  (< 1: sdpa faster)")

    try:
        import transformers
    except ImportError:
        print("  transformers not installed: skipping the Blip2QFormerModel comparison")
    else:
        blip_config = transformers.Blip2QFormerConfig(
            hidden_size=config.hidden_size,
            num_hidden_layers=config.num_layers,
            num_attention_heads=config.num_heads,
            intermediate_size=config.intermediate_size,
            encoder_hidden_size=config.encoder_hidden_size,
            cross_attention_frequency=1,
        )
        blip = transformers.Blip2QFormerModel(blip_config).eval()
        query_tokens = torch.randn(1, config.num_queries, config.hidden_size) * 0.02
        windows = config.window_size
        ours = CausalQFormer.from_blip2_qformer(
            blip,
            query_tokens,
            window_size=windows,
            tokens_per_frame=config.tokens_per_frame,
            attention_backend="sdpa",
            check_finite=False,
        ).eval()
        usable = args.frames // windows * windows  # whole windows only, so both see identical sequences
        feats = features[:, :usable]
        flat = feats.reshape(args.videos * (usable // windows), windows * config.tokens_per_frame, -1)

        def run_blip():
            with torch.no_grad():
                return blip(
                    query_embeds=query_tokens.expand(flat.shape[0], -1, -1), encoder_hidden_states=flat
                ).last_hidden_state

        with torch.no_grad():
            diff = (
                (ours(feats).tokens.reshape(flat.shape[0], config.num_queries, -1) - run_blip())
                .abs()
                .max()
                .item()
            )
        peer, mine = _paired_median_seconds(run_blip, _forward(ours, feats), args.repeats)
        peer_again, causal = _paired_median_seconds(run_blip, _forward(sdpa_model, feats), args.repeats)
        print(
            f"  Blip2QFormerModel (transformers {transformers.__version__}, {flat.shape[0]} windows) {peer * 1e3:9.1f} ms"
        )
        print(
            f"  ours, from_blip2_qformer (causal off)   {mine * 1e3:9.1f} ms   max |diff| vs peer {diff:.2e}"
        )
        print(f"  ours, released causal module on         {causal * 1e3:9.1f} ms")
        print(
            f"  ratio ours/Blip2QFormerModel            {mine / peer:9.3f}  (same arithmetic; < 1: ours faster)"
        )
        print(
            f"  ratio ours causal/Blip2QFormerModel     {causal / peer_again:9.3f}  (includes the causal module's extra work)"
        )

    print("  torch.compile (dynamo.explain, tiny model, sdpa, check_finite=False):")
    print("    " + _graph_breaks().replace("\n", "\n    "))


if __name__ == "__main__":
    main()
