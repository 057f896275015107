"""The Q-Former benchmark script runs end to end at small sizes (slow: it compiles flex and times many calls)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_bench_qformer_quick_prints_the_table():
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "packages/qformer/src"), os.environ.get("PYTHONPATH", "")]),
    }
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks/bench_qformer.py"), "--quick", "--repeats", "1"],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    table = [line for line in done.stdout.splitlines() if line.startswith("| ")]
    assert table[0].startswith("| item | ours | peer | ratio |")
    for group in (
        "Q-Former fwd",
        "block-causal attention",
        "mixed lengths",
        "overlap stride 5",
        "peak memory",
    ):
        assert any(group in line for line in table), group
