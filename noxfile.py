"""Workspace sessions: ``nox -s tests`` (CI), ``tests_slow``, ``tests_isolated``, ``lint``, ``docs``, ``demo``, ``aveb``, ``bench``.

Every session that installs torch pins ``TORCH`` so pip takes the CPU build (a bare ``torch`` requirement pulls a
multi-GB CUDA build). The packages themselves declare ``torch>=2.10`` for users.
"""

from __future__ import annotations

import os

import nox

nox.options.sessions = ["tests"]
nox.options.default_venv_backend = "venv"
nox.options.reuse_existing_virtualenvs = True

TORCH = os.environ.get("FAVOR_TORCH_PIN", "torch==2.13.0")
PACKAGES = ["-e", "packages/qformer", "-e", "packages/avsync[media]", "-e", "packages/favor-llm"]
TEST_DEPS = ["pytest>=8", "pytest-xdist>=3.5", "hypothesis>=6.100"]
ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def _install_all(session: nox.Session, *extra: str) -> None:
    session.install(TORCH)
    session.install(*PACKAGES, *extra)


@nox.session
def tests(session: nox.Session) -> None:
    """All packages' fast tests in one environment (what CI runs)."""
    _install_all(session, *TEST_DEPS)
    session.run("pytest", "-n", "2", "--dist", "loadfile", *session.posargs, env=ENV)


@nox.session
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
    session.install(TORCH)
    if package == "favor-llm":  # its siblings are not on PyPI yet: install them from the workspace
        session.install("packages/qformer", "packages/avsync[media]")
    session.install(spec, *TEST_DEPS)
    session.run("pytest", test_dir, "-p", "no:cacheprovider", *session.posargs, env=ENV)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check + format check."""
    session.install("ruff>=0.6")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def docs(session: nox.Session) -> None:
    """Build the documentation site with ``mkdocs build --strict``."""
    _install_all(session, "mkdocs-material>=9.5", "mkdocstrings[python]>=0.25", "matplotlib>=3.8")
    session.run("mkdocs", "build", "--strict", env=ENV)


@nox.session
def demo(session: nox.Session) -> None:
    """The newcomer's first command: ``favor demo``, the shipped AVEB-mini model on fresh clips (no downloads)."""
    _install_all(session)
    session.run("favor", "demo", *session.posargs, env=ENV)


@nox.session
def aveb(session: nox.Session) -> None:
    """AVEB-mini ablations at equal training budget over seeds (docs/results.md): ``nox -s aveb -- --seeds 0 1``."""
    _install_all(session, "matplotlib>=3.8")
    session.run("python", "benchmarks/aveb_ablations.py", *session.posargs, env=ENV)


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks in benchmarks/: each prints ratios against a named peer measured in the same run."""
    _install_all(session)
    for script in sorted(os.listdir("benchmarks")):
        if script.startswith("bench_") and script.endswith(".py"):
            session.run("python", f"benchmarks/{script}", *session.posargs, env=ENV)
