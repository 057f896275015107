"""`TrainConfig` from YAML: mistyped settings are `ValueError`s naming the setting (the CLI: one line, exit 2)."""

from __future__ import annotations

import pytest

pytest.importorskip("yaml")

from favor_llm.train_config import TrainConfig


def _yaml(tmp_path, text: str):
    path = tmp_path / "train.yaml"
    path.write_text("output_dir: out\ntrain_file: t.jsonl\n" + text)
    return path


def test_exponent_numbers_in_yaml_are_numbers(tmp_path):
    # YAML 1.1 (PyYAML) reads 3e-3 as the string "3e-3"; the docs' own default is written that way
    config = TrainConfig.from_yaml(_yaml(tmp_path, "learning_rate: 3e-3\nweight_decay: 1e-2\n"))
    assert config.learning_rate == pytest.approx(3e-3) and config.weight_decay == pytest.approx(1e-2)


@pytest.mark.parametrize(
    ("line", "field"),
    [
        ("learning_rate: fast", "learning_rate"),
        ('max_steps: "5"', "max_steps"),
        ("max_steps: 2.5", "max_steps"),
        ("seed: abc", "seed"),
        ('warmup_ratio: "a tenth"', "warmup_ratio"),
        ("num_train_epochs: two", "num_train_epochs"),
        ("num_train_epochs: 0", "num_train_epochs"),
        ("output_dir: [a]", "output_dir"),
        ('gradient_checkpointing: "maybe"', "gradient_checkpointing"),
        ("feature_cache: 5", "feature_cache"),
        ("threads: 0", "threads"),
        ("save_total_limit: -3", "save_total_limit"),
        ("model_overrides: [1]", "model_overrides"),
        ("fsdp_config: 3", "fsdp_config"),
    ],
)
def test_mistyped_settings_name_the_setting(tmp_path, line, field):
    with pytest.raises(ValueError, match=rf"^{field}: expected"):
        TrainConfig.from_yaml(_yaml(tmp_path, line + "\n"))


def test_cli_reports_a_mistyped_setting_in_one_line(tmp_path, capsys):
    from favor_llm.cli import main

    assert main(["train", "--config", str(_yaml(tmp_path, "warmup_ratio: lots\n"))]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "warmup_ratio: expected a number" in err


def test_recipe_overrides_are_checked_and_merged():
    from favor_llm.aveb import tokenizer
    from favor_llm.recipes import aveb_tiny_config

    tok = tokenizer()
    # a typo used to be kept as an unused attribute: the ablation trained the default model without a word
    with pytest.raises(
        ValueError, match=r"model_overrides: unknown FavorConfig field\(s\) \['diversity_los_weight'\]"
    ):
        aveb_tiny_config(tok, diversity_los_weight=0.0)
    # the field's current name used to be overwritten by the recipe's own (old-named) Q-Former settings
    for name in ("causal_qformer_config", "qformer_config"):
        config = aveb_tiny_config(tok, **{name: {"window_size": 1, "window_stride": 1}})
        assert config.causal_qformer_config.window_size == 1, name
        assert config.causal_qformer_config.hidden_size == 64, name  # the rest of the recipe's stays
    assert aveb_tiny_config(tok, diversity_loss_weight=0.0).diversity_loss_weight == 0.0


def test_relative_model_tokenizer_and_resume_paths_follow_the_yaml_file(tmp_path):
    # the docs say relative paths in the YAML are relative to it; model, tokenizer and resume paths were not
    folder = tmp_path / "exp"
    folder.mkdir()
    path = folder / "train.yaml"
    path.write_text(
        "output_dir: out\ntrain_file: t.jsonl\nmodel: ckpt/final\ntokenizer: tok\nresume: out/checkpoint-5\n"
    )
    config = TrainConfig.from_yaml(path)
    assert config.model == str(folder / "ckpt/final") and config.tokenizer == str(folder / "tok")
    assert config.resume == str(folder / "out/checkpoint-5")
    path.write_text(
        "output_dir: out\ntrain_file: t.jsonl\nmodel: aveb-tiny\ntokenizer: words\nresume: never\n"
    )
    config = TrainConfig.from_yaml(path)  # names, not paths
    assert (config.model, config.tokenizer, config.resume) == ("aveb-tiny", "words", "never")


@pytest.mark.parametrize("weight", ["x", float("nan"), -1.0, float("inf")])
def test_a_diversity_loss_weight_that_is_not_a_finite_number_is_refused(weight):
    # "x" was a TypeError deep in the loss; NaN trained with a NaN loss and exit status 0
    from favor_llm.aveb import tokenizer
    from favor_llm.recipes import aveb_tiny_config

    # a string is refused by FavorConfig's field-type check, a non-finite or negative number by the range check
    expected = "int or float" if isinstance(weight, str) else "a finite number >= 0"
    with pytest.raises(ValueError, match=rf"diversity_loss_weight: expected {expected}"):
        aveb_tiny_config(tokenizer(), diversity_loss_weight=weight)


def test_deepspeed_config_is_checked_before_training(tmp_path):
    from favor_llm.trainer import build_trainer

    rows = tmp_path / "t.jsonl"
    rows.write_text("")
    config = TrainConfig(
        output_dir=str(tmp_path / "o"), train_file=str(rows), deepspeed=str(tmp_path / "ds.json")
    )
    with pytest.raises(ValueError, match=r"deepspeed: no such file .*ds.json"):
        build_trainer(config)


def test_paths_from_python_are_kept_as_strings(tmp_path):
    config = TrainConfig(output_dir=tmp_path / "run", train_file=tmp_path / "t.jsonl")
    assert config.output_dir == str(tmp_path / "run") and config.train_file == str(tmp_path / "t.jsonl")


def test_a_bad_json_flag_is_named(tmp_path, capsys):
    from favor_llm.cli import main

    argv = ["train", "--output-dir", str(tmp_path / "o"), "--train-file", str(tmp_path / "t.jsonl")]
    assert main([*argv, "--model-overrides", "{diversity_loss_weight: 0}"]) == 2
    err = capsys.readouterr().err  # was "invalid loads value"
    assert "--model-overrides: expected a JSON object" in err and "\n" not in err.strip(), err
    assert main([*argv, "--model-overrides", "[1]"]) == 2
    assert "--model-overrides: expected a JSON object" in capsys.readouterr().err
