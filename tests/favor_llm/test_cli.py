"""The ``favor`` command line, through ``main([...])`` with real files: a tiny model saved to disk, real clips.

Each subcommand is checked against the Python API it fronts; every user mistake must give exit status 2 and one
line on stderr (``favor <command>: error: ...``), never a traceback, unless ``--debug``.
"""

from __future__ import annotations

import json

import pytest
import torch

from favor_avsync.testing import make_test_clip
from favor_llm import FavorModel, FavorProcessor
from favor_llm.cli import main
from favor_llm.testing import tiny_model_and_processor

QUESTION = "What colour is the screen at the start?"


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A tiny FAVOR saved as a delta checkpoint (+ processor), a 2 s mp4 with audio and a png."""
    root = tmp_path_factory.mktemp("cli")
    model, processor = tiny_model_and_processor(seed=3)
    model.save_frozen_components(root / "frozen")
    model.save_pretrained(root / "model")
    processor.save_pretrained(root / "model")
    make_test_clip(root / "clip.mp4", duration=2.0, fps=10.0, size=(32, 32), tone_at=0.5)
    make_test_clip(root / "still.png", container="png", size=(32, 32))
    return {"root": root, "model": root / "model", "clip": root / "clip.mp4", "image": root / "still.png"}


def _python_answer(model_dir, media, question, max_new_tokens):
    """What the Python API answers (greedy), for comparing with the CLI."""
    model = FavorModel.from_pretrained(model_dir).eval()
    processor = FavorProcessor.from_pretrained(model_dir)
    inputs = processor(text=question, media=media)
    with torch.no_grad():
        generated = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    return processor.decode_answers(generated, inputs)[0]


def _one_error_line(capsys, command: str) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.split("\n") if line.strip()]
    assert len(lines) == 1, f"expected one error line, got {lines}"
    assert lines[0].startswith(f"favor {command}: error: " if command else "favor: error: "), lines[0]
    return lines[0]


# ------------------------------------------------------------------------------------------------ generate
@pytest.mark.parametrize("media_key", ["clip", "image", None])
def test_generate_prints_the_python_api_answer(saved, capsys, media_key):
    media = saved[media_key] if media_key else None
    argv = ["generate", "--model", str(saved["model"]), "--question", QUESTION, "--max-new-tokens", "6"]
    if media is not None:
        argv += ["--media", str(media)]
    assert main(argv) == 0
    printed = capsys.readouterr().out.strip()
    assert printed == _python_answer(saved["model"], str(media) if media else None, QUESTION, 6)


def test_generate_sampling_runs(saved, capsys):
    argv = ["generate", "--model", str(saved["model"]), "--media", str(saved["clip"]), "--question", QUESTION]
    assert (
        main([*argv, "--max-new-tokens", "4", "--temperature", "0.7", "--top-p", "0.9", "--dtype", "float32"])
        == 0
    )
    assert capsys.readouterr().out.endswith("\n")


@pytest.mark.parametrize(
    ("make", "argv_tail", "needle"),
    [
        (lambda r: r / "nowhere", [], "model: no such directory"),
        (lambda r: r / "clip.mp4", [], "is a file"),
        (lambda r: r / "frozen" / "vision", [], "has no config.json"),
    ],
)
def test_generate_bad_model_dir(saved, capsys, make, argv_tail, needle):
    argv = ["generate", "--model", str(make(saved["root"])), "--question", "q", *argv_tail]
    assert main(argv) == 2
    assert needle in _one_error_line(capsys, "generate")


def test_generate_missing_and_corrupt_media(saved, capsys, tmp_path):
    base = ["generate", "--model", str(saved["model"]), "--question", "q"]
    assert main([*base, "--media", str(tmp_path / "missing.mp4")]) == 2
    assert "media: no such file" in _one_error_line(capsys, "generate")
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 50)
    assert main([*base, "--media", str(corrupt)]) == 2
    assert "corrupt.mp4" in _one_error_line(capsys, "generate")


def test_generate_bad_options(saved, capsys):
    base = ["generate", "--model", str(saved["model"]), "--question", "q"]
    assert main([*base, "--max-new-tokens", "0"]) == 2
    assert "--max-new-tokens" in _one_error_line(capsys, "generate")
    assert main([*base, "--dtype", "float8"]) == 2
    assert "invalid choice" in _one_error_line(capsys, "generate")
    assert main([*base, "--device", "cuda:7"]) == 2 or torch.cuda.device_count() > 7
    capsys.readouterr()
    assert main([*base, "--temperature", "-1"]) == 2
    assert "--temperature" in _one_error_line(capsys, "generate")


def test_usage_errors_are_one_line(capsys):
    assert main(["generate", "--question", "q"]) == 2
    assert "--model" in _one_error_line(capsys, "generate")
    assert main(["translate"]) == 2
    assert "invalid choice" in _one_error_line(capsys, "")
    assert main([]) == 2
    _one_error_line(capsys, "")


def test_debug_shows_the_exception(saved, tmp_path):
    with pytest.raises(ValueError, match="no such directory"):
        main(["generate", "--model", str(tmp_path / "nowhere"), "--question", "q", "--debug"])


# ---------------------------------------------------------------------------------------------------- info
def test_info_of_a_checkpoint(saved, capsys):
    assert main(["info", str(saved["model"])]) == 0
    out = capsys.readouterr().out
    model, _ = tiny_model_and_processor(seed=3)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    assert f"{trainable:,} trainable" in out
    assert f"{frozen:,} frozen" in out
    assert "checkpoint      delta" in out
    # tiny: 2 fps, windows of 4 frames, 4 queries -> 30 windows x 4 = 120 AV tokens per minute
    assert "AV tokens       120 per minute of video (30 windows x 4 queries)" in out
    assert main(["info", str(saved["model"] / "config.json")]) == 0  # a config file alone: same summary
    assert f"{trainable:,} trainable" in capsys.readouterr().out


def test_info_of_a_separate_fusion_model(capsys, tmp_path):
    """``av_fusion="separate"`` (two Q-Formers, two token blocks, no streaming) is said as such."""
    from favor_llm.testing import tiny_config, tiny_tokenizer

    tiny_config(tiny_tokenizer(), av_fusion="separate").to_json_file(tmp_path / "config.json")
    assert main(["info", str(tmp_path / "config.json")]) == 0
    out = capsys.readouterr().out
    # tiny: 30 windows x 4 queries, a video block and an audio block
    assert "AV tokens       240 per minute of video (30 windows x 4 queries x 2 blocks: video, audio)" in out
    assert "av_fusion 'separate'" in out and "audio Q-Former  2 layers, hidden 32, input 32" in out
    assert "streaming       none (av_fusion 'separate'" in out
    assert main(["info", str(tmp_path / "config.json"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["av_fusion"] == "separate" and info["streaming"] is None


def test_main_called_from_python_leaves_transformers_progress_bars_as_they_were(capsys):
    """`main` quiets transformers' bars when stderr is no terminal and must restore the caller's setting after (a
    merge left a second ``bars = ...`` read after the switch-off, so they stayed off)."""
    from transformers.utils import logging as hf_logging

    hf_logging.enable_progress_bar()
    assert main(["info", "released", "--json"]) == 0
    capsys.readouterr()
    assert hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    assert main(["info", "released", "--json"]) == 0
    assert not hf_logging.is_progress_bar_enabled()
    hf_logging.enable_progress_bar()


def test_info_released_json(capsys):
    assert main(["info", "released", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["av_tokens_per_minute"] == 384  # 2 fps, windows of 10 frames, 32 queries
    params = info["parameters"]
    assert params["trainable"] + params["frozen"] == params["total"]
    assert params["components"]["vision"]["trainable"] == 0
    assert params["components"]["causal_qformer"]["frozen"] == 0
    assert params["components"]["lora"]["trainable"] > 0  # LoRA r=32 on q/k/v/o
    assert params["components"]["text"]["trainable"] == 0
    assert info["lora"] == {
        "r": 32,
        "alpha": 32,
        "dropout": 0.1,
        "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"],
    }


def test_info_errors(capsys, tmp_path):
    assert main(["info", str(tmp_path / "nope")]) == 2
    assert "no such directory or file" in _one_error_line(capsys, "info")
    (tmp_path / "other.json").write_text(json.dumps({"model_type": "bert"}))
    assert main(["info", str(tmp_path / "other.json")]) == 2
    _one_error_line(capsys, "info")
    (tmp_path / "broken.json").write_text("{not json")
    assert main(["info", str(tmp_path / "broken.json")]) == 2
    assert "is not a FavorConfig" in _one_error_line(capsys, "info")


# ------------------------------------------------------------------------------------------------- convert
@pytest.fixture(scope="module")
def released(tmp_path_factory, reference_dir):
    """A released-layout checkpoint + the frozen base and config it fits (see test_convert)."""
    from test_convert import _reference_sized_model, _released_delta

    root = tmp_path_factory.mktemp("cli_convert")
    model, processor = _reference_sized_model()
    model.save_frozen_components(root / "frozen")
    processor.tokenizer.save_pretrained(root / "frozen" / "text")
    model.config.to_json_file(root / "favor_config.json")
    torch.save(_released_delta(model, reference_dir / "favor_official_tiny.safetensors"), root / "delta.pt")
    return root


def test_convert_then_info_and_generate(released, capsys, tmp_path, saved):
    out = tmp_path / "converted"
    argv = ["convert", "--released", str(released / "delta.pt"), "--llm", str(released / "frozen" / "text")]
    assert main([*argv, "--out", str(out), "--config", str(released / "favor_config.json")]) == 0
    printed = capsys.readouterr().out
    assert f"-> {out}" in printed
    report = json.loads((out / "favor_conversion.json").read_text())
    assert report["renamed"]["llama_proj.weight"] == "language_projection.weight"
    assert main(["info", str(out)]) == 0
    assert "32 queries per window of 10 frames" in capsys.readouterr().out
    assert (
        main(
            [
                "generate",
                "--model",
                str(out),
                "--media",
                str(saved["clip"]),
                "--question",
                "q",
                "--max-new-tokens",
                "2",
            ]
        )
        == 0
    )

    # a second conversion into the same (now non-empty) directory must be asked for
    capsys.readouterr()
    assert main([*argv, "--out", str(out), "--config", str(released / "favor_config.json")]) == 2
    assert "--overwrite" in _one_error_line(capsys, "convert")
    assert (
        main([*argv, "--out", str(out), "--config", str(released / "favor_config.json"), "--overwrite"]) == 0
    )


def test_convert_errors(released, capsys, tmp_path):
    llm = str(released / "frozen" / "text")
    config = str(released / "favor_config.json")
    base = ["--llm", llm, "--config", config, "--out", str(tmp_path / "o")]
    assert main(["convert", "--released", str(tmp_path / "missing.pt"), *base]) == 2
    assert "released: no such file" in _one_error_line(capsys, "convert")

    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    assert main(["convert", "--released", str(garbage), *base]) == 2
    assert "not a readable PyTorch checkpoint" in _one_error_line(capsys, "convert")

    foreign = tmp_path / "foreign.pt"
    torch.save({"encoder.weight": torch.zeros(2, 2)}, foreign)
    assert main(["convert", "--released", str(foreign), *base]) == 2
    line = _one_error_line(capsys, "convert")
    assert "unknown released keys [encoder.weight]" in line
    assert "missing" in line

    assert (
        main(["convert", "--released", str(released / "delta.pt"), "--llm", str(tmp_path), "--out", "x"]) == 2
    )
    assert "has no config.json" in _one_error_line(capsys, "convert")
    assert (
        main(
            [
                "convert",
                "--released",
                str(released / "delta.pt"),
                "--llm",
                llm,
                "--out",
                "x",
                "--config",
                "nope.json",
            ]
        )
        == 2
    )
    assert "config: no such file" in _one_error_line(capsys, "convert")


def test_generate_on_an_unusable_device_or_a_damaged_checkpoint_is_one_line(saved, capsys, tmp_path):
    """Issue 10: `--device mps` on Linux and a truncated model.safetensors printed tracebacks (RuntimeError,
    SafetensorError without the file name); both are one line and exit 2 now."""
    import shutil

    base = ["generate", "--question", "q", "--max-new-tokens", "1"]
    if not torch.backends.mps.is_available():
        assert main([*base, "--model", str(saved["model"]), "--device", "mps"]) == 2
        assert "--device: mps is not usable here" in _one_error_line(capsys, "generate")
    damaged = tmp_path / "damaged"
    shutil.copytree(saved["model"], damaged)
    (damaged / "model.safetensors").write_bytes((saved["model"] / "model.safetensors").read_bytes()[:100])
    assert main([*base, "--model", str(damaged)]) == 2
    line = _one_error_line(capsys, "generate")
    assert f"{damaged / 'model.safetensors'}: not a readable safetensors file" in line


def test_no_progress_bars_when_not_a_terminal(capsys):
    # transformers' "Loading weights" bar and the generation bar used to fill logs and pipes
    from favor_llm.demo import DEMO_MODEL_DIR

    argv = ["generate", "--model", str(DEMO_MODEL_DIR), "--question", "Which shape is shown?"]
    assert main([*argv, "--max-new-tokens", "2"]) == 0
    err = capsys.readouterr().err
    assert "Loading weights" not in err and "generating" not in err and "it/s" not in err, err
