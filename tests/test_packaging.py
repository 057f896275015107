"""Installable packages (issue 10, item 6): one version source per package, the release tag rule."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11 (CI's)

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"qformer": "favor_qformer", "avsync": "favor_avsync", "favor-llm": "favor_llm"}


def _init_version(folder: str, module: str) -> str:
    text = (ROOT / "packages" / folder / "src" / module / "__init__.py").read_text()
    found = re.findall(r'^__version__ = "([^"]+)"$', text, flags=re.M)
    assert len(found) == 1, f"{module}/__init__.py: expected one __version__ line, found {found}"
    return found[0]


@pytest.mark.parametrize("folder", list(PACKAGES))
def test_each_package_has_one_version(folder):
    """A dynamic version must come from ``__version__``; a static one (until the package moves) must equal it."""
    project = tomllib.loads((ROOT / "packages" / folder / "pyproject.toml").read_text())
    module = PACKAGES[folder]
    version = _init_version(folder, module)
    if "version" in project["project"].get("dynamic", []):
        assert "version" not in project["project"]
        assert project["tool"]["hatch"]["version"]["path"] == f"src/{module}/__init__.py"
    else:
        assert project["project"]["version"] == version, f"{folder}: pyproject and __init__ disagree"


def test_favor_qformer_reads_its_version_from_init():
    project = tomllib.loads((ROOT / "packages/qformer/pyproject.toml").read_text())
    assert project["project"]["dynamic"] == ["version"]


def _release_select():
    spec = importlib.util.spec_from_file_location("release_select", ROOT / ".github" / "release_select.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.select


@pytest.fixture
def dist(tmp_path):
    for name in (
        "favor_qformer-0.2.0-py3-none-any.whl",
        "favor_qformer-0.2.0.tar.gz",
        "favor_avsync-0.1.0-py3-none-any.whl",
        "favor_avsync-0.1.0.tar.gz",
        "favor_llm-0.2.0-py3-none-any.whl",
        "favor_llm-0.2.0.tar.gz",
    ):
        (tmp_path / name).touch()
    return tmp_path


def test_a_version_tag_releases_the_packages_of_that_version(dist):
    kept = _release_select()("v0.2.0", dist)
    assert kept == sorted(p.name for p in dist.iterdir()) and len(kept) == 4
    assert not any(name.startswith("favor_avsync") for name in kept)


def test_a_package_tag_releases_that_package_alone(dist):
    assert _release_select()("favor-qformer-v0.2.0", dist) == [
        "favor_qformer-0.2.0-py3-none-any.whl",
        "favor_qformer-0.2.0.tar.gz",
    ]


@pytest.mark.parametrize(
    ("tag", "message"),
    [
        ("v9.9.9", "no built package"),
        ("favor-avsync-v0.2.0", "no built package"),
        ("release-1", "expected v"),
    ],
)
def test_a_tag_that_matches_nothing_is_refused(dist, tag, message):
    with pytest.raises(ValueError, match=message):
        _release_select()(tag, dist)
