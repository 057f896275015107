"""`favor evaluate`: batched greedy answers on real AVEB-mini clips, exact-match accuracy per task that equals a hand
count of the predictions, the JSON layout, and the command line end to end on a saved tiny model."""

from __future__ import annotations

import json

import pytest
import torch

from favor_llm.aveb import generate, tokenizer
from favor_llm.dataset import FavorDataset
from favor_llm.evaluate import evaluate, format_table, normalize, score
from favor_llm.modeling import FavorModel
from favor_llm.testing import tiny_config, tiny_processor


@pytest.fixture(scope="module")
def aveb_tiny():
    """An untrained tiny FAVOR with the AVEB-mini tokenizer."""
    tok = tokenizer()
    config = tiny_config(tok)
    torch.manual_seed(0)
    return FavorModel(config).eval(), tiny_processor(config, tok)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    out = tmp_path_factory.mktemp("aveb")
    return generate(
        out, "test", num_examples=6, seed=11, tasks=["colour_end", "pitch", "av_match"], progress=False
    )


def _hand_count(results):
    rows = results["predictions"]
    by_task = {}
    for r in rows:
        by_task.setdefault(r["task"], []).append(r["prediction"].strip().lower() == r["answer"].lower())
    return sum(sum(v) for v in by_task.values()) / len(rows), {t: sum(v) / len(v) for t, v in by_task.items()}


def test_accuracy_equals_a_hand_count(aveb_tiny, clips, tmp_path):
    model, processor = aveb_tiny
    first = evaluate(model, processor, FavorDataset(clips), batch_size=4, max_new_tokens=3, progress=False)
    assert set(first) == {"overall", "n", "tasks", "predictions"}
    assert first["n"] == 6 and set(first["tasks"]) == {"colour_end", "pitch", "av_match"}
    assert all(t["n"] == 2 for t in first["tasks"].values())
    # Batching (left padding) does not change the greedy answers.
    single = evaluate(model, processor, clips, batch_size=1, max_new_tokens=3, progress=False)
    assert [p["prediction"] for p in single["predictions"]] == [p["prediction"] for p in first["predictions"]]

    # Make the answers of examples 0, 1, 2 equal to what the model says (in another case, with punctuation), so the
    # accuracy is known whatever the untrained model predicts: 3 right, and 3 wrong by construction.
    rows = [json.loads(line) for line in clips.read_text().splitlines()]
    for i, row in enumerate(rows):
        said = first["predictions"][i]["prediction"]
        row["answer"] = f" {said.upper()}! " if i < 3 else f"not {said}"
        row["media"] = str(clips.parent / row["media"])
    data = tmp_path / "known.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    known = evaluate(model, processor, data, batch_size=4, max_new_tokens=3, progress=False)
    assert [p["correct"] for p in known["predictions"]] == [True] * 3 + [False] * 3
    assert known["overall"] == pytest.approx(0.5)
    overall, per_task = _hand_count(first)
    assert first["overall"] == pytest.approx(overall)
    assert {t: r["accuracy"] for t, r in first["tasks"].items()} == pytest.approx(per_task)
    assert [p["line"] for p in known["predictions"]] == [1, 2, 3, 4, 5, 6]
    assert model.training is False


def test_score_and_normalize():
    items = [
        {"text": "q1", "answer": "Red", "task": "a"},
        {"text": "q2", "answer": "yes", "task": "a"},
        {"text": "q3", "answer": "it barks twice", "task": "b"},
        {"text": "q4", "answer": "low"},
    ]
    results = score(items, ["red.", "no", "  It  barks, twice!", "low"])
    assert [p["correct"] for p in results["predictions"]] == [True, False, True, True]
    assert results["overall"] == 0.75 and results["n"] == 4
    assert results["tasks"] == {
        "a": {"accuracy": 0.5, "n": 2},
        "b": {"accuracy": 1.0, "n": 1},
        "default": {"accuracy": 1.0, "n": 1},
    }
    assert normalize("  Don't STOP… ") == "don t stop"
    table = format_table(results)
    assert "overall" in table and "75.0%" in table and "50.0%" in table
    with pytest.raises(ValueError, match="one per item"):
        score(items, ["red"])


def test_bad_arguments(aveb_tiny, clips):
    model, processor = aveb_tiny
    with pytest.raises(ValueError, match="batch_size"):
        evaluate(model, processor, clips, batch_size=0)
    with pytest.raises(ValueError, match="dataset\\[0\\]"):
        evaluate(model, processor, [{"question": "q"}])


def test_cli_end_to_end(aveb_tiny, clips, tmp_path, capsys):
    from favor_llm.cli import main

    model, processor = aveb_tiny
    checkpoint = tmp_path / "model"
    model.save_frozen_components(tmp_path / "frozen")  # a delta checkpoint names where its frozen parts are
    model.save_pretrained(checkpoint)
    processor.save_pretrained(checkpoint)
    out = tmp_path / "results" / "r.json"
    args = [
        "evaluate",
        "--model",
        str(checkpoint),
        "--data",
        str(clips),
        "--out",
        str(out),
        "--batch-size",
        "3",
    ]
    assert main([*args, "--max-new-tokens", "3"]) == 0
    printed = capsys.readouterr().out
    results = json.loads(out.read_text())
    assert set(results) == {"overall", "n", "tasks", "predictions"}
    assert isinstance(results["overall"], float) and results["n"] == 6
    assert all(set(v) == {"accuracy", "n"} for v in results["tasks"].values())
    assert results["overall"] == pytest.approx(_hand_count(results)[0])
    for task in results["tasks"]:
        assert task in printed
    # The saved model answers as the in-memory one does.
    direct = evaluate(model, processor, clips, batch_size=3, max_new_tokens=3, progress=False)
    assert [p["prediction"] for p in results["predictions"]] == [
        p["prediction"] for p in direct["predictions"]
    ]

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"media": "nope.mp4", "question": "q", "answer": "a"}\n')
    assert main(["evaluate", "--model", str(checkpoint), "--data", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("favor evaluate: error:") and "bad.jsonl:1" in err
    assert main(["evaluate", "--model", str(tmp_path), "--data", str(clips)]) == 2
