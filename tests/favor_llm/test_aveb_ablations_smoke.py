"""The AVEB-mini ablation script runs end to end on a few clips (slow: it trains three tiny models)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_ablations_write_the_table_and_the_query_similarity_matrices(tmp_path):
    from favor_llm.aveb import generate_splits

    generate_splits(tmp_path / "aveb", seed=3, train=16, val=0, test=16)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "benchmarks"), os.environ.get("PYTHONPATH", "")]),
    }
    out = tmp_path / "out"
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks/aveb_ablations.py"),
            "--data",
            str(tmp_path / "aveb"),
            "--out",
            str(out),
            "--seeds",
            "0",
            "--steps",
            "2",
            "--variants",
            "favor",
            "no_sync",
            "no_diversity",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = json.loads((out / "results.json").read_text())
    assert [r["variant"] for r in rows] == ["favor", "no_sync", "no_diversity"]
    assert all(0.0 <= r["accuracy"] <= 1.0 for r in rows)
    assert "| no_sync | 1 |" in (out / "table.md").read_text()
    matrices = json.loads((out / "query_similarity.json").read_text())
    assert sorted(matrices) == ["favor", "no_diversity"]
    for entry in matrices.values():
        q = len(entry["matrix"])
        assert q == 4 and all(abs(entry["matrix"][i][i] - 1.0) < 1e-5 for i in range(q))
        assert entry["windows"] == 2 * 16  # two windows per 4 s clip
