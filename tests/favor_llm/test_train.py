"""``favor train``: the Trainer recipe on real clips (PyAV), a few steps, checkpoints, resume, errors."""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import pytest
import torch

pytest.importorskip("accelerate")
pytest.importorskip("yaml")

from favor_llm import FavorModel, FavorProcessor
from favor_llm.trainer import TrainConfig, answer_correct, load_examples, run_training

COLOURS = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255)}


@pytest.fixture(scope="module")
def toy_data(tmp_path_factory) -> Path:
    """Six 2 s clips (one colour each, a tone) and train / validation JSON Lines about their colour."""
    from favor_avsync.testing import make_test_clip

    root = tmp_path_factory.mktemp("toy")
    rows = []
    for i, (name, rgb) in enumerate(list(COLOURS.items()) * 2):
        make_test_clip(
            root / f"clip{i}.mp4", duration=2.0, fps=4.0, size=(32, 32), colours=(rgb,), tone_at=0.5
        )
        rows.append(
            {"media": f"clip{i}.mp4", "question": "what colour is shown ?", "answer": name, "task": "colour"}
        )
    (root / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / "val.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:3]))
    return root


def _config(toy_data: Path, out: Path, **changes) -> TrainConfig:
    settings = dict(
        output_dir=str(out),
        train_file=str(toy_data / "train.jsonl"),
        validation_file=str(toy_data / "val.jsonl"),
        tokenizer="words",
        max_steps=4,
        per_device_train_batch_size=3,
        eval_steps=2,
        save_steps=2,
        logging_steps=1,
        threads=1,
    )
    settings.update(changes)
    return TrainConfig(**settings)


def test_train_saves_loadable_checkpoints_and_logs(toy_data, tmp_path):
    result = run_training(_config(toy_data, tmp_path / "run"))
    assert result.steps == 4 and math.isfinite(result.training_loss)
    model = FavorModel.from_pretrained(result.final_dir)
    processor = FavorProcessor.from_pretrained(result.final_dir)
    assert not model.training
    # the checkpoint holds what training changed: its trainable weights differ from a fresh recipe model's
    from favor_llm.recipes import aveb_tiny_config, build_model

    fresh = build_model(aveb_tiny_config(processor.tokenizer), seed=0)
    trained = model.trainable_state_dict()
    assert trained.keys() == fresh.trainable_state_dict().keys()
    assert any(not torch.equal(v, fresh.trainable_state_dict()[k]) for k, v in trained.items())
    frozen = {k: v for k, v in model.state_dict().items() if k.startswith("vision.")}
    assert all(torch.equal(v, fresh.state_dict()[k]) for k, v in frozen.items())  # frozen parts untouched

    rows = list(csv.DictReader((tmp_path / "run" / "metrics.csv").open()))
    names = {r["name"] for r in rows}
    assert {"loss", "lm_loss", "diversity_loss", "learning_rate", "eval_loss", "eval_accuracy"} <= names
    assert "eval_accuracy_colour" in names
    assert sorted(p.name for p in (tmp_path / "run").glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]


def test_resume_continues_from_the_last_checkpoint(toy_data, tmp_path):
    """A run interrupted after its step-2 checkpoint and started again ends with the same weights as the run that
    went straight through (model, optimiser, scheduler and data order restored)."""
    import shutil

    straight = run_training(_config(toy_data, tmp_path / "a", eval_steps=0))
    assert straight.resumed_from is None
    shutil.copytree(tmp_path / "a" / "checkpoint-2", tmp_path / "b" / "checkpoint-2")
    shutil.copytree(tmp_path / "a" / "frozen", tmp_path / "b" / "frozen")
    resumed = run_training(_config(toy_data, tmp_path / "b", eval_steps=0))
    assert resumed.resumed_from is not None and resumed.resumed_from.endswith("checkpoint-2")
    assert (resumed.steps, resumed.trained_steps, resumed.already_complete) == (4, 2, False)
    a = FavorModel.from_pretrained(straight.final_dir).trainable_state_dict()
    b = FavorModel.from_pretrained(resumed.final_dir).trainable_state_dict()
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-5, atol=1e-6, msg=key)
    never = run_training(_config(toy_data, tmp_path / "b", eval_steps=0, resume="never", max_steps=1))
    assert never.resumed_from is None and never.steps == 1


def test_answer_correct_is_greedy_exact_match():
    labels = torch.tensor([[-100, -100, 5, 2], [-100, -100, 5, 2]])
    logits = torch.zeros(2, 4, 8)
    logits[:, 1, 5] = 1.0  # position 1 predicts token 5
    logits[0, 2, 2] = 1.0  # sample 0 then predicts EOS; sample 1 predicts token 0
    assert answer_correct(logits, labels).tolist() == [True, False]


def test_bad_config_and_data_are_clear_errors(toy_data, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"media": "clip0.mp4", "question": "q", "answer": "a"}) + "\n{not json\n")
    with pytest.raises(ValueError, match=r"(?s)bad.jsonl:1: media file not found.*bad.jsonl:2: invalid JSON"):
        load_examples(bad)
    yaml_file = tmp_path / "train.yaml"
    yaml_file.write_text("output_dir: out\ntrain_file: t.jsonl\nlearning_rat: 0.1\n")
    with pytest.raises(ValueError, match=r"unknown setting\(s\) \['learning_rat'\]"):
        TrainConfig.from_yaml(yaml_file)
    with pytest.raises(ValueError, match="per_device_train_batch_size: expected an int >= 1"):
        TrainConfig(output_dir="o", train_file="t", per_device_train_batch_size=0)


def test_train_command_with_yaml_and_flags(toy_data, tmp_path, capsys):
    from favor_llm.cli import main

    config = tmp_path / "train.yaml"
    config.write_text(
        f"output_dir: run\ntrain_file: {toy_data / 'train.jsonl'}\ntest_file: {toy_data / 'val.jsonl'}\n"
        "tokenizer: words\nmax_steps: 50\nsave_steps: 0\neval_steps: 0\nthreads: 1\nper_device_train_batch_size: 3\n"
    )
    assert main(["train", "--config", str(config), "--max-steps", "2", "--logging-steps", "1"]) == 0
    out = capsys.readouterr().out
    assert "trained 2 steps" in out and "accuracy_colour" in out
    assert (tmp_path / "run" / "final" / "config.json").is_file()  # output_dir relative to the YAML file
    assert main(["train", "--config", str(config), "--max-steps", "x"]) == 2
    assert "argument --max-steps: invalid int value" in capsys.readouterr().err
    assert main(["train", "--output-dir", str(tmp_path / "o")]) == 2
    assert "missing required setting(s) ['train_file']" in capsys.readouterr().err


def test_ddp_two_processes_match_one_process(toy_data, tmp_path):
    """``torchrun --nproc_per_node 2`` (gloo, CPU) with 3 examples per process takes the same optimiser step as one
    process with the same global batch of 6: the trained weights agree after a step."""
    import os
    import socket
    import subprocess
    import sys

    single = run_training(
        _config(
            toy_data,
            tmp_path / "one",
            max_steps=1,
            per_device_train_batch_size=6,
            eval_steps=0,
            warmup_ratio=0.0,
        )
    )

    def launch() -> subprocess.CompletedProcess:
        with socket.socket() as probe:  # a free port for this run's rendezvous (never a fixed default)
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        command = [
            sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
            "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}",
            "-m", "favor_llm.cli", "train",
            "--output-dir", str(tmp_path / "two"), "--train-file", str(toy_data / "train.jsonl"),
            "--tokenizer", "words", "--max-steps", "1", "--per-device-train-batch-size", "3",
            "--eval-steps", "0", "--threads", "1", "--warmup-ratio", "0", "--resume", "never",
        ]  # fmt: skip
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)

    done = launch()
    if done.returncode != 0 and "address already in use" in done.stderr.lower():
        done = launch()  # another job took the port between the probe and the bind
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    assert "trained 1 steps" in done.stdout
    a = FavorModel.from_pretrained(single.final_dir).trainable_state_dict()
    b = FavorModel.from_pretrained(tmp_path / "two" / "final").trainable_state_dict()
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-4, atol=1e-6, msg=key)
    before = _recipe_weights(single.final_dir)
    assert any(not torch.equal(a[k], v) for k, v in before.items())  # the step changed the weights


def _recipe_weights(final_dir: Path) -> dict[str, torch.Tensor]:
    from favor_llm.recipes import aveb_tiny_config, build_model

    processor = FavorProcessor.from_pretrained(final_dir)
    return build_model(aveb_tiny_config(processor.tokenizer), seed=0).trainable_state_dict()


def test_gradient_checkpointing_takes_the_same_step(toy_data, tmp_path):
    """``gradient_checkpointing: true`` recomputes activations in the backward pass: the same weights after a step."""
    runs = [
        run_training(
            _config(
                toy_data,
                tmp_path / f"gc{flag}",
                max_steps=1,
                eval_steps=0,
                warmup_ratio=0.0,
                gradient_checkpointing=flag,
            )
        )
        for flag in (False, True)
    ]
    a, b = (FavorModel.from_pretrained(r.final_dir).trainable_state_dict() for r in runs)
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-5, atol=1e-6, msg=key)


def test_a_different_run_in_the_same_output_dir_is_refused(toy_data, tmp_path):
    # run b's checkpoints reference b/frozen; a second run with other frozen weights (another seed of the random
    # recipe) used to overwrite b/frozen silently and resume from b's checkpoint: b's checkpoints then loaded with
    # the wrong encoders
    out = tmp_path / "b"
    run_training(_config(toy_data, out, max_steps=1, save_steps=1, eval_steps=0))
    frozen = {p: p.read_bytes() for p in sorted((out / "frozen").rglob("*")) if p.is_file()}
    with pytest.raises(ValueError, match=r"output_dir: .*seed"):
        run_training(_config(toy_data, out, max_steps=2, save_steps=1, eval_steps=0, seed=5))
    assert frozen == {p: p.read_bytes() for p in sorted((out / "frozen").rglob("*")) if p.is_file()}
    # a folder whose run left no checkpoint and no final model (stopped early) is free for another run
    empty = tmp_path / "stopped"
    run_training(_config(toy_data, empty, max_steps=1, save_steps=0, eval_steps=0))
    shutil.rmtree(empty / "final")
    assert run_training(_config(toy_data, empty, max_steps=1, save_steps=0, eval_steps=0, seed=5)).steps == 1


def test_resuming_past_max_steps_is_refused(toy_data, tmp_path):
    # the Trainer silently trained nothing and reported "last loss 0.0000", overwriting final/
    out = tmp_path / "c"
    run_training(_config(toy_data, out, max_steps=2, save_steps=2, eval_steps=0))
    with pytest.raises(ValueError, match=r"max_steps: 1 .*checkpoint-2"):
        run_training(_config(toy_data, out, max_steps=1, eval_steps=0))


def test_a_finished_run_started_again_says_so_and_trains_nothing(toy_data, tmp_path, capsys):
    # `favor train` run again on a finished output_dir printed "trained 2 steps ... (last loss 0.0000)" and logged a
    # train_loss of 0 to metrics.csv; now one line says the run is complete, and the test accuracy is printed again
    from favor_llm.cli import main

    out = tmp_path / "done"
    args = ["train", "--output-dir", str(out), "--train-file", str(toy_data / "train.jsonl")]
    args += ["--test-file", str(toy_data / "val.jsonl"), "--tokenizer", "words", "--max-steps", "2"]
    args += ["--save-steps", "2", "--eval-steps", "0", "--threads", "1", "--per-device-train-batch-size", "3"]
    assert main(args) == 0
    first = capsys.readouterr().out  # the Trainer's own log lines too (stdout is not a terminal)
    assert "\ntrained 2 steps in " in first
    final = out / "final"
    weights = FavorModel.from_pretrained(final).trainable_state_dict()
    logged = (out / "metrics.csv").read_text()
    assert main(args) == 0
    again = capsys.readouterr().out
    assert (
        f"run already complete at step 2 (checkpoint {out / 'checkpoint-2'}); nothing trained; model: {final}\n"
        in again
    )
    assert "trained " not in again and "'train_loss'" not in again
    accuracy = [line for line in first.splitlines() if line.startswith("  accuracy")]
    assert accuracy and accuracy == [line for line in again.splitlines() if line.startswith("  accuracy")]
    added = (out / "metrics.csv").read_text().removeprefix(logged)
    assert added and "train_loss" not in added and "test_accuracy" in added  # the evaluation, no summary row
    reloaded = FavorModel.from_pretrained(final).trainable_state_dict()
    assert all(torch.equal(reloaded[k], v) for k, v in weights.items())
    result = run_training(_config(toy_data, out, max_steps=2, save_steps=2, eval_steps=0))
    assert result.already_complete and result.training_loss is None
    assert (result.steps, result.trained_steps) == (2, 0)


def test_a_run_and_its_fine_tuned_run_load_after_their_folder_moved(toy_data, tmp_path):
    # a fine-tuned run (model: the parent's final/) references the parent's frozen/ parts; both referenced them by
    # absolute path only, so moving the folder holding the runs broke every final/ and checkpoint
    parent = run_training(
        _config(toy_data, tmp_path / "runs" / "parent", max_steps=1, save_steps=1, eval_steps=0)
    )
    child = run_training(
        _config(toy_data, tmp_path / "runs" / "child", model=str(parent.final_dir), max_steps=1, eval_steps=0)
    )
    before = {
        d: FavorModel.from_pretrained(d).trainable_state_dict() for d in (parent.final_dir, child.final_dir)
    }
    shutil.move(tmp_path / "runs", tmp_path / "moved")
    for d in ("parent/final", "child/final", "child/checkpoint-1"):
        loaded = FavorModel.from_pretrained(tmp_path / "moved" / d)
        sources = loaded.config.component_sources
        assert all(
            s["name_or_path"].startswith(str((tmp_path / "moved" / "parent" / "frozen").resolve()))
            for s in sources.values()
        )
        if d.endswith("final"):
            reference = before[tmp_path / "runs" / d]
            assert all(torch.equal(v, reference[k]) for k, v in loaded.trainable_state_dict().items())


def test_words_outside_the_aveb_vocabulary_are_refused(toy_data, tmp_path):
    # the default tokenizer is AVEB-mini's few dozen words: own data ("zebra") used to train on <unk> silently, so
    # the model could never say the answer
    rows = [
        {"media": str(toy_data / "clip0.mp4"), "question": "which animal ?", "answer": a}
        for a in ("red", "zebra")
    ]
    (tmp_path / "own.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(ValueError, match=r"tokenizer: .*'animal'\].*own.jsonl:1.*tokenizer: words"):
        run_training(
            _config(toy_data, tmp_path / "d", tokenizer="aveb", train_file=str(tmp_path / "own.jsonl"))
        )


def test_a_checkpoint_cut_short_mid_save_is_skipped(toy_data, tmp_path):
    # Ctrl-C while the Trainer wrote checkpoint-2 (weights written, trainer_state.json not yet): the next run used
    # to fail on the missing trainer_state.json; it resumes from the last complete checkpoint instead
    out = tmp_path / "e"
    run_training(_config(toy_data, out, max_steps=2, save_steps=1, eval_steps=0))
    (out / "checkpoint-2" / "trainer_state.json").unlink()
    resumed = run_training(_config(toy_data, out, max_steps=3, save_steps=1, eval_steps=0))
    assert resumed.resumed_from is not None and resumed.resumed_from.endswith("checkpoint-1")
    assert resumed.steps == 3 and (out / "checkpoint-3" / "trainer_state.json").is_file()
    with pytest.raises(ValueError, match=r"resume: .*checkpoint-2 is incomplete"):
        (out / "checkpoint-2" / "trainer_state.json").unlink()
        run_training(_config(toy_data, out, max_steps=4, resume=str(out / "checkpoint-2")))


def test_an_output_dir_that_is_a_file_is_named(toy_data, tmp_path):
    (tmp_path / "taken").write_text("x")
    with pytest.raises(ValueError, match=r"output_dir: .*taken is a file"):  # was "[Errno 17] File exists"
        run_training(_config(toy_data, tmp_path / "taken"))


def test_cache_counts_are_not_logged_as_zero_from_loader_workers(toy_data, tmp_path):
    # with dataloader_num_workers the cache is used in the worker processes: the main process's counters stayed
    # 0 / 0 and metrics.csv reported them as if nothing had been cached
    out = tmp_path / "w"
    config = _config(
        toy_data, out, max_steps=2, save_steps=0, eval_steps=0, feature_cache=str(tmp_path / "cache")
    )
    config.dataloader_num_workers = 1
    run_training(config)
    names = {row["name"] for row in csv.DictReader((out / "metrics.csv").open())}
    assert "epoch_seconds" in names and "cache_hits" not in names and "cache_misses" not in names
    assert list((tmp_path / "cache").rglob("*.safetensors"))  # the workers did fill the cache


def test_a_bad_test_file_stops_the_run_before_training(toy_data, tmp_path):
    # the test file was read only after training: a typo in it cost the whole run
    bad = tmp_path / "test.jsonl"
    bad.write_text('{"media": "nope.mp4", "question": "q", "answer": "a"}\n')
    out = tmp_path / "f"
    with pytest.raises(ValueError, match=r"test.jsonl:1: media file not found"):
        run_training(_config(toy_data, out, test_file=str(bad)))
    assert not (out / "final").exists() and not list(out.glob("checkpoint-*"))
