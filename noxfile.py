"""Workspace sessions: ``nox -s tests`` (CI), ``tests_slow``, ``tests_isolated``, ``build``, ``tests_wheels``,
``lint``, ``docs``, ``demo``, ``aveb``, ``bench``.

torch: a session first looks for a torch >= 2.10 already in its environment and installs nothing if there is one.
When the Python that runs nox is a base interpreter (system, pyenv, conda; not a venv) that already has such a torch
(any build: CPU, CUDA, ROCm), the workspace sessions (``tests``, ``tests_slow``, ``docs``, ``demo``) see it through
``--system-site-packages`` instead of downloading another; ``FAVOR_NOX_SYSTEM_SITE_PACKAGES=1`` / ``0`` forces that on / off. Otherwise the session installs
``FAVOR_TORCH_PIN`` (default ``torch==2.13.0``) from the package index pip is configured with; on PyPI that is the
CUDA build on Linux (several GB). For the CPU build set ``FAVOR_TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu``.
``tests_isolated`` and ``tests_wheels`` always start from an empty environment (they check declared dependencies).
The packages themselves declare ``torch>=2.10`` for users.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import shutil
import sys
from pathlib import Path

import nox

nox.options.sessions = ["tests"]
nox.options.default_venv_backend = "venv"
nox.options.reuse_existing_virtualenvs = True

TORCH = os.environ.get("FAVOR_TORCH_PIN", "torch==2.13.0")
TORCH_INDEX_URL = os.environ.get("FAVOR_TORCH_INDEX_URL")  # e.g. https://download.pytorch.org/whl/cpu
MIN_TORCH = (2, 10)
PACKAGE_DIRS = ["packages/qformer", "packages/avsync", "packages/favor-llm"]
PACKAGES = ["-e", "packages/qformer", "-e", "packages/avsync[media]", "-e", "packages/favor-llm"]
TEST_DEPS = ["pytest>=8", "pytest-xdist>=3.5", "hypothesis>=6.100"]
ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def _torch_version_ok(version: str | None) -> bool:
    match = re.match(r"(\d+)\.(\d+)", version or "")
    return match is not None and (int(match[1]), int(match[2])) >= MIN_TORCH


def _host_has_torch() -> bool:
    """Whether the Python running nox (the sessions' base interpreter) has a torch >= 2.10 installed."""
    forced = os.environ.get("FAVOR_NOX_SYSTEM_SITE_PACKAGES")
    if forced is not None:
        return forced not in ("", "0", "false", "no")
    if (
        sys.prefix != sys.base_prefix
    ):  # nox runs inside a venv: a new venv would see the base's packages, not these
        return False
    try:
        return _torch_version_ok(importlib.metadata.version("torch"))
    except importlib.metadata.PackageNotFoundError:
        return False


# venv options of the workspace sessions: reuse the host's torch when it has one (see the module docstring).
WORKSPACE_VENV = ["--system-site-packages"] if _host_has_torch() else []


def _install_torch(session: nox.Session) -> None:
    """Install ``TORCH`` unless the session's environment already imports a torch >= 2.10."""
    found = session.run(
        "python",
        "-c",
        "import importlib.metadata as m; print(m.version('torch'))",
        silent=True,
        success_codes=[0, 1],
        log=False,
    )
    version = (found or "").strip().splitlines()[-1] if found and found.strip() else ""
    if _torch_version_ok(version):
        session.log(f"using the installed torch {version} (nothing downloaded)")
        return
    index = ["--index-url", TORCH_INDEX_URL] if TORCH_INDEX_URL else []
    session.install(TORCH, *index)


def _install_all(session: nox.Session, *extra: str) -> None:
    _install_torch(session)
    session.install(*PACKAGES, *extra)


@nox.session(venv_params=WORKSPACE_VENV)
def tests(session: nox.Session) -> None:
    """All packages' fast tests in one environment (what CI runs)."""
    _install_all(session, *TEST_DEPS)
    session.run("pytest", "-n", "2", "--dist", "loadfile", *session.posargs, env=ENV)


@nox.session(venv_params=WORKSPACE_VENV)
def tests_slow(session: nox.Session) -> None:
    """The tests marked ``slow`` (longer media, larger configs)."""
    _install_all(session, *TEST_DEPS)
    session.run("pytest", "-m", "slow", *session.posargs, env=ENV)


ISOLATED = {
    # package folder: (install spec, its tests)
    "qformer": ("packages/qformer", "tests/qformer"),
    "avsync": ("packages/avsync[media]", "tests/avsync"),
    "favor-llm": ("packages/favor-llm", "tests/favor_llm"),
}


@nox.session
@nox.parametrize("package", list(ISOLATED))
def tests_isolated(session: nox.Session, package: str) -> None:
    """Each package installed alone with only its declared dependencies, running its own tests.

    This catches an undeclared dependency (e.g. favor-qformer importing transformers).
    """
    spec, test_dir = ISOLATED[package]
    _install_torch(session)
    if package == "favor-llm":  # its siblings are not on PyPI yet: install them from the workspace
        session.install("packages/qformer", "packages/avsync[media]")
    session.install(spec, *TEST_DEPS)
    session.run("pytest", test_dir, "-p", "no:cacheprovider", *session.posargs, env=ENV)


def _build_distributions(session: nox.Session, outdir: Path) -> list[Path]:
    """Wheel + sdist of each package into ``outdir`` (``python -m build``: the wheel is built from the sdist, so a
    file missing from the sdist fails here), checked with ``twine check --strict``."""
    session.install("build>=1.2", "twine>=5")
    shutil.rmtree(outdir, ignore_errors=True)
    for folder in PACKAGE_DIRS:
        session.run("python", "-m", "build", "--outdir", str(outdir), folder)
    built = sorted(outdir.iterdir())
    session.run("twine", "check", "--strict", *map(str, built))
    return built


@nox.session
def build(session: nox.Session) -> None:
    """Wheel and sdist of favor-qformer, favor-avsync and favor-llm into ``dist/``, checked with twine."""
    built = _build_distributions(session, Path("dist").resolve())
    session.log("built: " + ", ".join(path.name for path in built))


@nox.session(reuse_venv=False)  # fresh every time: a same-version wheel would not replace an installed one
def tests_wheels(session: nox.Session) -> None:
    """Build the three wheels, install them (and only them) into a fresh environment, run the smoke tests and
    ``favor demo`` from a folder outside the repository (nothing from the checkout is importable)."""
    built = _build_distributions(session, Path(session.create_tmp()).resolve() / "dist")
    wheels = [str(path) for path in built if path.suffix == ".whl"]
    assert len(wheels) == len(PACKAGE_DIRS), wheels
    _install_torch(session)
    # favor-llm needs favor-qformer and favor-avsync[media]: pip takes them from the wheels named here.
    session.install(*wheels, "favor-avsync[media]")
    outside = Path(session.create_tmp()).resolve() / "outside"
    outside.mkdir(exist_ok=True)
    shutil.copy(Path("tests/wheels/smoke.py"), outside / "smoke.py")
    session.chdir(outside)
    session.run(
        "python", "-I", "smoke.py", env=ENV
    )  # -I: no PYTHONPATH, no user site, no script-folder magic
    session.run("favor", "demo", *session.posargs, env=ENV)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check + format check."""
    session.install("ruff>=0.6")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(venv_params=WORKSPACE_VENV)
def docs(session: nox.Session) -> None:
    """Build the documentation site with ``mkdocs build --strict``."""
    _install_all(session, "mkdocs-material>=9.5", "mkdocstrings[python]>=0.25", "matplotlib>=3.8")
    session.run("mkdocs", "build", "--strict", env=ENV)


@nox.session(venv_params=WORKSPACE_VENV)
def demo(session: nox.Session) -> None:
    """The newcomer's first command: ``favor demo``, the shipped AVEB-mini model on fresh clips (no downloads)."""
    _install_all(session)
    session.run("favor", "demo", *session.posargs, env=ENV)


@nox.session(venv_params=WORKSPACE_VENV)
def aveb(session: nox.Session) -> None:
    """AVEB-mini ablations at equal training budget over seeds (docs/results.md): ``nox -s aveb -- --seeds 0 1``."""
    _install_all(session, "matplotlib>=3.8")
    session.run("python", "benchmarks/aveb_ablations.py", *session.posargs, env=ENV)


@nox.session
def bench(session: nox.Session) -> None:
    """CPU benchmarks (benchmarks/bench.py): one table of ratios against named peers measured in the same run.

    ``nox -s bench -- --quick`` only checks that every benchmark runs (small sizes, no meaningful figures).
    """
    _install_all(session)
    session.run("python", "benchmarks/bench.py", *session.posargs, env=ENV)
    # Streaming (docs/streaming.md): per-window latency over an hour of stream and time to answer vs offline
    # generate; the bounded-context policy a long stream uses (about 40 s).
    session.run("python", "benchmarks/bench_streaming.py", "--policy", "keep_recent", env=ENV)
