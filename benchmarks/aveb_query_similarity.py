"""Query cosine-similarity matrices of trained AVEB-mini models (the paper's Figure 5).

For each trained model, the causal Q-Former's query tokens of every real window of the test clips give a ``(Q, Q)``
matrix of cosine similarities (`favor_qformer.query_similarity`, averaged over windows); its off-diagonal mean is the
diversity loss the model was (or was not) trained with (for an ``av_fusion="separate"`` model the video and audio
Q-Formers' windows are averaged together: each window's queries come from one of them). Called by ``aveb_ablations.py`` for the diversity variants,
or on its own:

    python benchmarks/aveb_query_similarity.py --data aveb/test.jsonl --out fig.png \
        favor=ablations/favor-seed0/final no_diversity=ablations/no_diversity-seed0/final
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def similarity_matrices(runs: dict[str, str], test_file: str, examples: int = 96) -> dict[str, Any]:
    """``{name: {"matrix": (Q, Q) list, "mean_off_diagonal": float, "windows": int}}`` over ``examples`` clips."""
    import torch

    from favor_llm import FavorModel, FavorProcessor
    from favor_llm.dataset import read_examples
    from favor_qformer import query_similarity

    if examples < 1:  # a negative count would slice off the last clips instead
        raise ValueError(f"examples: expected at least 1 clip, got {examples}")
    items = read_examples(test_file)[:examples]
    out: dict[str, Any] = {}
    for name, path in runs.items():
        model, processor = FavorModel.from_pretrained(path), FavorProcessor.from_pretrained(path)
        tokens = []
        with torch.no_grad():
            for start in range(0, len(items), 16):
                batch = items[start : start + 16]
                inputs = processor(text=[e.question for e in batch], media=[str(e.media) for e in batch])
                media = {k: v for k, v in inputs.items() if k not in ("input_ids", "attention_mask")}
                av = model.get_av_features(**media)  # av_tokens (B, W, Q, H), window_mask (B, W)
                tokens.append(av.av_tokens[av.window_mask])  # (Nw, Q, H)
        flat = torch.cat(tokens)
        matrix = query_similarity(flat)
        q = matrix.shape[0]
        off = ~torch.eye(q, dtype=torch.bool)
        out[name] = {
            "matrix": matrix.tolist(),
            "mean_off_diagonal": float(matrix[off].mean()),
            "windows": int(flat.shape[0]),
        }
    return out


def plot(matrices: dict[str, Any], target: Path) -> Path | None:
    """Side-by-side heat maps (one per model) with the mean off-diagonal similarity in each title."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, axes = plt.subplots(1, len(matrices), figsize=(3.2 * len(matrices), 3.2), squeeze=False)
    for i, (ax, (name, entry)) in enumerate(zip(axes[0], matrices.items())):
        image = ax.imshow(entry["matrix"], vmin=-1, vmax=1, cmap="RdBu_r")
        ax.set_title(f"{name}\nmean off-diag {entry['mean_off_diagonal']:.2f}", fontsize=9)
        ax.set_xlabel("query")
        if i == 0:
            ax.set_ylabel("query")
    fig.colorbar(image, ax=axes[0].tolist(), shrink=0.8, label="cosine similarity")
    fig.savefig(target, dpi=120, bbox_inches="tight")
    return target


def report(runs: dict[str, str], test_file: str, target: Path, examples: int = 96) -> dict[str, Any]:
    """`similarity_matrices`, written as ``target`` (PNG, when matplotlib is installed) and its ``.json``, one line
    printed per model; returns the matrices."""
    matrices = similarity_matrices(runs, test_file, examples)
    target.with_suffix(".json").write_text(json.dumps(matrices, indent=2) + "\n")
    for name, entry in matrices.items():
        print(
            f"{name}: mean off-diagonal cosine {entry['mean_off_diagonal']:.3f} over {entry['windows']} windows"
        )
    if plot(matrices, target) is not None:
        print(f"figure: {target}")
    return matrices


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="NAME=MODEL_DIR (a FavorModel.save_pretrained folder)")
    parser.add_argument("--data", required=True, help="test JSONL (AVEB-mini format)")
    parser.add_argument("--out", default="query_similarity.png")
    parser.add_argument("--examples", type=int, default=96)
    args = parser.parse_args()
    if args.examples < 1:
        parser.error(f"--examples: expected at least 1 clip, got {args.examples}")
    bad = [r for r in args.runs if "=" not in r]
    if bad:
        parser.error(f"runs: expected NAME=MODEL_DIR, got {bad[0]!r}")
    report(dict(r.split("=", 1) for r in args.runs), args.data, Path(args.out), args.examples)


if __name__ == "__main__":
    main()
