"""Start-up of ``favor`` and ``import favor_llm``, each in a fresh interpreter (what a user's shell starts).

``favor --help`` and ``favor <command> --help`` build the parser with the standard library only (no torch,
transformers, peft or PyAV in ``sys.modules``: importing them took ~4 s); ``import favor_llm`` is lazy, yet every
name of ``__all__`` still imports and the Auto classes still load FAVOR checkpoints after it, whichever import brings
transformers in. Checked by module names, not by timing (timings live in docs/favor-llm.md).
"""

from __future__ import annotations

import argparse
import importlib
import json
import re
import subprocess
import sys
import types

import pytest

import favor_llm
import favor_llm.aveb
import favor_llm.streaming
from favor_llm.cli import build_parser
from favor_llm.lazy_exports import lazy_exports
from favor_llm.testing import tiny_model_and_processor

HEAVY = ("torch", "transformers", "peft", "av", "favor_avsync", "favor_qformer")
COMMANDS = ("generate", "convert", "info", "demo", "aveb", "evaluate", "train", "stream")


def _child(code: str, *args: str) -> dict:
    """Run ``code`` in a fresh interpreter; it prints one JSON object as its last line."""
    result = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


_HELP_CHILD = """
import contextlib, io, json, sys
from favor_llm.cli import build_parser, main

build_parser()
texts = {}
for argv in json.loads(sys.argv[1]):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            main(argv)
            code = None
        except SystemExit as stop:
            code = stop.code
    texts[" ".join(argv)] = [code, out.getvalue()]
heavy = sorted(m for m in sys.modules if m.split(".")[0] in json.loads(sys.argv[2]))
print(json.dumps({"texts": texts, "heavy": heavy}))
"""


@pytest.fixture(scope="module")
def helps() -> dict:
    """``favor --help``, ``favor <command> --help`` and ``favor aveb generate --help`` in one fresh interpreter."""
    argvs = [["--help"], *([c, "--help"] for c in COMMANDS), ["aveb", "generate", "--help"]]
    return _child(_HELP_CHILD, json.dumps(argvs), json.dumps(HEAVY))


def test_help_imports_neither_torch_nor_transformers(helps):
    assert helps["heavy"] == []


def test_every_help_exits_zero_with_its_usage(helps):
    assert len(helps["texts"]) == len(COMMANDS) + 2
    for argv, (code, text) in helps["texts"].items():
        prog = " ".join(["favor", *argv.split()[:-1]])
        assert code == 0 and text.startswith(f"usage: {prog} "), (argv, text[:200])


def test_python_dash_m_favor_llm_cli_runs():
    """``python -m favor_llm.cli`` (how torchrun starts ``favor train``) finds the module through the import hook of
    `favor_llm.auto_classes`, which must hand runpy the real loader's ``get_code``."""
    result = subprocess.run(
        [sys.executable, "-m", "favor_llm.cli", "--help"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0 and result.stdout.startswith("usage: "), result.stderr[-2000:]


def test_help_lists_every_subcommand_with_its_help(helps):
    text = helps["texts"]["--help"][1]
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert tuple(sub.choices) == COMMANDS  # a new command belongs in COMMANDS (and in cli's docstring)
    listed = " ".join(text.split())  # help lines wrap with the terminal width
    for choice in sub._choices_actions:
        assert f"{choice.dest} {' '.join(choice.help.split())}" in listed, choice.dest


_AUTO_CHILD = """
import json, sys
{prelude}
heavy_before = sorted(m for m in sys.modules if m.split(".")[0] in json.loads(sys.argv[2]))
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoProcessor
loaded = [AutoConfig.from_pretrained(sys.argv[1]), AutoModel.from_pretrained(sys.argv[1]),
          AutoModelForCausalLM.from_pretrained(sys.argv[1]), AutoProcessor.from_pretrained(sys.argv[1])]
import favor_llm
names = {{n: type(getattr(favor_llm, n)).__name__ for n in favor_llm.__all__}}
print(json.dumps({{"types": [type(x).__name__ for x in loaded], "heavy_before": heavy_before, "names": names,
                  "dir": dir(favor_llm)}}))
"""


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny FAVOR (LoRA merged, frozen parts embedded) and its processor in one directory."""
    root = tmp_path_factory.mktemp("auto")
    model, processor = tiny_model_and_processor(seed=2)
    model.save_pretrained(root / "model", merge_lora=True)
    processor.save_pretrained(root / "model")
    return root / "model"


def test_import_favor_llm_is_lazy_yet_the_auto_classes_load_favor_and_every_public_name_imports(checkpoint):
    """The user's ``from transformers import AutoModel`` is what brings transformers in: registration waits for it."""
    got = _child(_AUTO_CHILD.format(prelude="import favor_llm"), str(checkpoint), json.dumps(HEAVY))
    assert got["heavy_before"] == []
    assert got["types"] == ["FavorConfig", "FavorModel", "FavorModel", "FavorProcessor"]
    assert set(got["names"]) == set(favor_llm.__all__) and set(favor_llm.__all__) <= set(got["dir"])
    assert got["names"]["FavorModel"] == "type" and got["names"]["components"] == "function"


@pytest.mark.parametrize(
    "prelude",
    [
        # transformers imports its Auto package half-way through modeling_utils, under favor_llm.processing
        "import favor_llm\nfrom favor_llm.processing import FavorProcessor",
        # transformers' Auto package already imported: registered by `import favor_llm` itself
        pytest.param("from transformers import AutoConfig\nimport favor_llm", marks=pytest.mark.slow),
        pytest.param("import favor_llm\nimport peft", marks=pytest.mark.slow),
    ],
)
def test_auto_classes_load_favor_whichever_import_brings_transformers_in(checkpoint, prelude):
    got = _child(_AUTO_CHILD.format(prelude=prelude), str(checkpoint), json.dumps(HEAVY))
    assert got["types"] == ["FavorConfig", "FavorModel", "FavorModel", "FavorProcessor"]


_NESTED_CHILD = """
import json, sys
sys.path.insert(0, sys.argv[2])
{prelude}
print(json.dumps({{"type": type(user.MODEL).__name__}}))
"""

_USER_MODULE = """
from transformers import AutoModel

MODEL = AutoModel.from_pretrained({checkpoint!r})
"""


@pytest.mark.parametrize(
    "prelude",
    [
        # the module that loads FAVOR at import time is itself imported (after `import favor_llm`)
        "import favor_llm\nimport user",
        # `import favor_llm` inside a package that then imports the loading module
        pytest.param("import user_package as user", marks=pytest.mark.slow),
    ],
)
def test_auto_classes_load_favor_in_a_module_imported_after_favor_llm(checkpoint, tmp_path, prelude):
    """Registration must not wait for the outermost import to finish: a module whose top level loads a FAVOR
    checkpoint with the Auto classes (a server's ``app.py``, a package's ``serving.py``) runs inside it."""
    (tmp_path / "user.py").write_text(_USER_MODULE.format(checkpoint=str(checkpoint)))
    (tmp_path / "user_package").mkdir()
    (tmp_path / "user_package" / "__init__.py").write_text("import favor_llm\n\nfrom .serving import MODEL\n")
    (tmp_path / "user_package" / "serving.py").write_text(_USER_MODULE.format(checkpoint=str(checkpoint)))
    got = _child(_NESTED_CHILD.format(prelude=prelude), str(checkpoint), str(tmp_path))
    assert got["type"] == "FavorModel"


_BROKEN_CHILD = """
import json, sys, warnings
sys.modules["favor_qformer"] = None  # a dependency of FavorModel that transformers does not need, missing
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    {imports}
    AutoConfig.for_model("gpt2")
try:
    favor_llm.FavorModel
    error = None
except ImportError as exc:
    error = str(exc)
print(json.dumps({"warnings": [str(w.message) for w in caught], "error": error}))
"""


@pytest.mark.parametrize(
    "imports",
    [
        # the user's own transformers work must not fail
        "import favor_llm; from transformers import AutoConfig",
        # registered at once by `import favor_llm`, which must not fail either (favor_llm.layout, .stats still work)
        "from transformers import AutoConfig; import favor_llm",
    ],
)
def test_a_registration_that_cannot_import_favor_warns_instead_of_failing_the_import(imports):
    got = _child(_BROKEN_CHILD.replace("{imports}", imports))
    assert got["error"] is not None and "favor_qformer" in got["error"]
    assert any("model_type 'favor'" in w and "favor_qformer" in w for w in got["warnings"]), got["warnings"]


def test_lazy_names_are_the_objects_their_modules_define():
    from favor_llm import aveb, configuration, modeling, stats, streaming

    assert favor_llm.FavorModel is modeling.FavorModel and favor_llm.FavorConfig is configuration.FavorConfig
    assert favor_llm.describe is stats.describe
    # a public name that is also a submodule name stays the function, after the submodule was imported
    components_module = importlib.import_module("favor_llm.components")
    assert favor_llm.components is components_module.components
    assert aveb.generate is importlib.import_module("favor_llm.aveb.generate").generate
    assert aveb.tokenizer is importlib.import_module("favor_llm.aveb.vocabulary").tokenizer
    assert (
        streaming.StreamingSession is importlib.import_module("favor_llm.streaming.session").StreamingSession
    )
    assert isinstance(favor_llm.checkpoint, types.ModuleType)  # `favor_llm.<submodule>` imports it, as before
    for package in (favor_llm, aveb, streaming):
        assert set(package.__all__) <= set(dir(package)), package.__name__
        for name in package.__all__:
            assert getattr(package, name) is not None
    with pytest.raises(AttributeError, match="no attribute 'NoSuchName'"):
        _ = favor_llm.NoSuchName
    assert not hasattr(favor_llm, "no_such.module") and not hasattr(favor_llm, "checkpoint.x")


def test_lazy_exports_refuses_a_name_listed_twice():
    with pytest.raises(ValueError, match=re.escape("'A' listed under both '.x' and '.y'")):
        lazy_exports("favor_llm", {".x": ("A",), ".y": ("A", "B")})
