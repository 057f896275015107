"""AVEB-mini ablations at equal training budget over several seeds (``nox -s aveb``; results in docs/results.md).

Every variant is the ``aveb-tiny`` recipe with one change, trained with the same data, steps, batch size and
learning rate by `favor_llm.trainer.run_training` (one frozen-feature cache shared by all: the variants below change
only what acts after the frozen encoders, so their features are computed once), then scored on the test split per
task with the teacher-forced exact match (equal to greedy generation's, see docs/training.md).

    python benchmarks/aveb_ablations.py --data aveb --out ablations --seeds 0 1 2 --steps 3000

Writes ``OUT/results.json`` (every run's per-task accuracy), ``OUT/table.md`` (mean and spread over seeds) and, when
matplotlib is installed, ``OUT/loss_curves.png`` (training answer cross-entropy of each variant, seed 0) and
``OUT/query_similarity.png`` (the paper's Figure 5: query cosine similarities of the seed-0 models trained with
diversity weights 0, 0.01, 0.1 and 1; numbers in ``OUT/query_similarity.json``).
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import time
from pathlib import Path
from typing import Any

#: variant name -> `FavorConfig` overrides of the recipe (``qformer_config`` entries are merged into the recipe's).
VARIANTS: dict[str, dict[str, Any]] = {
    "favor": {},
    # (a) no synchronisation: separate video and audio Q-Formers, their tokens as two blocks (released code without
    # early_align, Video-LLaMA style). It gets twice the AV tokens and a second Q-Former: more capacity, not less.
    "no_sync": {"av_fusion": "separate"},
    "no_causal": {"qformer_config": {"causal": False}},
    "no_diversity": {"diversity_loss_weight": 0.0},
    "diversity_0.1": {"diversity_loss_weight": 0.1},
    "diversity_1": {"diversity_loss_weight": 1.0},
    "window_1": {"qformer_config": {"window_size": 1, "window_stride": 1}},
    "window_5": {"qformer_config": {"window_size": 5, "window_stride": 5}},
    # AVEB-mini clips have 8 frames at 2 fps: a window of 8 (or the paper's 10) is the whole clip.
    "window_8": {"qformer_config": {"window_size": 8, "window_stride": 8}},
    # Frame rates at equal windows in seconds (2 s) and so equal AV tokens per clip (2 windows x 4 queries).
    "fps_1": {"fps": 1.0, "qformer_config": {"window_size": 2, "window_stride": 2}},
    "fps_4": {"fps": 4.0, "qformer_config": {"window_size": 8, "window_stride": 8}},
}


def run_variant(name: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    from favor_llm.trainer import TrainConfig, run_training

    out = Path(args.out) / f"{name}-seed{seed}"
    config = TrainConfig(
        output_dir=str(out),
        train_file=str(Path(args.data) / "train.jsonl"),
        test_file=str(Path(args.data) / "test.jsonl"),
        model="aveb-tiny",
        model_overrides=VARIANTS[name],
        tokenizer="aveb",
        seed=seed,
        max_steps=args.steps,
        per_device_train_batch_size=16,
        learning_rate=args.learning_rate,
        eval_steps=0,
        save_steps=0,
        logging_steps=25,
        resume="never",
        feature_cache=args.cache or str(Path(args.out) / "feature_cache"),
        threads=1,
    )
    start = time.perf_counter()
    result = run_training(config)
    metrics = {k.removeprefix("test_"): v for k, v in result.test_metrics.items() if "accuracy" in k}
    return {
        "variant": name,
        "seed": seed,
        "steps": args.steps,
        "learning_rate": args.learning_rate,
        "seconds": time.perf_counter() - start,
        **metrics,
    }


def table(rows: list[dict[str, Any]]) -> str:
    tasks = sorted({k.removeprefix("accuracy_") for r in rows for k in r if k.startswith("accuracy_")})
    lines = ["| variant | seeds | overall | " + " | ".join(tasks) + " |", "|---" * (len(tasks) + 3) + "|"]
    for name in dict.fromkeys(r["variant"] for r in rows):
        runs = [r for r in rows if r["variant"] == name]

        def cell(key: str, runs: list[dict[str, Any]] = runs) -> str:
            values = [100 * r[key] for r in runs if key in r]
            spread = statistics.pstdev(values) if len(values) > 1 else 0.0
            return f"{statistics.mean(values):.1f} ± {spread:.1f}"

        cells = [cell("accuracy")] + [cell(f"accuracy_{t}") for t in tasks]
        lines.append(f"| {name} | {len(runs)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(out: Path, names: list[str]) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.set_prop_cycle(
        color=[plt.cm.tab20(i) for i in range(0, 20, 2)] + [plt.cm.tab20(i) for i in range(1, 20, 2)]
    )
    for name in names:
        path = out / f"{name}-seed0" / "metrics.csv"
        if not path.is_file():
            continue
        rows = [r for r in csv.DictReader(path.open()) if r["name"] == "lm_loss"]
        ax.plot([int(r["step"]) for r in rows], [float(r["value"]) for r in rows], label=name)
    ax.set_xlabel("step")
    ax.set_ylabel("answer cross-entropy (training)")
    ax.set_yscale("log")
    ax.legend(fontsize=8)
    fig.tight_layout()
    target = out / "loss_curves.png"
    fig.savefig(target, dpi=120)
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="aveb", help="AVEB-mini folder (generated with seed 0 if missing)")
    parser.add_argument("--out", default="ablations")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--cache", help="feature cache directory (default OUT/feature_cache)")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results_file = out / "results.json"
    rows = json.loads(results_file.read_text()) if results_file.is_file() else []
    # A resumed run only makes sense at the same budget: rows of another --steps / --learning-rate would be
    # averaged with the new ones into one table (rows written before these keys were recorded are accepted).
    for key, value in (("steps", args.steps), ("learning_rate", args.learning_rate)):
        other = sorted({r[key] for r in rows if key in r and r[key] != value})
        if other:
            parser.error(
                f"{results_file} holds runs with {key} {other}, not {value}: pass the same budget or another --out"
            )
    done = {(r["variant"], r["seed"]) for r in rows}
    if not (Path(args.data) / "train.jsonl").is_file():
        from favor_llm.aveb import generate_splits

        generate_splits(args.data, seed=0, train=1920, val=0, test=384)
    for seed in args.seeds:
        for name in args.variants:
            if (name, seed) in done:
                continue
            rows.append(run_variant(name, seed, args))
            results_file.write_text(
                json.dumps(rows, indent=2) + "\n"
            )  # partial results survive an interruption
            print(
                f"{name} seed {seed}: {100 * rows[-1]['accuracy']:.1f}% ({rows[-1]['seconds']:.0f} s)",
                flush=True,
            )
    (out / "table.md").write_text(table(rows) + "\n")
    print(table(rows))
    # Every variant in results.json, not only this call's --variants: a resumed run that adds one variant
    # would otherwise overwrite the figure with that variant's curve alone.
    curves = plot(out, list(dict.fromkeys(r["variant"] for r in rows)))
    if curves is not None:
        print(f"loss curves: {curves}")
    # The paper's Figure 5: query similarities with and without the diversity loss (seed-0 models).
    runs = {
        name: str(out / f"{name}-seed0" / "final")
        for name in ("no_diversity", "favor", "diversity_0.1", "diversity_1")
        if (out / f"{name}-seed0" / "final").is_dir()
    }
    if len(runs) > 1:
        from aveb_query_similarity import report

        report(runs, str(Path(args.data) / "test.jsonl"), out / "query_similarity.png")


if __name__ == "__main__":
    main()
