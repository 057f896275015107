"""The AVEB-mini benchmark scripts' argument handling and resumed runs (no training: every run is already done)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _row(variant: str, **extra: float) -> dict:
    return {"variant": variant, "seed": 0, "seconds": 1.0, "accuracy": 0.5, "accuracy_pitch": 0.5, **extra}


@pytest.fixture
def ablations(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import aveb_ablations

    return aveb_ablations


def test_resumed_run_plots_every_variant_in_results_not_only_this_calls(ablations, tmp_path, monkeypatch):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train.jsonl").write_text("")
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.json").write_text(json.dumps([_row("favor"), _row("no_sync")]))
    plotted: list[list[str]] = []
    monkeypatch.setattr(ablations, "plot", lambda out, names: plotted.append(list(names)))
    monkeypatch.setattr(
        sys,
        "argv",
        ["x", "--data", str(tmp_path / "data"), "--out", str(out), "--seeds", "0", "--variants", "favor"],
    )
    ablations.main()
    assert plotted == [["favor", "no_sync"]]
    assert "| no_sync | 1 |" in (out / "table.md").read_text()


def test_resumed_run_at_another_budget_is_refused(ablations, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.json").write_text(json.dumps([_row("favor", steps=3000, learning_rate=1e-3)]))
    monkeypatch.setattr(
        sys, "argv", ["x", "--data", str(tmp_path / "missing"), "--out", str(out), "--steps", "6000"]
    )
    with pytest.raises(SystemExit) as exit_info:
        ablations.main()
    assert exit_info.value.code == 2
    assert "steps [3000], not 6000" in capsys.readouterr().err
    assert not (tmp_path / "missing").exists()  # refused before generating any data


@pytest.mark.parametrize("examples", ["0", "-5"])
def test_query_similarity_refuses_a_clip_count_below_one(tmp_path, examples):
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks/aveb_query_similarity.py"),
            "--data",
            str(tmp_path / "test.jsonl"),
            "--examples",
            examples,
            "favor=run",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2
    assert f"--examples: expected at least 1 clip, got {examples}" in done.stderr
