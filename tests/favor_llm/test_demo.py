"""``favor demo``: the shipped AVEB-mini checkpoint answers fresh clips; ``--train`` retrains (a few steps here)."""

from __future__ import annotations

import pytest

from favor_llm import FavorModel
from favor_llm.cli import main
from favor_llm.demo import DEMO_MODEL_DIR, run_demo, ship_checkpoint


def test_shipped_checkpoint_is_small_documented_and_loads():
    files = [p for p in DEMO_MODEL_DIR.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) < 5 * 2**20  # a few MB at most
    notes = (DEMO_MODEL_DIR / "TRAINING.md").read_text()
    assert "favor train" in notes and "seed" in notes and "favor aveb generate" in notes
    model = FavorModel.from_pretrained(DEMO_MODEL_DIR)  # frozen parts embedded: loads from the package
    assert not model.training


def test_shipping_a_checkpoint_replaces_the_folder_in_one_atomic_save(fresh_tiny, tmp_path):
    model, processor = fresh_tiny
    model.save_pretrained(tmp_path / "final")
    processor.save_pretrained(tmp_path / "final")
    target = tmp_path / "demo_model"
    target.mkdir()
    (target / "old-shard.safetensors").write_text("from an earlier model")
    assert ship_checkpoint(tmp_path / "final", target, notes="trained so") == target
    assert (target / "TRAINING.md").read_text() == "trained so"
    assert not (target / "old-shard.safetensors").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no staging folder left
    assert FavorModel.from_pretrained(target).config.use_lora is False  # merged, frozen parts embedded
    assert (target / "text").is_dir() and (target / "processor_config.json").is_file()


def test_demo_answers_fresh_clips_better_than_chance():
    """32 clips from a seed never used in training (4 per task): the shipped model is far above the majority
    baseline (at most 50% on any task, 33% overall)."""
    lines: list[str] = []
    result = run_demo(examples=32, seed=424242, echo=lines.append, progress=False)
    text = "\n".join(lines)
    assert result.results["n"] == 32 and not result.trained
    assert result.results["overall"] >= 0.6, text
    assert "truth:" in text and "overall" in text and "demo finished in" in text
    assert len(result.results["tasks"]) == 8


def test_demo_train_retrains_from_scratch(tmp_path):
    lines: list[str] = []
    result = run_demo(
        train=True,
        train_examples=16,
        steps=3,
        examples=8,
        seed=7,
        out=tmp_path,
        echo=lines.append,
        progress=False,
    )
    assert result.trained and result.model_dir is not None and result.model_dir.is_relative_to(tmp_path)
    assert result.train_seconds > 0 and result.results["n"] == 8
    assert any("trained from scratch" in line for line in lines)
    assert (tmp_path / "run" / "metrics.csv").is_file()


def test_demo_command_and_bad_arguments(capsys):
    assert main(["demo", "--examples", "8", "--seed", "3"]) == 0
    out = capsys.readouterr().out
    assert "[3/3]" in out and "overall" in out
    assert main(["demo", "--examples", "0"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.strip().startswith("favor demo: error: argument --examples")
    with pytest.raises(ValueError, match="examples: expected an int >= 1"):
        run_demo(examples=0)
