"""AVEB-mini generator: real MP4 files whose decoded frames and audio match the recorded ground truth, deterministic
seeds, disjoint splits, balanced answers, and honest cross-modal designs."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from favor_llm.aveb import COLOURS, TASKS, Scene, generate, generate_splits, majority_baselines, task_names
from favor_llm.aveb.scene import SLOT
from favor_llm.aveb.tasks import DURATION


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _meta(path: Path) -> list[dict]:
    return _rows(path.with_name(path.name.replace(".jsonl", ".meta.jsonl")))


def _nearest_colour(pixel: np.ndarray) -> str:
    names = list(COLOURS)
    return names[int(np.argmin([np.sum((pixel - np.array(COLOURS[n])) ** 2) for n in names]))]


def test_clips_decode_to_the_ground_truth(tmp_path):
    """Every 2 fps frame shows the scene's colour at that frame; the beeps are loud exactly in their frames."""
    from favor_avsync import load_media

    path = generate(tmp_path, "train", num_examples=len(TASKS), seed=3, progress=False)
    for row, meta in zip(_rows(path), _meta(path)):
        scene = Scene.from_dict(meta["scene"])
        clip = load_media(tmp_path / row["media"], fps=2.0, sample_rate=16000)
        assert clip.frames.shape == (8, 3, 64, 64)
        shown = [_nearest_colour(f[:, 32, 32].float().numpy()) for f in clip.frames]
        assert shown == [scene.colour_at(t * SLOT) for t in range(8)]
        loud = np.abs(clip.audio.numpy()).reshape(8, -1).max(axis=1) > 0.2
        assert np.flatnonzero(loud).tolist() == [round(b / SLOT) for b in scene.beeps]


def test_same_seed_same_files_other_seed_other_clips(tmp_path):
    a = generate(tmp_path / "a", "test", num_examples=8, seed=5, progress=False)
    b = generate(tmp_path / "b", "test", num_examples=8, seed=5, progress=False)
    c = generate(tmp_path / "c", "test", num_examples=8, seed=6, progress=False)
    assert a.read_text() == b.read_text()
    assert _meta(a) == _meta(b)
    assert [m["scene"] for m in _meta(a)] != [m["scene"] for m in _meta(c)]
    # The frames are decoded identically from the two runs (the encoder is deterministic too).
    assert (a.parent / "test" / "000000.mp4").read_bytes() == (b.parent / "test" / "000000.mp4").read_bytes()


def test_splits_use_disjoint_clip_seeds(tmp_path):
    paths = generate_splits(tmp_path, seed=0, train=16, val=8, test=8, progress=False)
    assert set(paths) == {"train", "val", "test"}
    seeds = {split: {tuple(m["clip_seed"]) for m in _meta(p)} for split, p in paths.items()}
    assert (
        not seeds["train"] & seeds["val"]
        and not seeds["train"] & seeds["test"]
        and not seeds["val"] & seeds["test"]
    )
    scenes = {split: [json.dumps(m["scene"]) for m in _meta(p)] for split, p in paths.items()}
    assert scenes["train"][:8] != scenes["val"]


def test_answers_are_balanced_per_task(tmp_path):
    """With a multiple of (tasks x answers) examples, every task's answers are dealt equally often."""
    path = generate(tmp_path, "train", num_examples=len(TASKS) * 12, seed=0, progress=False)
    rows = _rows(path)
    for task in TASKS:
        counts = Counter(r["answer"] for r in rows if r["task"] == task.name)
        assert set(counts) == set(task.answers)
        assert len(set(counts.values())) == 1, (task.name, counts)
    base = majority_baselines(path)
    assert {t: round(b["accuracy"], 4) for t, b in base.items()} == {
        t.name: round(1 / len(t.answers), 4) for t in TASKS
    }


def test_scenes_answer_their_questions():
    """The sampled scene makes the dealt answer true, for every task and answer (the answer is recomputed from the
    scene, not read back)."""
    rng = np.random.default_rng(0)
    slots = round(DURATION / SLOT)
    for task in TASKS:
        for answer in task.answers:
            for _ in range(20):
                scene, question, facts = task.sample(rng, answer, slots)
                assert _answer_from_scene(task.name, scene, question, facts) == answer


def _answer_from_scene(task: str, scene: Scene, question: str, facts: dict) -> str:
    if task == "colour_at":
        return scene.colour_at(float(question.split("second ")[1].rstrip("?")))
    if task == "colour_end":
        return scene.colour_at(scene.duration - 1e-3)
    if task == "shape":
        return scene.shape
    if task == "beep_count":
        return ("one", "two", "three", "four")[len(scene.beeps) - 1]
    if task == "pitch":
        return scene.pitch
    if task == "colour_at_beep":
        (beep,) = scene.beeps
        return scene.colour_at(beep)
    if task == "sound_order":
        ((beep,), (change,)) = scene.beeps, scene.changes
        assert abs(beep - change) == SLOT
        return "before" if beep < change else "after"
    assert task == "av_match"
    assert len(scene.beeps) == len(scene.changes)
    if scene.beeps == scene.changes:
        return "yes"
    if facts["mismatch"] == "shift":
        shifts = {round(b - c, 6) for b, c in zip(scene.beeps, scene.changes)}
        assert len(shifts) == 1 and abs(shifts.pop()) >= 1.0
    return "no"


@pytest.mark.parametrize("task", ["colour_at_beep", "av_match"])
def test_cross_modal_answers_are_independent_of_each_stream(task):
    """One stream alone says nothing: the answer's distribution is the same whatever the picture (change times,
    colour order) or the sound (beep times) is. Checked as total-variation distance on many samples."""
    spec = next(t for t in TASKS if t.name == task)
    rng = np.random.default_rng(1)
    by_picture: dict[str, Counter] = {}
    by_sound: dict[str, Counter] = {}
    for i in range(4000):
        answer = spec.answers[i % len(spec.answers)]
        scene, _, _ = spec.sample(rng, answer, round(DURATION / SLOT))
        picture = str(scene.changes) if task == "av_match" else str(scene.colours)
        by_picture.setdefault(picture, Counter())[answer] += 1
        by_sound.setdefault(str(scene.beeps), Counter())[answer] += 1
    for groups in (by_picture, by_sound):
        for counts in groups.values():
            n = sum(counts.values())
            if n < 100:
                continue
            shares = [counts[a] / n for a in spec.answers]
            assert max(abs(s - 1 / len(spec.answers)) for s in shares) < 0.15, counts


def test_sound_order_leaks_only_at_the_edges():
    """The documented ceiling: only a change at the first or last inner boundary gives the order away."""
    spec = next(t for t in TASKS if t.name == "sound_order")
    rng = np.random.default_rng(2)
    by_change: dict[float, Counter] = {}
    for i in range(2400):
        answer = spec.answers[i % 2]
        scene, _, _ = spec.sample(rng, answer, 8)
        by_change.setdefault(scene.changes[0], Counter())[answer] += 1
    pure = {c for c, counts in by_change.items() if len(counts) == 1}
    assert pure == {0.5, 3.5}
    ceiling = sum(max(c.values()) for c in by_change.values()) / 2400
    assert abs(ceiling - 7 / 12) < 0.03


def test_task_subset_and_bad_arguments(tmp_path):
    path = generate(tmp_path, "val", num_examples=4, seed=0, tasks=["pitch", "shape"], progress=False)
    assert {r["task"] for r in _rows(path)} == {"pitch", "shape"}
    with pytest.raises(ValueError, match="exists"):
        generate(tmp_path, "val", num_examples=4, seed=0, progress=False)
    # overwrite replaces the split and removes its earlier clips
    generate(tmp_path, "val", num_examples=2, seed=0, overwrite=True, progress=False)
    assert sorted(p.name for p in (tmp_path / "val").iterdir()) == ["000000.mp4", "000001.mp4"]
    with pytest.raises(ValueError, match="tasks"):
        generate(tmp_path, "x", num_examples=1, tasks=["nope"])
    with pytest.raises(ValueError, match="num_examples"):
        generate(tmp_path, "x", num_examples=0)
    with pytest.raises(ValueError, match="seed"):
        generate(tmp_path, "x", num_examples=1, seed=-1)
    with pytest.raises(ValueError, match="split"):
        generate(tmp_path, "../x", num_examples=1)
    with pytest.raises(ValueError, match="colours"):
        Scene(4.0, "square", ("red", "red"), (1.0,), (), "low")
    with pytest.raises(ValueError, match="beeps"):
        Scene(4.0, "square", ("red",), (), (0.3,), "low")
    assert task_names() == tuple(t.name for t in TASKS)


def test_cli_generate(tmp_path, capsys):
    from favor_llm.cli import main

    assert (
        main(["aveb", "generate", str(tmp_path), "--seed", "1", "--train", "3", "--val", "2", "--test", "0"])
        == 0
    )
    out = capsys.readouterr().out
    assert "train" in out and "val" in out
    assert len(_rows(tmp_path / "train.jsonl")) == 3 and not (tmp_path / "test.jsonl").exists()
    assert main(["aveb", "generate", str(tmp_path), "--train", "3", "--val", "0", "--test", "0"]) == 2
    assert "favor aveb: error:" in capsys.readouterr().err
    assert main(["aveb", "generate", str(tmp_path), "--train", "-1"]) == 2


def test_an_interrupted_overwrite_leaves_no_stale_question_file(tmp_path, monkeypatch):
    # --overwrite deleted the old clips first but kept the old train.jsonl until the end: interrupted half-way, the
    # old questions pointed at missing clips or at new clips of another seed, and the split looked complete
    import importlib

    generate_module = importlib.import_module("favor_llm.aveb.generate")  # the package exports the function

    generate(tmp_path, "train", 4, seed=0, size=32, progress=False)
    real = generate_module.write_clip
    written = []

    def interrupted(*args, **kwargs):
        if len(written) == 2:
            raise KeyboardInterrupt
        written.append(real(*args, **kwargs))

    monkeypatch.setattr(generate_module, "write_clip", interrupted)
    with pytest.raises(KeyboardInterrupt):
        generate(tmp_path, "train", 4, seed=1, size=32, overwrite=True, progress=False)
    assert not (tmp_path / "train.jsonl").exists() and not (tmp_path / "train.meta.jsonl").exists()
