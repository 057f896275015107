"""Smoke test of the three installed wheels (run by ``nox -s tests_wheels``; not collected by pytest).

Run with ``python -I smoke.py`` from a folder outside the repository: each package must come from the
environment's site-packages, report the version its metadata has, and do its basic job. ``favor demo`` is run by
the nox session right after, through the installed ``favor`` script.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

import torch

DISTRIBUTIONS = {"favor_qformer": "favor-qformer", "favor_avsync": "favor-avsync", "favor_llm": "favor-llm"}


def check_installed() -> None:
    site = Path(sysconfig.get_paths()["purelib"]).resolve()
    for module_name, distribution in DISTRIBUTIONS.items():
        module = importlib.import_module(module_name)
        where = Path(module.__file__).resolve()
        assert site in where.parents, f"{module_name} imported from {where}, not from the wheel in {site}"
        version = importlib.metadata.version(distribution)
        assert module.__version__ == version, f"{distribution}: __version__ {module.__version__} != {version}"
        files = importlib.metadata.files(distribution) or []
        assert any(str(f).endswith("py.typed") for f in files), (
            f"{distribution}: py.typed missing from the wheel"
        )
        print(f"{distribution} {version} from {where.parent}")


def check_qformer() -> None:
    from favor_qformer import CausalQFormer, CausalQFormerConfig, diversity_loss

    config = CausalQFormerConfig(
        hidden_size=32,
        num_heads=2,
        intermediate_size=64,
        num_queries=4,
        encoder_hidden_size=24,
        causal_num_heads=2,
        tokens_per_frame=3,
        window_size=4,
        window_stride=4,
    )
    model = CausalQFormer(config).eval()
    features = torch.randn(2, 9, 3, 24)
    frame_mask = torch.arange(9) < torch.tensor([[9], [5]])
    with torch.no_grad():
        out = model(features, frame_mask)
    assert out.tokens.shape == (2, 3, 4, 32), out.tokens.shape
    assert out.window_mask.tolist() == [[True, True, True], [True, True, False]]
    assert torch.isfinite(diversity_loss(out.tokens, out.window_mask))
    with tempfile.TemporaryDirectory() as folder:
        model.save_pretrained(folder)
        loaded = CausalQFormer.from_pretrained(folder)
        with torch.no_grad():
            assert torch.equal(loaded(features, frame_mask).tokens, out.tokens)
    alone = "import sys, favor_qformer; assert 'transformers' not in sys.modules, 'favor_qformer imported transformers'"
    subprocess.run([sys.executable, "-I", "-c", alone], check=True)
    print("favor-qformer: forward, save/load round trip ok")


def check_avsync() -> None:
    from favor_avsync import TemporalSynchroniser, load_media
    from favor_avsync.testing import make_test_clip

    sync = TemporalSynchroniser(fps=2.0, audio_rates=(50.0,))
    out = sync(torch.randn(1, 4, 32, 8), torch.randn(1, 100, 6))
    assert tuple(out.features.shape) == (1, 4, 32, 14), out.features.shape
    with tempfile.TemporaryDirectory() as folder:
        spec = make_test_clip(Path(folder) / "clip.mp4", duration=2.0)
        clip = load_media(spec.path, fps=2.0)
    assert clip.frames.shape[0] == 4 and clip.audio is not None, (clip.frames.shape, clip.audio)
    print("favor-avsync: synchroniser and media decoding ok")


def check_llm() -> None:
    import favor_llm

    assert favor_llm.FavorModel is not None
    result = subprocess.run(["favor", "--help"], capture_output=True, text=True, check=True)
    assert "demo" in result.stdout, result.stdout
    print("favor-llm: import and `favor --help` ok")


if __name__ == "__main__":
    check_installed()
    check_qformer()
    check_avsync()
    check_llm()
    print("wheel smoke tests passed")
